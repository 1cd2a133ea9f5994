"""Storage URL -> Optuna study: storage, sampler, pruner, budget, resume, best feasible trial.

The study database is the source of truth: a study records the settings it was created with,
and a resumed study must agree with them, or its trials would not be comparable.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial
from optuna_dashboard import save_note

from search.budget import FINISHED, WAIT_POLL_S, BudgetGate, ClaimLock, connect_only
from search.config import StudyConfig
from search.errors import UserError
from search.train import derive_seed

logger = logging.getLogger(__name__)


# Median pruning: wait for this many complete trials before pruning anything, and never judge a
# trial on its first epochs, where a strongly regularised trial that learns slowly but ends well
# would look worse than the trials that finished. The warm-up is 30% of a trial's epochs and at
# least 3 epochs: 3 of the seed's 10, 90 of a 300-epoch run on the small synthetic table.
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_EPOCHS = 3
MEDIAN_WARMUP_FRACTION = 0.3

# SQLite waits this long for a lock instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60

# A PostgreSQL host that doesn't answer fails the command after this long, not the OS's minutes.
CONNECT_TIMEOUT_S = 10
# Connections one process's storage may hold: the trial loop and the heartbeat thread use one
# each, the overflow is headroom for a moment of overlap (README, "Many workers").
POOL_SIZE = 2
POOL_OVERFLOW = 2
# A trial whose heartbeat went stale is tried again with its parameters at most this often:
# parameters that kill their worker every time (out of memory, say) must not loop forever.
STALE_TRIAL_MAX_RETRY = 3


class StudyError(UserError):
    """The storage or the study can't be used as asked: one line saying why and what to do."""

    exit_code = 2  # a bad --storage or --study-name is a usage error


class StorageError(UserError):
    """The study's database failed while a command used it (stopped, unreachable, read-only)."""


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``, for every message a user sees."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def make_sampler(config: StudyConfig, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """Samplers see feasibility through ``trial.set_constraint``; no ``constraints_func``.

    A new study's sampler is seeded with the study seed. A resumed one is seeded with
    (study seed, trials so far): seeded alike, it would propose again the very values the
    interrupted run began with.
    """
    seed = config.seed if trials_so_far == 0 else derive_seed(config.seed, trials_so_far)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {config.sampler!r}")


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        warmup = max(MEDIAN_WARMUP_EPOCHS, int(MEDIAN_WARMUP_FRACTION * config.epochs))
        # Steps are epochs from 1; the pruner judges a step when step >= n_warmup_steps.
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=warmup + 1
        )
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
    if config.pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {config.pruner!r}")


def make_storage(
    url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> RDBStorage:
    """An RDB storage for ``url``, or a StudyError naming the (masked) URL and the problem.

    SQLite gets a busy timeout on every connection and write-ahead logging, so a few local
    workers, and optuna-dashboard reading the file, never fail with "database is locked";
    PostgreSQL gets a connect timeout and a small pool per process. With
    ``heartbeat_interval``, a running trial records a heartbeat that often, and one whose
    heartbeat is older than ``grace_period`` seconds (its worker died) is failed by the next
    worker or run and its parameters are tried again.
    """
    if url.startswith("sqlite"):
        parsed = sqlalchemy.engine.make_url(url)
        database = None if parsed.query.get("uri") else parsed.database  # file:...?mode=ro
        if database and database != ":memory:" and not Path(database).parent.is_dir():
            raise StudyError(
                f"--storage {masked(url)}: directory {Path(database).parent} does not exist; "
                "create it or point --storage elsewhere"
            )
    try:
        engine_kwargs = engine_options(url)
        refuse_foreign_database(url, engine_kwargs)
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", ExperimentalWarning)
            heartbeat: dict[str, Any] = {}
            if heartbeat_interval is not None:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period,
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(
                        max_retry=STALE_TRIAL_MAX_RETRY
                    ),
                }
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, RuntimeError) as error:
        raise StudyError(
            f"--storage {masked(url)}: {describe_storage_error(error, url)}"
        ) from None
    if url.startswith("sqlite"):
        use_write_ahead_log(storage.engine)
    return storage


def open_storage(config: StudyConfig) -> RDBStorage:
    """The storage a worker runs trials on: ``make_storage`` with the config's heartbeat."""
    return make_storage(
        config.storage_url,
        heartbeat_interval=config.heartbeat_interval,
        grace_period=config.grace_period,
    )


