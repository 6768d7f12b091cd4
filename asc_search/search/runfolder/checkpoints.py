"""Trial checkpoints in a run's Tune experiment, ``RUN/ray/trial_<trial_id>_<ray_trial_id>/checkpoint_<k>/``::

    best.pt      the best validation epoch so far: {"best_state": state dict, "best_epoch", "best_metrics",
                 "student_config"}; tensors and plain values only (loads with ``torch.load(weights_only=True)``)
    resume.pt    everything :func:`asc_search.training.fit` needs to continue exactly (``start_state``)
    trial.json   {"trial_id": Optuna trial number, "ray_trial_id": Tune's id, "epoch": epochs done}

The ``trial.json`` marker names the trial whatever Tune calls its folders; a trial's checkpoint is the newest one
(highest ``k``) of the Ray trial the study records for it (a proposal re-issued after a killed driver runs under a
new Ray trial id, and its old folder may hold checkpoints too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ...errors import DataError, NotFoundError
from .layout import RAY_DIR

BEST_FILE = "best.pt"
RESUME_FILE = "resume.pt"
TRIAL_MARKER = "trial.json"
#: The marker key runs written before trial ids had one name used for the Optuna trial number.
_LEGACY_MARKER_KEY = "optuna_trial"


class Checkpoint(NamedTuple):
    """One checkpoint folder found on disk."""

    trial_id: int
    ray_trial_id: str | None
    index: int  # Tune's checkpoint number (the ``k`` of checkpoint_<k>)
    path: str  # relative to the run folder


def trial_dirname(trial_id: Any, ray_trial_id: str) -> str:
    """The folder Tune gives a trial: ``trial_<trial_id>_<ray_trial_id>`` (short, and names the Optuna trial)."""
    return f"trial_{trial_id}_{ray_trial_id}"


def write_checkpoint(directory: str | os.PathLike[str], *, trial_id: int, ray_trial_id: str | None, epoch: int,
                     state: Any, student_config: Mapping[str, Any]) -> None:
    """Write one checkpoint (best.pt, resume.pt, trial.json) of ``fit``'s ``state`` (a
    :class:`~asc_search.training.loop.FitState`) into ``directory``."""
    import torch

    directory = Path(directory)
    best_metrics = {k: v for k, v in (state.best_metrics or {}).items() if isinstance(v, (int, float))}
    torch.save({"best_state": state.best_state, "best_epoch": state.best_epoch,
                "best_metrics": best_metrics, "student_config": dict(student_config)}, directory / BEST_FILE)
    torch.save(state.to_dict(), directory / RESUME_FILE)
    marker = {"trial_id": int(trial_id), "ray_trial_id": ray_trial_id, "epoch": int(epoch)}
    (directory / TRIAL_MARKER).write_text(json.dumps(marker), encoding="utf-8")


def read_resume_state(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The full training state of a checkpoint (``start_state`` for ``fit``)."""
    import torch

    return torch.load(Path(directory) / RESUME_FILE, map_location="cpu", weights_only=False)


def find_checkpoints(run_dir: str | os.PathLike[str]) -> dict[int, list[Checkpoint]]:
    """Every checkpoint under ``RUN/ray``, by trial id (folders without a readable marker are skipped)."""
    run_dir = Path(run_dir)
    out: dict[int, list[Checkpoint]] = {}
    for marker in (run_dir / RAY_DIR).glob(f"*/checkpoint_*/{TRIAL_MARKER}"):
        folder = marker.parent
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
            trial_id = int(data["trial_id"] if "trial_id" in data else data[_LEGACY_MARKER_KEY])
            index = int(folder.name.rsplit("_", 1)[-1])
        except (ValueError, KeyError, TypeError, OSError):
            continue
        ref = Checkpoint(trial_id, data.get("ray_trial_id"), index, str(folder.relative_to(run_dir)))
        out.setdefault(trial_id, []).append(ref)
    return out


def latest_checkpoint(checkpoints: list[Checkpoint], ray_trial_id: str | None = None) -> Checkpoint | None:
    """The newest of a trial's checkpoints: those of its recorded Ray trial first, then the highest number."""
    if not checkpoints:
        return None
    return max(checkpoints, key=lambda c: (ray_trial_id is not None and c.ray_trial_id == ray_trial_id, c.index))


def trial_errors(run_dir: str | os.PathLike[str]) -> dict[int, str]:
    """Trial id -> the last line of the exception that ended its Ray trial (Tune's ``error.txt``)."""
    out: dict[int, str] = {}
    for err in (Path(run_dir) / RAY_DIR).glob("trial_*_*/error.txt"):
        try:
            trial_id = int(err.parent.name.split("_")[1])
            lines = [ln.strip() for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
        except (ValueError, IndexError, OSError):
            continue
        if lines:
            out[trial_id] = f"the trial raised: {lines[-1]}"[:500]
    return out


def load_best_weights(run_dir: str | os.PathLike[str], checkpoint_path: str | None, trial_id: Any) -> dict[str, Any]:
    """The state dict of a trial's best validation epoch, from its checkpoint folder (relative to ``run_dir``)."""
    import torch

    if not isinstance(checkpoint_path, str) or not checkpoint_path:
        raise NotFoundError(f"trial {trial_id} has no checkpoint recorded in the trials table; export it with retrain",
                            params=("retrain",))
    folder = Path(checkpoint_path)
    folder = folder if folder.is_absolute() else Path(run_dir) / folder
    file = folder / BEST_FILE
    if not file.is_file():
        raise NotFoundError(f"checkpoint {file} of trial {trial_id} is gone (was the Ray experiment moved or "
                            "deleted?); export it with retrain instead", params=("retrain",))
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a corrupt or foreign file
        raise DataError(f"checkpoint {file} cannot be read ({type(exc).__name__}: {exc})") from None
    state = data.get("best_state") if isinstance(data, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise DataError(f"checkpoint {file} holds no best_state (the weights of the trial's best epoch)")
    return dict(state)
