"""The teacher folder: what ``asc-search teacher train`` writes and every later step loads::

    TEACHER_DIR/teacher.pt     the best checkpoint's state dict (loads with torch.load(..., weights_only=True))
    TEACHER_DIR/teacher.json   preset + architecture, training and split settings, seed, feature cache fingerprint,
                               metrics, complexity, the checkpoint's sha256 fingerprint, versions
    TEACHER_DIR/metrics.json   validation (best epoch) and test metrics: macro accuracy, log loss, per class,
                               per device with seen / unseen marked; the per-epoch history

Written (:func:`write_teacher`) and read (:func:`load_teacher`) here only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_output_dir, fingerprint_file, write_json_atomic
from ..errors import CacheError, ConfigError, NotFoundError

__all__ = [
    "TEACHER_FILE",
    "TEACHER_META",
    "METRICS_FILE",
    "LoadedTeacher",
    "check_teacher_out_dir",
    "write_teacher",
    "load_teacher",
]

TEACHER_FILE = "teacher.pt"
TEACHER_META = "teacher.json"
METRICS_FILE = "metrics.json"


def check_teacher_out_dir(out_dir: str | os.PathLike, force: bool, what: str = "out_dir",
                          force_name: str = "force=True") -> None:
    """ConfigError unless ``out_dir`` is absent or empty, or ``force`` is set and it holds a teacher. ``what`` and
    ``force_name`` name the folder and the switch in the message (the CLI passes "--out folder" and "--force")."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not force:
            raise ConfigError(f"{out_dir}: already exists and is not empty; choose another {what} or pass {force_name}")
        if not (out_dir / TEACHER_META).is_file() and out_dir.is_dir():
            raise ConfigError(
                f"{out_dir}: exists and does not hold a teacher; refusing to replace it even with {force_name}"
            )


def write_teacher(out_dir: str | os.PathLike, state: dict[str, torch.Tensor], meta: dict[str, Any],
                  metrics: dict[str, Any]) -> dict[str, Any]:
    """Write the teacher folder atomically; returns ``meta`` completed with the checkpoint's fingerprint."""
    with atomic_output_dir(out_dir) as tmp:
        torch.save(state, tmp / TEACHER_FILE)
        meta = {**meta, "checkpoint_fingerprint": fingerprint_file(tmp / TEACHER_FILE)}
        write_json_atomic(tmp / METRICS_FILE, metrics)
        write_json_atomic(tmp / TEACHER_META, meta)
    return meta


@dataclass
class LoadedTeacher:
    """A trained teacher: the model (CPU, eval mode), its ``teacher.json`` record and its folder."""

    model: torch.nn.Module
    meta: dict[str, Any]
    dir: Path

    @property
    def fingerprint(self) -> str:
        return str(self.meta["checkpoint_fingerprint"])


def _read_meta(teacher_dir: Path) -> dict[str, Any]:
    path = teacher_dir / TEACHER_META
    if not teacher_dir.is_dir():
        raise NotFoundError(f"{teacher_dir}: no such teacher folder; train one with `asc-search teacher train`")
    if not path.is_file():
        raise NotFoundError(f"{teacher_dir}: not a teacher folder (no {TEACHER_META})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: unreadable ({exc})") from None
    for key in ("model", "checkpoint_fingerprint", "input_shape", "labels"):
        if key not in meta:
            raise CacheError(f"{path}: missing key {key!r}; retrain the teacher")
    return meta


def load_teacher(teacher_dir: str | os.PathLike) -> LoadedTeacher:
    """The trained teacher of ``teacher_dir`` (on the CPU, eval mode). The checkpoint must match the fingerprint
    recorded in teacher.json (CacheError otherwise) and loads with ``weights_only=True``."""
    from ..models.teacher import build_teacher

    teacher_dir = Path(teacher_dir)
    meta = _read_meta(teacher_dir)
    ckpt = teacher_dir / TEACHER_FILE
    if not ckpt.is_file():
        raise NotFoundError(f"{teacher_dir}: {TEACHER_FILE} is missing")
    actual = fingerprint_file(ckpt)
    if actual != meta["checkpoint_fingerprint"]:
        raise CacheError(
            f"{ckpt}: its fingerprint {actual} differs from {meta['checkpoint_fingerprint']} recorded in "
            f"{TEACHER_META} (the checkpoint was replaced or damaged)"
        )
    model = build_teacher(meta["model"])
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is a cache problem for the user
        raise CacheError(f"{ckpt}: cannot be loaded into the recorded architecture ({exc})") from None
    model.eval()
    return LoadedTeacher(model, meta, teacher_dir)
