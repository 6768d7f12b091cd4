"""Joining a Ray cluster by address (issue 13, items 2 and 3): an address where nothing listens fails at once with
one line (Ray itself retries for ~12 minutes), a token at hand switches Ray 2.60's token authentication on for the
joining process, and a refused join says what actually helps."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from asc_search import _runtime
from asc_search._runtime import TOKEN_HINT, check_reachable, connect_ray
from asc_search.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_an_address_where_nothing_listens_fails_at_once():
    port = _closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConfigError, match=rf"^address {address}: nothing answers at 127\.0\.0\.1:{port} "):
            check_reachable(address)
    with socket.socket() as server:  # something listening: accepted
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")
    for address in ("local", "not-an-address", "http://127.0.0.1:8265"):
        check_reachable(address)  # left to Ray


def test_a_refused_join_is_tried_again_in_token_mode_when_a_token_is_at_hand(tmp_path, monkeypatch):
    import ray

    token = tmp_path / "token"
    token.write_text("x" * 32)
    modes = []

    def fake_init(address, **kwargs):
        modes.append(os.environ.get("RAY_AUTH_MODE"))
        raise ray.exceptions.AuthenticationError("Authentication failed: token mismatch")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.setattr(_runtime, "check_reachable", lambda target: None)
    # token mode through monkeypatch: the real switch also refreshes Ray's process-wide configuration, which would
    # stay in token mode for the Ray clusters later tests start
    monkeypatch.setattr(_runtime, "_enable_token_auth", lambda: monkeypatch.setenv("RAY_AUTH_MODE", "token"))
    with pytest.raises(ConfigError) as err:
        connect_ray("10.0.0.5:6379")
    # plain first (a cluster without authentication breaks later for a driver in token mode), then with the token
    # (ray.init leaves token mode off for an explicit address, even with a token file)
    assert modes == [None, "token"]
    message = str(err.value)
    assert message.startswith("address 10.0.0.5:6379: the Ray cluster refused this process's token") and message.endswith(TOKEN_HINT)
    assert "export RAY_AUTH_MODE=token" in message and len(message) < 700
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # an explicit choice is respected: one try
    modes.clear()
    with pytest.raises(ConfigError):
        connect_ray("10.0.0.5:6379")
    assert modes == ["disabled"]


@pytest.mark.timeout(180)
def test_search_by_an_address_where_nothing_listens_is_one_line(quick_cache, teacher_cache, tmp_path):
    port = _closed_port()
    done = subprocess.run(
        [sys.executable, "-m", "asc_search", "search", str(quick_cache), "--space", "quick", "--teacher-cache",
         str(teacher_cache), "--name", "x", "--results-dir", str(tmp_path / "r"), "--address", f"127.0.0.1:{port}"],
        capture_output=True, text=True, cwd=ROOT, timeout=170, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()  # progress lines ("loading the feature cache ..."), then the one error line
    assert lines[-1].startswith(f"asc-search search: error: --address 127.0.0.1:{port}: nothing answers at ")
    assert sum("error" in line for line in lines) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()  # nothing left behind


def test_a_local_ray_gets_an_object_store_sized_to_its_data_not_to_the_machine(monkeypatch):
    import ray

    from asc_search._runtime import local_object_store_bytes

    gib = 2**30
    assert local_object_store_bytes(0, total_memory=24 * gib) == 256 * 2**20  # tiny data: the floor
    assert local_object_store_bytes(gib, total_memory=24 * gib) == 3 * gib + 256 * 2**20  # room for it 3 times over
    assert local_object_store_bytes(8 * gib, total_memory=24 * gib) == int(0.3 * 24 * gib)  # never past Ray's share
    seen = []
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(kw))
    assert connect_ray(None, local_store_bytes=300 * 2**20) is True
    assert seen[-1]["object_store_memory"] == 300 * 2**20 and seen[-1]["address"] == "local"


def test_steady_cwd_outlives_the_folder_it_left_being_replaced_or_removed(tmp_path, monkeypatch):
    """A Ray job's working folder can be deleted and unpacked again under its driver (issue 13, `ray job submit`
    on two nodes of one machine): the block runs elsewhere and comes back to the new copy by its path."""
    from asc_search._runtime import steady_cwd

    job, run = tmp_path / "job", tmp_path / "run"
    job.mkdir()
    run.mkdir()
    monkeypatch.chdir(job)
    with steady_cwd(run):
        assert os.getcwd() == str(run)
        job.rmdir()
        job.mkdir()  # the same path, a new folder: a process left in the old one could no longer call os.getcwd()
    assert os.getcwd() == str(job) and os.stat(".").st_ino == job.stat().st_ino
    with steady_cwd(run):
        job.rmdir()  # gone for good: stay in the block's folder rather than in a deleted one
    assert os.getcwd() == str(run)
    gone = tmp_path / "gone"
    gone.mkdir()
    os.chdir(gone)
    gone.rmdir()
    with steady_cwd(run):  # entered from a folder already deleted
        assert os.getcwd() == str(run)
    assert os.getcwd() == str(run)
