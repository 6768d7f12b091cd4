"""One driver per run: an exclusive lock on the run folder, taken before anything slow (loading caches, starting
Ray) and held for the driver's life.

The lock is an ``fcntl.flock`` on ``RUN_DIR/.lock``, which records who holds it (pid, host, start time). The kernel
drops a lock when its process ends, however it ends (``kill -9`` too), so a stale ``.lock`` file of a dead driver
never blocks a new one. A second driver on the same run (the same ``--name`` started twice, a Ray job submitted
again, a ``--resume`` while the run still runs) gets :class:`RunInUseError`, naming the holder.

Works wherever ``flock`` does: local disks and NFSv4 shares (on storage without ``flock`` a lock always succeeds).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ...errors import ConfigError, NotFoundError, quote

__all__ = ["LOCK_FILE", "NAME_MAX", "RunInUseError", "RunLock", "check_run_name", "lock_run", "locked_run",
           "run_holder"]

#: The lock file in a run folder (hidden: not part of the run's results).
LOCK_FILE = ".lock"
#: The longest run name (it names a folder).
NAME_MAX = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_run_name(name: str, results_dir: str | os.PathLike[str]) -> None:
    """A run name must be a plain folder name: letters, digits, '.', '_' and '-', at most :data:`NAME_MAX`
    characters (ConfigError naming ``name``)."""
    if len(name) > NAME_MAX:
        raise ConfigError(f"name: at most {NAME_MAX} characters (it names a folder under {results_dir}), got "
                          f"{len(name):,}", params=("name",))
    if not _NAME_RE.match(name):
        raise ConfigError(f"name {quote(name)}: use letters, digits, '.', '_' and '-' only, starting with a letter "
                          f"or digit (it names a folder under {results_dir})", params=("name",))


class RunInUseError(ConfigError):
    """Another live driver holds the run's lock."""


class RunLock:
    """A held run lock; :meth:`release` (or the end of the process) lets the next driver in."""

    def __init__(self, run_dir: Path, fd: int, created: bool, created_parent: bool = False) -> None:
        self.run_dir = run_dir
        self.fd: int | None = fd
        self.created = created  # this driver made the folder (a new run): removed again if it stays empty
        self.created_parent = created_parent  # ... and the results folder above it

    def release(self) -> None:
        """Drop the lock; a new run's folder that holds nothing else is removed (a run that failed before it wrote
        anything leaves nothing behind)."""
        if self.fd is None:
            return
        path = self.run_dir / LOCK_FILE
        with contextlib.suppress(OSError):
            path.unlink()  # while still locked: a driver that opened the old file sees it gone and retries
        if self.created:
            with contextlib.suppress(OSError):
                self.run_dir.rmdir()  # only when empty
                if self.created_parent:
                    self.run_dir.parent.rmdir()
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_holder(run_dir: str | os.PathLike[str]) -> dict | None:
    """Who holds (or last held) the run's lock: ``{"pid", "host", "started_utc"}``, or None."""
    try:
        data = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _in_use(run_dir: Path, name: str) -> RunInUseError:
    holder = run_holder(run_dir) or {}
    for _ in range(20):  # the holder writes who it is just after taking the lock: give it a moment
        if holder.get("pid"):
            break
        time.sleep(0.05)
        holder = run_holder(run_dir) or {}
    who = f"pid {holder.get('pid', '?')}"
    if holder.get("host") and holder.get("host") != socket.gethostname():
        who += f" on {holder['host']}"
    since = f" (started {holder['started_utc']})" if holder.get("started_utc") else ""
    return RunInUseError(f"run {name} is in use by {who}{since}: {run_dir}; wait for that search to end (or stop "
                         "it), or choose another name", params=("name",))


def _try_lock(run_dir: Path) -> int | None:
    """An fd holding the lock on ``run_dir/.lock``, or None when another process holds it."""
    path = run_dir / LOCK_FILE
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:  # the holder removed its (new, empty) folder as it ended
            run_dir.mkdir(exist_ok=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:  # storage without flock: nothing to coordinate with
            return fd
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the holder released and removed the file between our open and our lock: try again
        with contextlib.suppress(FileExistsError):
            run_dir.mkdir()
    return None


def lock_run(run_dir: str | os.PathLike[str], name: str, new: bool) -> RunLock:
    """Take the run's lock (making the folder for a ``new`` run); :class:`RunInUseError` when a live driver holds
    it. A ``new`` run whose folder already holds anything is refused (resume it, or choose another name); a resumed
    run's folder must exist."""
    run_dir = Path(run_dir)
    parent = run_dir.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"results_dir {parent} is a file; expected a folder for the runs", params=("results_dir",))
    created = created_parent = False
    if new:
        try:
            created_parent = not parent.exists()
            parent.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
            created = True
        except FileExistsError:
            if not run_dir.is_dir():
                raise ConfigError(f"{run_dir} exists and is a file; choose another name", params=("name",)) from None
        except OSError as exc:
            raise ConfigError(f"results_dir {parent}: cannot create the run folder there ({exc.strerror})",
                              params=("results_dir",)) from None
    elif not run_dir.is_dir():
        raise NotFoundError(f"{run_dir}: no search run to resume there", params=("name", "results_dir"))
    fd = _try_lock(run_dir)
    if fd is None:
        raise _in_use(run_dir, name)
    stamp = {"pid": os.getpid(), "host": socket.gethostname(),
             "started_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(stamp) + "\n").encode("utf-8"), 0)
    lock = RunLock(run_dir, fd, created, created_parent)
    if new and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        lock.release()
        raise ConfigError(f"{run_dir} already exists: resume that run, or choose another name",
                          params=("resume", "name"))
    return lock


@contextlib.contextmanager
def locked_run(run_dir: str | os.PathLike[str], name: str, new: bool) -> Iterator[RunLock]:
    """:func:`lock_run` for a ``with`` block."""
    lock = lock_run(run_dir, name, new)
    try:
        yield lock
    finally:
        lock.release()
