"""Each complete trial's model weights, kept as an Optuna artifact beside the study.

The weights go through Optuna's artifacts API into a ``FileSystemArtifactStore``, so
optuna-dashboard lists them on the trial's page (and offers the download) as long as it is
started with the same store; ``python -m search.dashboard`` is. The trial records the artifact
id in its ``model_artifact_id`` user attribute, which is how ``load_model`` finds it again.

Only complete trials keep their weights: a pruned trial stopped because it was bad or
infeasible, so its half-trained weights would only take disk space.

Where the store is: for a SQLite study ``sqlite:///studies/x.db`` it is ``studies/artifacts/``,
the folder beside the database, so a study and its models travel together. Other storages
(PostgreSQL) have no folder of their own: the store is ``--artifacts DIR``, by default
``studies/artifacts``; every worker and the dashboard must be given the same one.

PyTorch is imported only where weights are saved or loaded: the dashboard finds the store
through this module and never loads PyTorch.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial

from search.config import DEFAULTS, STUDIES_DIR, StudyConfig
from search.errors import UserError
from search.study.backends import backend_for

if TYPE_CHECKING:
    import torch


logger = logging.getLogger(__name__)

MODEL_ATTR = "model_artifact_id"  # the trial user attribute that names its weights' artifact
ARTIFACTS_DIR_NAME = "artifacts"


class ArtifactError(UserError):
    """A trial's weights can't be found: one line saying which trial, where we looked, and why."""


def has_model(trial: FrozenTrial) -> bool:
    """Whether the trial stored its trained weights (complete trials of a study that keeps
    them)."""
    return MODEL_ATTR in trial.user_attrs


def artifact_dir(storage_url: str, directory: Path | None = None) -> Path:
    """The folder of a study's artifacts: ``directory`` if given, else beside a SQLite file.

    Args:
        storage_url: the study's SQLAlchemy URL.
        directory: the ``--artifacts`` flag; None derives the folder from the URL.
    """
    if directory is not None:
        return Path(directory)
    beside = backend_for(storage_url).artifact_dir()
    return (STUDIES_DIR if beside is None else beside) / ARTIFACTS_DIR_NAME


def artifact_store(
    storage_url: str, directory: Path | None = None, *, create: bool = False
) -> FileSystemArtifactStore:
    """The artifact store of the study at ``storage_url`` (see ``artifact_dir``).

    Args:
        create: make the folder if it is missing; writers (the study) do, readers don't.
    """
    folder = artifact_dir(storage_url, directory)
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ArtifactError(
                f"--artifacts {folder}: can't create the folder ({error.strerror}); "
                "point --artifacts elsewhere"
            ) from None
    return FileSystemArtifactStore(folder)


def save_model(
    trial: optuna.Trial,
    state_dict: dict[str, torch.Tensor],
    store: FileSystemArtifactStore,
) -> str:
    """Upload a trial's weights as an artifact of the trial; returns the artifact id.

    The tensors are saved from the CPU, so the file loads on any device. The id is also
    recorded in the trial's ``model_artifact_id`` user attribute.
    """
    import torch  # here, not at the top: see the module's docstring

    cpu = {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
    with tempfile.TemporaryDirectory(prefix="wd-search-model-") as folder:
        # The file name is what the dashboard lists and what a download is called.
        path = Path(folder) / f"trial-{trial.number}-model.pt"
        torch.save(cpu, path)
        artifact_id = upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial
        )
    trial.set_user_attr(MODEL_ATTR, artifact_id)
    return artifact_id


def load_state_dict(
    study: optuna.Study, trial_number: int, store: FileSystemArtifactStore
) -> dict[str, torch.Tensor]:
    """The weights trial ``trial_number`` stored, as CPU tensors."""
    import torch  # here, not at the top: see the module's docstring

    trials = study.get_trials(deepcopy=False)
    if not 0 <= trial_number < len(trials):
        raise ArtifactError(
            f"study {study.study_name!r} has no trial {trial_number} "
            f"(it has trials 0 to {len(trials) - 1})"
        )
    trial = trials[trial_number]
    artifact_id = trial.user_attrs.get(MODEL_ATTR)
    if artifact_id is None:
        raise ArtifactError(
            f"trial {trial_number} has no stored model: only complete trials keep their "
            f"weights (this one is {trial.state.name})"
        )
    with tempfile.TemporaryDirectory(prefix="wd-search-model-") as folder:
        path = Path(folder) / "model.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except ArtifactNotFound:
            raise ArtifactError(
                f"trial {trial_number}'s model (artifact {artifact_id}) is missing from the "
                "artifact store: pass the --artifacts folder the study was run with"
            ) from None
        # weights_only: a tensor file, never arbitrary pickled code.
        return torch.load(path, map_location="cpu", weights_only=True)


def load_model(
    study: optuna.Study,
    trial_number: int,
    store: FileSystemArtifactStore,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """Trial ``trial_number``'s trained network, from the weights it stored, on ``device``:
    the network of the task the study stored (the seed's ``SimpleNN`` for MNIST)."""
    from search.study.record import stored_config
    from search.training.train import build_model  # here, not at the top: no torch above

    config = stored_config(study)
    model = build_model(DEFAULTS.task if config is None else config.task)
    model.load_state_dict(load_state_dict(study, trial_number, store))
    return model.to(device)


def load_best(
    study_name: str = DEFAULTS.study_name,
    storage: str | None = None,
    artifacts: Path | str | None = None,
    device: torch.device | str = "cpu",
) -> torch.nn.Module:
    """The study's recommended trial's trained model, in eval mode on ``device``.

    ``storage`` and ``artifacts`` default as the commands' ``--storage`` and ``--artifacts``
    do. The model carries what it is: ``model.config`` (the study's ``StudyConfig``, from the
    settings it stored), ``model.params`` (the trial's parameters, ``weight_decay`` among
    them), ``model.trial_number`` and ``model.val_accuracy``.

    Raises:
        ArtifactError: the study has no recommended trial, or its weights are not stored.
        StudyError: there is no such study.
    """
    from search.study.record import recommended_trial, stored_config, trial_val_accuracy
    from search.study.study import load_existing_study
    from search.training.train import build_model, resolve_device

    study = load_existing_study(study_name, storage)
    trial = recommended_trial(study)
    if trial is None:
        raise ArtifactError(
            f"study {study_name!r} has no recommended trial yet (no feasible complete trial): "
            "run it further, or widen its constraint"
        )
    config = stored_config(study, storage) or StudyConfig(study_name=study_name, storage=storage)
    store = artifact_store(config.storage_url, None if artifacts is None else Path(artifacts))
    model = build_model(config.task)
    model.load_state_dict(load_state_dict(study, trial.number, store))
    model.to(resolve_device(device) if isinstance(device, str) else device).eval()
    # Plain attributes beside the parameters: what a notebook asks the model first.
    setattr(model, "config", config)  # noqa: B010 (nn.Module's typed __setattr__)
    setattr(model, "params", dict(trial.params))  # noqa: B010
    setattr(model, "trial_number", trial.number)  # noqa: B010
    setattr(model, "val_accuracy", trial_val_accuracy(trial))  # noqa: B010
    return model
