"""optuna-dashboard on a run's Optuna study (``asc-search dashboard``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, NotFoundError
from ..search.runfolder import STUDY_FILE, resolve_run, study_url

__all__ = ["study_names", "dashboard_server"]


def study_names(run_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the Optuna studies stored in the run's ``study.db``."""
    import optuna

    url = study_url(run_dir)
    try:
        summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    except Exception as exc:  # SQLAlchemy / Optuna raise many kinds for a file that is not a study database
        raise DataError(f"{Path(run_dir) / STUDY_FILE} is not a readable Optuna study database ({exc})") from None
    return [s.study_name for s in summaries]


def dashboard_server(
    run: str | os.PathLike[str],
    results_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
):
    """A WSGI server (not yet serving) of optuna-dashboard on the run's study; ``port=0`` picks a free port.

    Returns ``(server, url, names)``: call ``server.serve_forever()`` to serve and ``server.shutdown()`` (from
    another thread) then ``server.server_close()`` to stop. A port in use is a ConfigError naming it.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    run_dir = resolve_run(run, results_dir)
    names = study_names(run_dir)
    if not names:
        raise NotFoundError(f"{run_dir / STUDY_FILE} holds no Optuna study yet: run or resume the search first")
    app = optuna_dashboard.wsgi(study_url(run_dir))

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - library code never prints
            return

    class _ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # the dashboard's page loads many files at once

    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot serve the dashboard on {host}:{port} ({exc.strerror or exc}); pick another port", params=("port",)) from None
    url = f"http://{host}:{server.server_port}/dashboard/"
    return server, url, names
