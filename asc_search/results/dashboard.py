"""optuna-dashboard on a run's Optuna study (``asc-search dashboard``).

The dashboard is optuna-dashboard's own WSGI app on the run's study, with two additions:

* the run's artefact store (``RUN/artifacts/``, the plots :func:`~asc_search.results.views.publish_views` lists in
  the study) is served, so the study page shows the plots and the note's images load;
* its Hyperparameter Importance panel (``GET /api/studies/<id>/param_importances``) is answered over trained trials
  only (:func:`~asc_search.results.importance.trained_importances`): optuna-dashboard cannot be told to leave out
  the rejected proposals, whose placeholder scores would otherwise rank what predicts being over budget.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ConfigError, DataError, NotFoundError
from ..search.runfolder import STUDY_FILE, resolve_run, study_url

__all__ = ["study_names", "dashboard_app", "dashboard_server"]

_IMPORTANCE_PATH = re.compile(r"^/api/studies/(\d+)/param_importances/?$")


def study_names(run_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the Optuna studies stored in the run's ``study.db``."""
    import optuna

    url = study_url(run_dir)
    try:
        summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    except Exception as exc:  # SQLAlchemy / Optuna raise many kinds for a file that is not a study database
        raise DataError(f"{Path(run_dir) / STUDY_FILE} is not a readable Optuna study database ({exc})") from None
    return [s.study_name for s in summaries]


class _TrainedImportance:
    """WSGI middleware: answers the importance route over trained trials; everything else goes to the dashboard.
    Results are cached per study until its number of finished trials changes (the page polls)."""

    def __init__(self, app: Callable, storage: Any) -> None:
        self.app, self.storage = app, storage
        self._cache: dict[int, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = _IMPORTANCE_PATH.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD", "GET") != "GET":
            return self.app(environ, start_response)
        status, body = self._importances(int(match.group(1)))
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _importances(self, study_id: int) -> tuple[str, bytes]:
        import optuna
        from optuna.trial import TrialState

        from .importance import trained_importances

        try:
            name = self.storage.get_study_name_from_id(study_id)
        except KeyError:
            return "404 Not Found", json.dumps({"reason": f"study_id={study_id} is not found"}).encode()
        study = optuna.load_study(study_name=name, storage=self.storage)
        finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        with self._lock:
            cached = self._cache.get(study_id)
            if cached is None or cached[0] != finished:
                try:
                    body = json.dumps({"param_importances": trained_importances(study)}).encode()
                except ValueError as exc:  # as the dashboard: a study the evaluator cannot score
                    return "400 Bad Request", json.dumps({"reason": f"cannot compute importances ({exc})"}).encode()
                self._cache[study_id] = cached = (finished, body)
        return "200 OK", cached[1]


def dashboard_app(run_dir: str | os.PathLike[str]) -> Callable:
    """The WSGI app: optuna-dashboard on the run's study with its artefact store and the trained-trials importance."""
    import optuna
    import optuna_dashboard

    from .views import artifact_store

    # as optuna-dashboard opens a URL: a reader's storage never creates or migrates tables
    storage = optuna.storages.RDBStorage(study_url(run_dir), skip_compatibility_check=True, skip_table_creation=True)
    return _TrainedImportance(optuna_dashboard.wsgi(storage, artifact_store=artifact_store(run_dir)), storage)


def dashboard_server(
    run: str | os.PathLike[str],
    results_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
):
    """A WSGI server (not yet serving) of :func:`dashboard_app` on the run's study; ``port=0`` picks a free port.

    Returns ``(server, url, names)``: call ``server.serve_forever()`` to serve and ``server.shutdown()`` (from
    another thread) then ``server.server_close()`` to stop. A port in use is a ConfigError naming it.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    run_dir = resolve_run(run, results_dir)
    names = study_names(run_dir)
    if not names:
        raise NotFoundError(f"{run_dir / STUDY_FILE} holds no Optuna study yet: run or resume the search first")
    app = dashboard_app(run_dir)

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
