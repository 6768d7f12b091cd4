"""One driver per run (issue 13, items 1 and 7): the run folder's lock is taken before anything slow, a second
driver of the same run is refused naming the holder, a dead holder's lock never blocks, and a results folder that
is a file is one line before Ray starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asc_search.cli import main
from asc_search.errors import ConfigError, NotFoundError
from asc_search.search.runfolder import LOCK_FILE, RunInUseError, lock_run, run_holder

ROOT = Path(__file__).resolve().parents[1]


def _holder(run_dir: Path, new: bool, hold_s: float, start_at: float) -> subprocess.Popen:
    """A separate process that waits until ``start_at``, takes the lock and holds it ``hold_s`` seconds."""
    code = (
        "import sys, time; from asc_search.search.runfolder import lock_run\n"
        f"time.sleep(max(0.0, {start_at} - time.time()))\n"
        "try:\n"
        f"    lock = lock_run({str(run_dir)!r}, 'race', new={new})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc, flush=True); sys.exit(2)\n"
        f"print('locked', flush=True); time.sleep({hold_s}); lock.release()\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_new_run_holds_its_folder_and_leaves_nothing_when_it_ends_empty(tmp_path):
    run = tmp_path / "results" / "r1"
    lock = lock_run(run, "r1", new=True)
    holder = run_holder(run)
    assert run.is_dir() and holder["pid"] == os.getpid() and holder["started_utc"].endswith("Z")
    with pytest.raises(RunInUseError, match=rf"^run r1 is in use by pid {os.getpid()} \(started "):
        lock_run(run, "r1", new=True)  # a second open file description conflicts, even in one process
    with pytest.raises(RunInUseError):
        lock_run(run, "r1", new=False)  # so does a resume
    lock.release()
    assert not run.exists()  # nothing was written into it: nothing left behind


def test_a_new_run_refuses_a_folder_with_a_run_and_resume_needs_one(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="already exists: resume that run, or choose another name"):
        lock_run(run, "r", new=True)
    assert (run / "run.json").exists() and not (run / LOCK_FILE).exists()
    with lock_run(run, "r", new=False):
        assert run_holder(run)["pid"] == os.getpid()
    assert (run / "run.json").exists()  # a resumed run's folder is never removed
    with pytest.raises(NotFoundError, match="no search run to resume there"):
        lock_run(tmp_path / "nothing", "nothing", new=False)


def test_the_lock_of_a_dead_driver_does_not_block(tmp_path):
    run = tmp_path / "r"
    proc = _holder(run, True, 60, 0)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=rf"in use by pid {proc.pid} "):
            lock_run(run, "r", new=False)
    finally:
        proc.kill()  # SIGKILL: no clean-up; the stale .lock file stays
        proc.wait()
    assert json.loads((run / LOCK_FILE).read_text())["pid"] == proc.pid
    with lock_run(run, "r", new=True) as lock:  # an empty folder with a dead driver's lock: a new run may start
        assert run_holder(lock.run_dir)["pid"] == os.getpid()


def test_two_processes_racing_for_one_name_get_one_run(tmp_path):
    run = tmp_path / "results" / "race"
    start = time.time() + 3.0  # both start importing now and take the lock at the same moment
    procs = [_holder(run, True, 4, start) for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(o for o, p in zip(outs, procs) if p.returncode == 2)
    winner = next(p for p in procs if p.returncode == 0)
    assert refused.startswith(f"RunInUseError run race is in use by pid {winner.pid}"), refused


def test_cli_refuses_a_results_dir_that_is_a_file_and_a_long_name_at_once(tmp_path, capsys, monkeypatch):
    from asc_search.search import driver

    def never(*args, **kwargs):
        raise AssertionError("the run must be refused before any data is loaded or Ray starts")

    monkeypatch.setattr(driver, "_load_data", never)
    monkeypatch.setattr(driver, "connect_ray", never)
    space = ROOT / "search_spaces" / "quick.yaml"
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["search", str(tmp_path / "cache"), "--space", str(space), "--results-dir", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"asc-search search: error: --results-dir {afile} is a file; expected a folder"), err
    assert err.count("\n") == 1
    assert main(["search", str(tmp_path / "cache"), "--space", str(space), "--name", "n" * 101,
                 "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--name: at most 100 characters" in err and "letters, digits" not in err, err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_run_json_names_the_search_file_relative_to_a_ray_job_working_dir(tmp_path):
    from asc_search.search.runfolder import space_file_record

    job = tmp_path / "ray" / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    (job / "search_spaces").mkdir(parents=True)
    (job / "search_spaces" / "quick.yaml").write_text("x")
    assert space_file_record(job / "search_spaces" / "quick.yaml") == "search_spaces/quick.yaml"
    mine = tmp_path / "quick.yaml"
    mine.write_text("x")
    assert space_file_record(mine) == str(mine.resolve())
