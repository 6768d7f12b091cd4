"""The student as ONNX, checked against torch with onnxruntime before it is kept."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["ONNX_TOLERANCE", "ONNX_CHECK_CLIPS", "export_onnx"]

#: onnxruntime's logits must match torch's within this (absolute, scaled by max(1, |logit|max)).
ONNX_TOLERANCE = 1e-3
#: Clips of the test split the ONNX check runs on.
ONNX_CHECK_CLIPS = 64

def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> float:
    """Write ``model`` as ONNX to ``path`` (batch axis dynamic) and check onnxruntime's logits on ``example``
    against torch's. Returns the largest absolute difference; a mismatch raises RuntimeError (a bug, not input)."""
    import logging
    import warnings

    import onnxruntime as ort

    model = model.eval().cpu()
    example = example.float().cpu()
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(
                model,
                (example[:1],),
                str(path),
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
                dynamo=True,
                external_data=False,
                verbose=False,
                optimize=True,
            )
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)
    with torch.no_grad():
        expected = model(example).numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"x": example.numpy()})[0]
    if got.shape != expected.shape:
        raise RuntimeError(f"ONNX model gives logits of shape {got.shape}, torch {expected.shape}")
    diff = float(np.abs(got - expected).max()) if expected.size else 0.0
    limit = ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max()) if expected.size else 1.0)
    if not diff <= limit:
        raise RuntimeError(f"ONNX logits differ from torch's by {diff:.3g} (> {limit:.3g}) in {path}")
    return diff
