"""One call from a trained torch model to its deployed graph: :func:`deploy_model`.

    float32 graph (checked against torch)  --int8: quantize_int8 / float16: convert_float16-->  deployed graph

The deployed graph is measured (:func:`asc_search.deploy.measure.weight_bytes`) and compared with the float32 graph
on the check clips (largest logit difference, argmax agreement). For ``float32`` the float32 graph is the deployed one
(one file).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .graph import export_onnx, run_onnx
from .measure import weight_bytes
from .quantize import CALIBRATION_CLIPS, PRECISIONS, convert_float16, quantize_int8

__all__ = ["DeployedGraph", "deploy_model", "check_precision"]


@dataclass
class DeployedGraph:
    """A model's deployed graph and what was measured on it."""

    precision: str  # float32 | float16 | int8
    path: Path  # the deployed graph
    reference_path: Path  # the float32 graph (the same file for float32)
    bytes: dict[str, Any]  # weight_bytes(path): weights_bytes (the budget figure), by_dtype, scales, ...
    onnx_max_abs_diff: float  # float32 graph vs torch on the check clips
    check: dict[str, Any]  # deployed vs float32 graph on the check clips: clips, max_abs_logit_diff, agreement
    quantization: dict[str, Any] | None = None  # int8: quantize_int8's record
    seconds: dict[str, float] = field(default_factory=dict)  # export, convert

    @property
    def weights_bytes(self) -> int:
        return int(self.bytes["weights_bytes"])


def check_precision(precision: str) -> str:
    """``precision`` when the exporter can produce it; otherwise a ConfigError naming what it can."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} cannot be deployed; the exporter writes "
                          f"{', '.join(PRECISIONS)}", params=("precision",))
    return precision


def _agreement(deployed: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    if not reference.size:
        return {"clips": 0, "max_abs_logit_diff_vs_fp32": 0.0, "argmax_agreement_vs_fp32": 1.0}
    return {"clips": int(reference.shape[0]),
            "max_abs_logit_diff_vs_fp32": float(np.abs(deployed - reference).max()),
            "argmax_agreement_vs_fp32": float((deployed.argmax(1) == reference.argmax(1)).mean())}


def deploy_model(
    model: torch.nn.Module,
    directory: str | os.PathLike[str],
    precision: str,
    *,
    example: torch.Tensor,
    calibration_x: Any = None,
    seed: int = 0,
    fast: bool = False,
    name: str = "student.onnx",
    reference_name: str = "student.fp32.onnx",
    calibration_clips: int = CALIBRATION_CLIPS,
    per_channel: bool = True,
    reduce_range: bool = True,
    threads: int = 0,
) -> DeployedGraph:
    """Write ``model``'s float32 graph (``reference_name``, or ``name`` for float32) and its deployed graph at
    ``precision`` (``name``) into ``directory``. ``example``: the check clips (at least one); ``calibration_x``:
    training clips for int8 (``calibration_clips`` of them drawn with ``seed``); ``fast``: the TorchScript exporter
    (:func:`asc_search.deploy.graph.export_onnx`); ``threads``: onnxruntime's for the checks (0: all cores). Raises
    ConfigError for a precision it cannot write or int8 without calibration clips,
    :class:`~asc_search.errors.QuantizationError` when onnxruntime fails."""
    check_precision(precision)
    if precision == "int8" and calibration_x is None:
        raise ConfigError("precision int8 needs calibration clips (calibration_x: a sample of training clips)",
                          params=("calibration_x",))
    directory = Path(directory)
    deployed = directory / name
    reference = deployed if precision == "float32" else directory / reference_name
    seconds = {}
    t0 = time.perf_counter()
    diff = export_onnx(model, example, reference, fast=fast, threads=threads)
    seconds["export"] = round(time.perf_counter() - t0, 3)
    quantization = None
    t0 = time.perf_counter()
    if precision == "int8":
        quantization = quantize_int8(reference, deployed, calibration_x, seed=seed, max_clips=calibration_clips,
                                     per_channel=per_channel, reduce_range=reduce_range)
    elif precision == "float16":
        convert_float16(reference, deployed)
    seconds["convert"] = round(time.perf_counter() - t0, 3)
    check = _agreement(run_onnx(deployed, example, threads=threads), run_onnx(reference, example, threads=threads))
    return DeployedGraph(precision=precision, path=deployed, reference_path=reference, bytes=weight_bytes(deployed),
                         onnx_max_abs_diff=diff, check=check, quantization=quantization, seconds=seconds)
