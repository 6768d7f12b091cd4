"""Reading an export folder back into a ready model (used by ``predict`` and ``bench``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import FeatureProfile
from ..errors import AscSearchError, DataError, NotFoundError
from .folder import STUDENT_YAML, WEIGHTS_FILE, read_student_yaml

__all__ = ["ExportedStudent", "load_export"]


@dataclass
class ExportedStudent:
    """An export folder read back: the model (eval mode, CPU) and what it needs to run."""

    model: torch.nn.Module
    config: Any  # StudentConfig
    labels: tuple[str, ...]
    profile: FeatureProfile
    record: dict[str, Any]  # student.yaml
    path: Path

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.record["model"]["input_shape"])

    @property
    def deployed(self) -> dict[str, Any]:
        """The ``deployed:`` block (for a format-1 folder: float32, ``student.onnx``, ``legacy: True``)."""
        return self.record["deployed"]

    @property
    def legacy(self) -> bool:
        """A folder written before the deployed model existed (export format 1: float32 only)."""
        return bool(self.deployed.get("legacy"))

    @property
    def precision(self) -> str:
        return str(self.deployed["precision"])

    @property
    def deployed_path(self) -> Path:
        """The deployed graph (``student.onnx``)."""
        return self.path / str(self.deployed["file"])


def load_export(export_dir: str | os.PathLike[str]) -> ExportedStudent:
    """Read an export folder (student.yaml + student.safetensors) into a ready model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models.student import StudentConfig, build_student

    path = Path(export_dir)
    record = read_student_yaml(path)
    meta_file = path / STUDENT_YAML
    try:
        cfg = StudentConfig.from_dict(record["model"]["config"])
        profile = FeatureProfile.from_dict(record["model"]["feature_profile"])
        labels = tuple(str(x) for x in record["model"]["labels"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{meta_file} lacks model.{exc}") from None
    except AscSearchError as exc:
        raise DataError(f"{meta_file}: {exc}") from None
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise NotFoundError(f"{weights} does not exist (the export is incomplete)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{weights} is not a readable safetensors file ({exc})") from None
    model = build_student(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{weights} does not fit the architecture in {meta_file} ({str(exc)[:300]})") from None
    return ExportedStudent(model=model.eval(), config=cfg, labels=labels, profile=profile, record=record, path=path)
