"""The model as a float32 ONNX graph, checked against torch with onnxruntime before it is kept; and running a graph.

* :func:`export_onnx` writes the graph (input ``x`` [batch, 1, n_mels, n_frames] -> ``logits``, batch dynamic). Two
  exporters, both of which fold every BatchNorm into the convolution before it: torch's dynamo exporter
  (``torch.onnx.export(dynamo=True, optimize=True)``, the supported one; 4 to 15 s per export even for a tiny
  model, what ``asc-search export`` uses) and, with ``fast=True``, the TorchScript exporter (``dynamo=False``,
  opset 17; deprecated in torch but correct for these models and about 0.3 s: the in-trial post-training
  quantisation of ``search.score_precision: deployed`` uses it). Either way onnxruntime's logits are checked against
  torch's; a mismatch is a bug (RuntimeError), never silently kept.
* :func:`onnx_session` / :func:`run_onnx`: logits of a graph on clips with onnxruntime on the CPU, batched, with a
  set number of threads.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["ONNX_TOLERANCE", "ONNX_CHECK_CLIPS", "ONNX_INPUT", "ONNX_OUTPUT", "export_onnx", "onnx_session",
           "run_onnx"]

#: onnxruntime's logits must match torch's within this (absolute, scaled by max(1, |logit|max)).
ONNX_TOLERANCE = 1e-3
#: Clips the ONNX check runs on (the first of the test split in an export).
ONNX_CHECK_CLIPS = 64
ONNX_INPUT = "x"
ONNX_OUTPUT = "logits"
#: Opset of the TorchScript exporter (``fast=True``): what onnxruntime's quantiser and float16 converter take.
_LEGACY_OPSET = 17


def _torch_export(model: torch.nn.Module, example: torch.Tensor, path: Path, fast: bool) -> None:
    previous = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if fast:
                torch.onnx.export(model, (example[:1],), str(path), input_names=[ONNX_INPUT],
                                  output_names=[ONNX_OUTPUT], dynamic_axes={ONNX_INPUT: {0: "batch"},
                                                                            ONNX_OUTPUT: {0: "batch"}},
                                  dynamo=False, opset_version=_LEGACY_OPSET, do_constant_folding=True, verbose=False)
            else:
                torch.onnx.export(model, (example[:1],), str(path), input_names=[ONNX_INPUT],
                                  output_names=[ONNX_OUTPUT],
                                  dynamic_shapes={ONNX_INPUT: {0: torch.export.Dim("batch", min=1)}},
                                  dynamo=True, external_data=False, verbose=False, optimize=True)
    finally:
        logging.getLogger("torch.onnx").setLevel(previous)


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike[str],
                fast: bool = False, threads: int = 0) -> float:
    """Write ``model`` (put in eval mode, on the CPU) as a float32 ONNX graph to ``path`` (batch axis dynamic) and
    check onnxruntime's logits on ``example`` against torch's. ``fast``: the TorchScript exporter (see the module
    docstring); ``threads``: onnxruntime's for the check (0: all cores). Returns the largest absolute difference; a
    mismatch raises RuntimeError (a bug, not input)."""
    model = model.eval().cpu()
    example = example.float().cpu()
    path = Path(path)
    _torch_export(model, example, path, fast)
    with torch.no_grad():
        expected = model(example).numpy()
    got = run_onnx(path, example, threads=threads)
    if got.shape != expected.shape:
        raise RuntimeError(f"ONNX model gives logits of shape {got.shape}, torch {expected.shape}")
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    limit = ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)
    if not diff <= limit:
        raise RuntimeError(f"ONNX logits differ from torch's by {diff:.3g} (> {limit:.3g}) in {path}")
    return diff


def onnx_session(path: str | os.PathLike[str], threads: int = 1, optimize: bool = True) -> Any:
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (0: onnxruntime's default, all
    cores). ``optimize=False`` turns graph optimisations off: an int8 QDQ graph then runs as float ops on dequantised
    tensors (its reference semantics) instead of onnxruntime's fused int8 kernels."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session: Any, x: Any, batch_size: int = 256, threads: int = 1) -> np.ndarray:
    """Logits [N, K] (float32) of a graph (a path or an :func:`onnx_session`) on ``x`` [N, 1, F, T] (numpy or torch;
    float16 storage is widened to float32), ``batch_size`` clips per run."""
    session = path_or_session
    if isinstance(path_or_session, (str, os.PathLike)):
        session = onnx_session(path_or_session, threads=threads)
    name = session.get_inputs()[0].name
    data = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    out = [session.run(None, {name: np.ascontiguousarray(data[i : i + batch_size], dtype=np.float32)})[0]
           for i in range(0, data.shape[0], batch_size)]
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.empty((0, 0), np.float32)
