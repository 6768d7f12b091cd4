"""`asc-search dashboard`: optuna-dashboard served over HTTP on a run's real Optuna SQLite study."""

from __future__ import annotations

import json
import threading
import urllib.request

import pytest

from asc_search.cli import main
from asc_search.errors import NotFoundError
from asc_search.results.dashboard import dashboard_server
from asc_search.search.runfolder import load_trials


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=20) as resp:  # noqa: S310 - 127.0.0.1 only
        assert resp.status == 200
        return resp.read()


def test_dashboard_serves_the_runs_study(fake_run):
    run = fake_run(name="dash", n=30, study=True)
    n_completed = int((load_trials(run)["status"] == "completed").sum())
    server, url, names = dashboard_server("dash", results_dir=run.parent, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert url.startswith("http://127.0.0.1:") and names == ["dash"]
        base = url.rsplit("/dashboard/", 1)[0]
        studies = json.loads(_get(base + "/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in studies] == ["dash"]
        detail = json.loads(_get(f"{base}/api/studies/{studies[0]['study_id']}"))
        assert len(detail["trials"]) == n_completed
        assert {t["state"] for t in detail["trials"]} == {"Complete"}
        assert b"<html" in _get(url).lower()  # the single-page app itself
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_dashboard_needs_a_study(fake_run, capsys):
    run = fake_run(name="nostudy", n=5)  # trials.parquet but no study.db
    with pytest.raises(NotFoundError, match="study.db does not exist"):
        dashboard_server(run, port=0)
    assert main(["dashboard", "missing", "--results-dir", str(run.parent), "--port", "0"]) == 2
    assert "no search run named 'missing'" in capsys.readouterr().err


@pytest.mark.slow
def test_dashboard_on_a_real_search_run(tiny_search_run):
    """What the browser fetches from `asc-search dashboard` on a real run: every proposal, the rejected ones marked
    infeasible as the dashboard reads it, the named objective, the leaderboard note, the plot artefacts and the
    importance over trained trials."""
    import optuna

    from asc_search.results.importance import trained_importances
    from asc_search.results.plots import PLOT_FILES

    trials = load_trials(tiny_search_run)
    assert (trials["status"] == "rejected_budget").any() and (trials["status"] == "completed").any()
    server, url, names = dashboard_server(tiny_search_run, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = url.rsplit("/dashboard/", 1)[0]
        assert json.loads(_get(base + "/api/meta"))["artifact_is_available"] is True
        studies = json.loads(_get(base + "/api/studies"))["study_summaries"]
        assert [s["study_name"] for s in studies] == names == ["tiny"]
        sid = studies[0]["study_id"]
        detail = json.loads(_get(f"{base}/api/studies/{sid}"))
        assert detail["objective_names"] == ["val_macro_accuracy"]
        # every proposal is an Optuna trial: the rejected ones too (told with their constraint values)
        assert sorted(t["number"] for t in detail["trials"]) == sorted(int(i) for i in trials["trial_id"])
        served = {t["number"]: t for t in detail["trials"]}
        for _, row in trials.iterrows():
            t = served[int(row["trial_id"])]
            expected = {"completed": "Complete", "rejected_budget": "Complete", "early_stopped": "Pruned",
                        "failed": "Fail"}[row["status"]]
            assert t["state"] == expected, row["trial_id"]
            # the trial table tells them apart by the status user attribute ...
            assert {a["key"]: a["value"] for a in t["user_attrs"]}["status"] == row["status"]
            # ... and the dashboard calls a trial infeasible when one of its "constraints" is > 0
            assert len(t["constraints"]) == 2
            assert any(c > 0 for c in t["constraints"]) == (row["status"] == "rejected_budget"), row["trial_id"]
        # the study note holds the leaderboard with the distillation weights, and links the plots
        note = detail["note"]["body"]
        best = trials[trials["status"] == "completed"].sort_values("val_macro_accuracy", ascending=False).iloc[0]
        assert "### Leaderboard" in note and f"| 1 | {best['trial_id']} |" in note
        assert f"{best['val_macro_accuracy']:.4f}" in note and "| kd_weight |" in note and "Search ended" in note
        assert sorted(a["filename"] for a in detail["artifacts"]) == sorted(PLOT_FILES.values())
        for art in detail["artifacts"]:
            assert f"](/artifacts/{sid}/{art['artifact_id']})" in note
            assert _get(f"{base}/artifacts/{sid}/{art['artifact_id']}")[:8] == b"\x89PNG\r\n\x1a\n"
        # the importance panel counts the trained trials only
        importances = json.loads(_get(f"{base}/api/studies/{sid}/param_importances"))
        study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tiny_search_run / 'study.db'}")
        assert importances == {"param_importances": trained_importances(study)}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_cli_dashboard_serves_until_terminated(fake_run):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    run = fake_run(name="cli", n=20, study=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "asc_search", "dashboard", str(run), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 60
        studies = None
        while time.time() < deadline and studies is None:
            try:
                studies = json.loads(_get(f"http://127.0.0.1:{port}/api/studies"))["study_summaries"]
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.3)
        assert studies is not None and [s["study_name"] for s in studies] == ["cli"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"http://127.0.0.1:{port}/dashboard/" in out and "dashboard stopped" in out
    assert f"ssh -N -L {port}:127.0.0.1:{port}" in out  # how to reach it from another machine, safely
