"""What a run folder holds (its file names), the statuses a proposal can have, and finding runs by name."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from ...errors import NotFoundError

#: Where runs land when no results folder is given (relative to the working directory).
DEFAULT_RESULTS_DIR = Path("results")
SEARCH_FILE = "search.yaml"  # the search file as run (its sha256 in run.json)
RUN_FILE = "run.json"  # what produced the run (:class:`~asc_search.search.runfolder.record.RunRecord`)
STUDY_FILE = "study.db"  # the Optuna study (SQLite)
RAY_DIR = "ray"  # Tune's experiment: trial folders with their checkpoints, the searcher's state
TRIALS_FILE = "trials.parquet"  # one row per proposal (:mod:`~asc_search.search.runfolder.trials`)
PLOTS_DIR = "plots"  # the PNG plots of ``asc-search results``
ARTIFACTS_DIR = "artifacts"  # the study's artefacts (its plots) for optuna-dashboard: files named by artifact id


class Status(str, Enum):
    """What became of one proposal (the ``status`` column of trials.parquet, the ``status`` attribute of its Optuna
    trial). A ``str``: compares equal to its value (``Status.COMPLETED == "completed"``)."""

    COMPLETED = "completed"  # trained for all its epochs
    EARLY_STOPPED = "early_stopped"  # stopped by ASHA before its last epoch (Optuna: PRUNED)
    FAILED = "failed"  # crashed (after its retries) or diverged (Optuna: FAIL)
    REJECTED = "rejected_budget"  # over budget: never trained (Optuna: COMPLETE with a positive constraint)
    RUNNING = "running"  # handed to Tune and not finished yet (only while the search runs, or after a kill)
    DISCARDED = "discarded"  # asked but never costed (the driver stopped in between): not a proposal, never listed

    def __str__(self) -> str:
        return self.value


#: The statuses a trials table shows, in display order.
STATUSES: tuple[Status, ...] = (Status.COMPLETED, Status.EARLY_STOPPED, Status.FAILED, Status.REJECTED, Status.RUNNING)
#: Proposals that became Ray trials (and cost worker time).
TRAINED: frozenset[Status] = frozenset({Status.COMPLETED, Status.EARLY_STOPPED, Status.FAILED})
#: Trained trials with a checkpoint of weights to export.
WITH_WEIGHTS: tuple[Status, ...] = (Status.COMPLETED, Status.EARLY_STOPPED)


class RunState(str, Enum):
    """The whole run's state (``status`` in run.json)."""

    RUNNING = "running"  # the driver is running (or was killed: resume it)
    FINISHED = "finished"  # num_samples trials trained
    INTERRUPTED = "interrupted"  # stopped (Ctrl-C) before that: resume it
    STOPPED = "stopped"  # the searcher gave up proposing (see stop_reason in run.json)

    def __str__(self) -> str:
        return self.value


def is_run_dir(path: Path) -> bool:
    """A folder holding a trials table or a study."""
    return path.is_dir() and ((path / TRIALS_FILE).exists() or (path / STUDY_FILE).exists())


def list_runs(results_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the runs under ``results_dir`` (default ``./results``), sorted."""
    root = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if is_run_dir(p))


def resolve_run(run: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of run ``run``: a path to a run folder, or a run name under ``results_dir`` (default
    ``./results``). A run that does not exist raises :class:`NotFoundError` listing the runs that do."""
    root = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    text = os.fspath(run)
    candidates = [Path(text)]
    if not Path(text).is_absolute():
        candidates.append(root / text)
    for candidate in candidates:
        if is_run_dir(candidate):
            return candidate.resolve()
    existing = list_runs(root)
    where = f"under {root}" if root.is_dir() else f"({root} does not exist)"
    listing = ", ".join(existing) if existing else "none"
    for candidate in candidates:
        if candidate.is_dir():
            raise NotFoundError(
                f"{candidate} is not a search run: it holds neither {TRIALS_FILE} nor {STUDY_FILE}; "
                f"runs {where}: {listing}"
            )
    raise NotFoundError(f"no search run named {text!r} {where}; runs there: {listing}")


def study_url(run_dir: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the run's Optuna study; a run without one is a NotFoundError."""
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist: {Path(run_dir)} has no Optuna study (the search never started)")
    return f"sqlite:///{path.resolve()}"