def engine_options(url: str) -> dict[str, Any]:
    """SQLAlchemy engine options for ``url``'s database (see ``make_storage``)."""
    parsed = sqlalchemy.engine.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    options: dict[str, Any] = {
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_OVERFLOW,
        # A connection the server dropped (a restart) is replaced, not used and failed.
        "pool_pre_ping": True,
    }
    if backend == "postgresql":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "wd-search"}
        options["connect_args"] = {k: v for k, v in connect_args.items() if k not in parsed.query}
    return options


def refuse_foreign_database(url: str, engine_kwargs: dict[str, Any]) -> None:
    """Refuse a database that holds tables but no Optuna study, before writing anything to it.

    Optuna adds its tables to whatever database it is pointed at; a mistyped --storage would
    fill someone else's database with them.
    """
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite" and (
        parsed.database in (None, "", ":memory:") or not Path(parsed.database).exists()
    ):
        return
    options = connect_only(engine_kwargs)
    engine = sqlalchemy.create_engine(parsed, poolclass=sqlalchemy.NullPool, **options)
    try:
        tables = sorted(sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    if tables and "version_info" not in tables:
        shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
        raise StudyError(
            f"--storage {masked(url)}: this database holds other tables ({shown}) and no "
            "Optuna study; point --storage at a new database or a study's own"
        )


def use_write_ahead_log(engine: sqlalchemy.Engine) -> None:
    """Switch a SQLite file to write-ahead logging, where readers and the writer don't block.

    In SQLite's default mode a reader (optuna-dashboard polling the study) holds the file
    against the workers' writes. The mode is stored in the file, so once is enough; a file
    only read (a read-only copy) stays as it is.
    """
    try:
        with engine.connect() as connection:
            # The pragma answers with the mode now in force: read, or it may not take effect.
            mode = connection.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
    except sqlalchemy.exc.OperationalError as error:
        mode = first_line(error)
    if mode != "wal":
        logger.debug("SQLite's journal mode stays as it was: %s", mode)
    engine.dispose()  # connections opened before the switch report the old mode; start afresh


def describe_storage_error(error: BaseException, url: str) -> str:
    """One line for a storage failure: the database's own words, what it means, what to do."""
    cause = storage_cause(error) or error
    origin = getattr(cause, "orig", None)
    text = first_line(origin if isinstance(origin, BaseException) else cause)
    text = text.removeprefix("(sqlite3.OperationalError) ").removeprefix(
        "(sqlite3.DatabaseError) "
    )
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        parsed = None
    if parsed is not None and parsed.password:
        text = text.replace(str(parsed.password), "***")
    database = parsed.database if parsed is not None else None
    lowered = text.lower()
    if "readonly" in lowered or "read-only" in lowered:
        return f"{text}: the database is read-only here; point --storage at a writable location"
    if "file is not a database" in lowered:
        return f"{database} is not a SQLite database; point --storage at a study's .db file"
    if "unable to open database file" in lowered:
        return f"can't open or create {database}: check that its directory is writable"
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            f"{text}: check the user and password (kept out of the URL, in ~/.pgpass or "
            "PGPASSWORD, they stay out of shell histories and process lists)"
        )
    if f'database "{database}" does not exist' in text:
        return f"{text}: create it first (README: Many workers)"
    if any(words in lowered for words in UNREACHABLE):
        return (
            f"{text}: the database can't be reached; check that it is running and reachable, "
            "then run the same command again (finished trials are kept)"
        )
    return text


# What drivers say when the server is down, going down, or not answering (psycopg, psycopg2).
UNREACHABLE = (
    "connection failed", "could not connect", "connection refused", "timeout expired",
    "could not translate host name", "failed to resolve host", "server closed the connection",
    "shutting down",
    "terminating connection", "connection already closed", "connection is closed",
    "consuming input failed", "no route to host",
)  # fmt: skip


