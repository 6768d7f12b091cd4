"""`asc-search search` through the CLI: bad inputs give one-line errors (exit 2), and a search interrupted with
SIGTERM (`kill PID`, turned into Ctrl-C's SIGINT) or killed outright (SIGKILL to the driver and its local Ray)
finishes with --resume, no trial lost or trained twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from asc_search.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _space(tmp_path, references: bool = False, **search):
    """quick.yaml cut to 4 short trials; ``references``: keep the default reference arms (3 more trials)."""
    raw = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    raw["train"]["epochs"] = 2
    raw["train"]["batch_size"] = 64
    raw["train"]["min_steps"] = 0
    if not references:
        raw["references"] = []
    raw["search"].update({"num_samples": 4, "n_startup_trials": 3, "asha": {"grace_period": 2, "reduction_factor": 2}, **search})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "{cache}"], "--space is required"),
        (["search", "{cache}", "--space", "{tmp}/missing.yaml"], "missing.yaml does not exist"),
        (["search", "{cache}", "--space", "{bad}"], "bad.yaml: search.max_concurrent: must be an integer >= 1, got 0"),
        (["search", "{cache}", "--resume"], "--resume needs --name: the run to resume (a folder under --results-dir)"),
        (["search", "{cache}", "--space", "{space}", "--num-samples", "0"], "--num-samples must be a positive integer"),
        (["search", "{tmp}/nocache", "--space", "{space}", "--name", "x", "--results-dir", "{tmp}/r"], "nocache"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(argv, message, quick_cache, tmp_path, capsys):
    space = _space(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text(space.read_text().replace("max_concurrent: 2", "max_concurrent: 0"))
    args = [a.format(cache=quick_cache, tmp=tmp_path, bad=bad, space=space) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("asc-search search: error: ") and message in err, err
    assert "Traceback" not in err and err.count("\n") == 1


def _second_driver(first, run_dir, *args):
    """Another driver of ``first``'s run, started as soon as ``first`` holds the run's lock (before its caches load
    and Ray starts, so that ``first`` still runs when the second one gets to the lock)."""
    deadline = time.time() + 120
    while not (run_dir / ".lock").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert (run_dir / ".lock").exists(), "the first driver never took the run's lock"
    return _cli(*args)


def _cli(*args, **kw):
    env = {**os.environ, "ASC_SEARCH_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "asc_search", "search", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.slow
def test_interrupt_then_resume_finishes_without_loss_or_repeat(quick_cache, teacher_cache, tmp_path):
    space = _space(tmp_path, asha={"enabled": False})
    common = ["--teacher-cache", teacher_cache, "--name", "run", "--results-dir", tmp_path / "r"]
    proc = _cli(quick_cache, "--space", space, *common)
    seen, deadline = "", time.time() + 240
    try:
        resumed = _second_driver(proc, tmp_path / "r" / "run", quick_cache, *common, "--resume")
        while time.time() < deadline:  # wait until at least one trial has finished, then Ctrl-C
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            if " completed @" in seen:
                break
        assert " completed @" in seen, seen
        _, err2 = resumed.communicate(timeout=120)  # resuming a run that still runs is refused
        assert resumed.returncode == 2 and f"run run is in use by pid {proc.pid}" in err2, err2
        proc.send_signal(signal.SIGTERM)  # `kill PID`: handled as Ctrl-C is (SIGINT), not Ray's C++ abort
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "interrupted: finish it with" in out and "--resume" in out
    run = tmp_path / "r" / "run"
    before = pd.read_parquet(run / "trials.parquet")
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    trained_before = before[before["status"] != "rejected_budget"]
    assert 1 <= (trained_before["status"] == "completed").sum() < 4

    proc = _cli(quick_cache, *common, "--resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    after = pd.read_parquet(run / "trials.parquet")
    trained = after[after["status"] != "rejected_budget"]
    assert len(trained) == 4 and set(trained["status"]) == {"completed"}  # every trial finished, none lost
    assert trained["trial_id"].is_unique and trained["ray_trial_id"].is_unique
    # trials finished before the interrupt kept their results: nothing trained twice
    done_before = before[before["status"] == "completed"].set_index("trial_id")
    again = after.set_index("trial_id").loc[done_before.index]
    assert (again["val_macro_accuracy"] == done_before["val_macro_accuracy"]).all()
    assert (again["ray_trial_id"] == done_before["ray_trial_id"]).all()
    # Tune holds exactly one trial folder per trained proposal
    assert len(list((run / "ray").glob("trial_*"))) == 4
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and len(info["resumed_utc"]) == 1


@pytest.mark.slow
def test_killed_driver_then_resume_finishes_without_loss_or_repeat(quick_cache, teacher_cache, tmp_path):
    """SIGKILL to the driver and its local Ray (the whole process group: no clean-up, no last save), then --resume;
    with the default reference arms, which come first: none is lost, enqueued again or trained twice."""
    space = _space(tmp_path, references=True, asha={"enabled": False})
    common = ["--teacher-cache", teacher_cache, "--name", "run", "--results-dir", tmp_path / "r"]
    proc = _cli(quick_cache, "--space", space, *common, start_new_session=True)
    seen, deadline = "", time.time() + 240
    try:
        # the same run started again while it runs (e.g. a Ray job submitted twice): refused before anything slow,
        # naming the driver that holds it; the running search is not disturbed
        second = _second_driver(proc, tmp_path / "r" / "run", quick_cache, "--space", space, *common)
        while time.time() < deadline and " completed @" not in seen:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert " completed @" in seen, seen
        _, err2 = second.communicate(timeout=120)
        assert second.returncode == 2 and err2.count("\n") == 1, err2
        assert f"error: run run is in use by pid {proc.pid} (started " in err2, err2
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    run = tmp_path / "r" / "run"
    done_before = {
        t.number: t.user_attrs.get("val_macro_accuracy")
        for t in _study(run).get_trials()
        if t.user_attrs.get("status") == "completed"
    }
    assert done_before  # at least one trial had finished when the driver died

    proc = _cli(quick_cache, *common, "--resume")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    after = pd.read_parquet(run / "trials.parquet")
    trained = after[after["status"] != "rejected_budget"]
    assert len(trained) == 7 and set(trained["status"]) == {"completed"}  # 4 sampled + 3 references, none lost
    assert trained["trial_id"].is_unique and trained["ray_trial_id"].is_unique  # none run twice
    refs = trained[trained["kind"] == "reference"]
    assert sorted(refs["reference"]) == ["baseline_ce", "baseline_kd", "baseline_kd_emb"]  # each once
    assert list(refs["trial_id"]) == [0, 1, 2] and (refs["epochs"] == 2).all()
    assert (_study(run).trials_dataframe()["user_attrs_kind"] == "reference").sum() == 3  # not enqueued again
    kept = after.set_index("trial_id").loc[list(done_before)]
    assert list(kept["val_macro_accuracy"]) == list(done_before.values())  # finished ones kept, not retrained
    assert len(list((run / "ray").glob("trial_*"))) == 7
    assert json.loads((run / "run.json").read_text())["status"] == "finished"


def _study(run):
    import optuna

    return optuna.load_study(study_name=None, storage=f"sqlite:///{run / 'study.db'}")


@pytest.mark.slow
def test_two_searches_started_at_once_on_one_machine_both_finish(quick_cache, teacher_cache, tmp_path):
    """Two local searches (different names) at once: two local Ray instances side by side, each with an object store
    sized to its data (not Ray's 30 % of the machine each), both finish with their own runs (issue 13, item 9)."""
    space = _space(tmp_path, num_samples=1, asha={"enabled": False})
    procs = [_cli(quick_cache, "--space", space, "--teacher-cache", teacher_cache, "--name", name,
                  "--results-dir", tmp_path / "r") for name in ("a", "b")]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    for name in ("a", "b"):
        info = json.loads((tmp_path / "r" / name / "run.json").read_text())
        assert info["status"] == "finished" and info["counts"]["completed"] == 1
