"""``python -m search.dashboard``: optuna-dashboard on a study, with its trials' model weights.

    python -m search.dashboard --study-name mnist-weight-decay

The same as ``optuna-dashboard sqlite:///studies/mnist-weight-decay.db --artifact-dir
studies/artifacts``, except that it first checks that the storage exists and holds the study
(the plain command would create an empty database on a typo), finds the study's artifact
folder itself, binds to 127.0.0.1 unless told otherwise, and prints the study's own URL.

The dashboard has no login and can delete studies: anyone who reaches its port can.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socketserver
import sys
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search.cli import Parser, add_flags, run_command, storage_url
from search.errors import UserError
from search.flag_values import port

if TYPE_CHECKING:
    from optuna.artifacts import FileSystemArtifactStore
    from optuna.storages import BaseStorage

# The study's libraries (Optuna, SQLAlchemy, pandas, matplotlib) are imported where they are used,
# after the flags are parsed: --help and a flag error answer at once.

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class DashboardError(UserError):
    """The dashboard can't listen where asked: one line naming the address and the fix."""

    exit_code = 2


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request: the dashboard's page fetches several API routes at once.

    optuna-dashboard's own command serves the same way (wsgiref, threaded).
    """

    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    """Requests go to the debug log, not stderr: the page polls every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


def make_dashboard_server(
    storage: BaseStorage, host: str, port: int, store: FileSystemArtifactStore
) -> WSGIServer:
    """optuna-dashboard's WSGI app on ``storage``, bound to ``host:port`` but not serving.

    Binding first means a busy port is a one-line error before any URL is printed, and port 0
    picks a free one (``server.server_port`` says which).
    """
    import optuna_dashboard

    app = optuna_dashboard.wsgi(storage, artifact_store=store)
    try:
        return make_server(
            host, port, app, server_class=ThreadingServer, handler_class=QuietHandler
        )
    except OSError as error:
        raise DashboardError(
            f"--host {host} --port {port}: can't listen there ({error.strerror or error}); "
            "pick another --port, or --port 0 for any free one"
        ) from None


def study_url(host: str, port: int, study_id: int) -> str:
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address needs brackets in a URL
    return f"http://{shown}:{port}/dashboard/studies/{study_id}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m search.dashboard",
        description="Start optuna-dashboard on the study: every trial with its constraint, "
        "per-epoch curves and model weights.",
    )
    add_flags(parser, "--study-name", "--storage", "--artifacts")
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on; the dashboard has no login, so keep it local unless the "
        "network is trusted (default: %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        metavar="N",
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    url = storage_url(args)
    from search.study.artifacts import artifact_store
    from search.study.storage import make_storage, masked
    from search.study.study import load_existing_study

    study = load_existing_study(args.study_name, url)
    storage = make_storage(url)
    server = make_dashboard_server(
        storage, args.host, args.port, artifact_store(url, args.artifacts)
    )
    if not is_loopback(args.host):
        print(
            f"note: listening on {args.host}: the dashboard has no login, and anyone who "
            "reaches this port can read, change and delete the study",
            file=sys.stderr,
        )
    study_id = storage.get_study_id_from_name(study.study_name)
    print(f"study {study.study_name!r} in {masked(url)}", flush=True)
    print(f"dashboard: {study_url(args.host, server.server_port, study_id)}", flush=True)
    print("Ctrl-C stops it", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    run_command(main)