def storage_cause(error: BaseException) -> BaseException | None:
    """The database error behind ``error``, if any: Optuna wraps it, or raises another
    exception while handling it."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.SQLAlchemyError):
            return seen
        if isinstance(seen, StorageInternalError) and seen.__cause__ is not None:
            return seen.__cause__
        context = None if seen.__suppress_context__ else seen.__context__
        seen = seen.__cause__ or context
    return None


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a database failure inside the block into one line naming the (masked) storage.

    Every trial is committed as it finishes, so what such a failure loses is the trial in
    flight only; the message says how to carry on. Optuna's heartbeat thread may meet a
    failure first and would print a traceback; it gets one warning line instead, and the
    main thread reports a database that is gone when it next uses it.
    """
    thread_hook = threading.excepthook

    def quiet_storage_failures(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None and storage_cause(args.exc_value) is not None:
            logger.warning(
                "a running trial's heartbeats stopped (%s); past the grace period another "
                "worker may judge the trial dead",
                describe_storage_error(args.exc_value, url),
            )
        else:
            thread_hook(args)

    threading.excepthook = quiet_storage_failures
    try:
        yield
    except Exception as error:
        if isinstance(error, UserError) or storage_cause(error) is None:
            raise
        raise StorageError(
            f"--storage {masked(url)}: {describe_storage_error(error, url)}"
        ) from None
    finally:
        threading.excepthook = thread_hook


def first_line(error: BaseException) -> str:
    """The first line of an exception's message: SQLAlchemy's run to many."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_existing_study(study_name: str, storage: str | None) -> optuna.Study:
    """An existing study, for the commands that only read one; never creates a database.

    Args:
        storage: the URL, or None for the default SQLite file of ``study_name``.
    """
    url = storage or StudyConfig(study_name=study_name).storage_url
    database = sqlalchemy.engine.make_url(url).database if url.startswith("sqlite") else None
    if database and database != ":memory:" and not Path(database).is_file():
        raise StudyError(
            f"no study database at {database}: run `python -m search.run --study-name "
            f"{study_name}` first, or pass the study's --storage"
        )
    rdb = make_storage(url)
    names = [s.study_name for s in rdb.get_all_studies()]
    if study_name not in names:
        raise StudyError(
            f"no study named {study_name!r} in {masked(url)} (it holds: "
            f"{', '.join(names) or 'none'}): pass --study-name"
        )
    return optuna.load_study(study_name=study_name, storage=rdb)


def find_study(storage: RDBStorage, config: StudyConfig) -> optuna.Study | None:
    """The existing study of this name, checked against ``config``; None if there is none."""
    names = [s.study_name for s in storage.get_all_studies()]
    if config.study_name not in names:
        return None
    trials_so_far = storage.get_n_trials(storage.get_study_id_from_name(config.study_name))
    study = optuna.load_study(
        study_name=config.study_name,
        storage=storage,
        sampler=make_sampler(config, trials_so_far),
        pruner=make_pruner(config),
    )
    if study.directions != [StudyDirection.MAXIMIZE]:
        raise StudyError(
            f"study {config.study_name!r} in {masked(config.storage_url)} is not a single "
            "maximized objective (this search maximizes validation accuracy); "
            "choose another --study-name"
        )
    recorded = study.user_attrs.get("config", {})
    for key, value in config.recorded().items():
        if key in recorded and recorded[key] != value:
            flag = "--" + key.replace("_", "-")
            raise StudyError(
                f"study {config.study_name!r} was created with {flag} {recorded[key]}, got "
                f"{value}: resume it with its own settings or choose another --study-name"
            )
    return study


def create_study(
    storage: RDBStorage, config: StudyConfig, study_attrs: dict[str, Any]
) -> optuna.Study:
    """A new study that records ``config`` and ``study_attrs`` (data checksums and the like)."""
    # load_if_exists: another worker may have created it since find_study looked.
    study = optuna.create_study(
        storage=storage,
        study_name=config.study_name,
        direction="maximize",
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if "config" not in study.user_attrs:
        study.set_user_attr("config", config.recorded())
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and still there
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(["val_accuracy"])  # the dashboard's axis, not "Objective 0"
        for key, value in study_attrs.items():
            study.set_user_attr(key, value)
    return study


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def best_feasible_trial(study: optuna.Study) -> FrozenTrial | None:
    """The complete, feasible trial with the highest validation accuracy, if any.

    Optuna's ``study.best_trial`` already skips infeasible trials; this only turns its
    "nothing yet" errors into None.
    """
    try:
        return study.best_trial
    except ValueError:
        return None


def record_best_feasible(study: optuna.Study) -> None:
    """Store the best feasible trial on the study, where export, report and dashboard read it.

    optuna-dashboard's Best Trial card ignores feasibility, so the study's note (shown at the
    top of its page) names the best feasible trial too.
    """
    best = best_feasible_trial(study)
    if (
        best is None
        or study.user_attrs.get("best_feasible_trial", {}).get("number") == best.number
    ):
        return
    summary = {
        "number": best.number,
        "weight_decay": best.params["weight_decay"],
        "val_accuracy": best.user_attrs.get("val_accuracy"),
        "train_accuracy": best.user_attrs.get("train_accuracy"),
    }
    study.set_user_attr("best_feasible_trial", summary)
    save_note(study, best_feasible_note(study, summary))


def best_feasible_note(study: optuna.Study, summary: dict[str, Any]) -> str:
    limit = study.user_attrs.get("config", {}).get("max_train_acc")
    return (
        f"## Best feasible trial: #{summary['number']}\n\n"
        f"weight_decay = {summary['weight_decay']:.3g}, "
        f"validation accuracy = {summary['val_accuracy']:.4f}, "
        f"training accuracy = {summary['train_accuracy']:.4f} (limit {limit}).\n\n"
        "The Best Trial card does not know about the constraint; this note does. "
        "A trial's `feasible` user attribute and its constraint value "
        "(training accuracy minus the limit, feasible when <= 0) are on its page."
    )


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    config: StudyConfig,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
) -> int:
    """Run trials until the study holds ``config.trials`` finished ones; returns how many ran.

    The budget is the study's, not this process's: a re-run resumes and runs only what is
    missing, and workers on one study (``--workers``, or the same command on other machines)
    share it exactly (``search.budget``). A worker with nothing left to start waits for the
    others' running trials and takes over from one that fails or whose worker dies.
    """
    for name in ("optuna.study._optimize", "optuna.storages._rdb.storage"):
        logging.getLogger(name).addFilter(REPEATED_ERROR_LOGS)
    lock = ClaimLock(config.storage_url, config.study_name, engine_options(config.storage_url))
    gate = BudgetGate(study, config.trials, lock, stuck_after=2 * config.grace_period)
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    ran = 0

    def count(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal ran
        ran += 1

    with gate:
        while not gate.met():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            if not gate.claim():
                time.sleep(WAIT_POLL_S)  # the others' running trials hold the rest
                continue
            study.optimize(
                gate.admit(objective),
                timeout=left,
                callbacks=[
                    lambda study, trial: record_best_feasible(study),
                    count,
                    *(callbacks or []),
                    gate.claim_next,  # last: it leaves the lock held for Optuna's next ask
                ],
                catch=(),
            )
    return ran


class RepeatedErrorLogs(logging.Filter):
    """Drops Optuna's warnings about an error that ends the run and is reported anyway.

    With ``catch=()`` the error that failed a trial ends the run, reported as one line (a
    stop, a lost database) or as its traceback (anything else): ``study.optimize``'s "Trial N
    failed" warning would only repeat it, with a second traceback. The storage's "Caught an
    error from sqlalchemy ... Falling back" warning, many lines of SQL, comes first when the
    database goes away; its fallback then fails and is reported in one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        failed_trial = message.startswith("Trial ") and " failed " in message
        return not (failed_trial or message.startswith("Caught an error from sqlalchemy"))


REPEATED_ERROR_LOGS = RepeatedErrorLogs()
