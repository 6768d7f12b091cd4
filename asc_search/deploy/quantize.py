"""A float32 ONNX graph at a smaller precision, with onnxruntime's own tools.

* :func:`quantize_int8`: static post-training quantisation (``onnxruntime.quantization.quantize_static``), QDQ
  format: int8 weights, symmetric, one scale per output channel where the operator allows (Conv); int8 activations,
  asymmetric, one scale and zero point per tensor; int32 biases. Activation ranges are calibrated with MinMax on the
  clips given (a seeded sample of training clips, never validation or test). Weights sit on a 7-bit grid
  ([-64, 64], ``reduce_range``) by default: onnxruntime's x86 int8 convolution without VNNI (AVX2) adds pairs of
  u8 x s8 products into int16 with saturation, and full-range weights overflow there (2 x 255 x 127 > 32,767), so the
  same graph would give other logits on another CPU; with 7-bit weights every onnxruntime CPU computes the graph's
  own QDQ semantics. The operators quantised are those with weights and the element-wise and pooling ones between
  them (:data:`QUANTIZED_OPS`); the global pooling and the reshape at the head stay float (a mean of the last
  dequantised feature map): torch's two exporters write that head differently (GlobalAveragePool + Flatten, or
  ReduceMean + Reshape), and this way both give the same int8 model (0.008 largest logit difference on the demo's
  student, against 0.35 when onnxruntime quantises every operator it can).
* :func:`convert_float16`: float16 weights and compute; the input ``x`` and the output ``logits`` stay float32 (a
  Cast at each end), so callers feed and read float32 as before.

Anything that goes wrong inside onnxruntime, and any weight it would silently leave in float (an operator it cannot
quantise), raises :class:`~asc_search.errors.QuantizationError` with one line; the partial output is removed.
Nothing is printed: onnxruntime's quantiser logs through the root logger (and installs a handler on it), which is
silenced and put back.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QuantizationError

__all__ = ["PRECISIONS", "CALIBRATION_CLIPS", "QUANTIZED_OPS", "calibration_sample", "quantize_int8",
           "convert_float16"]

#: The precisions a model can be deployed at: the budget's ``param_dtype`` values.
PRECISIONS: tuple[str, ...] = ("float32", "float16", "int8")
#: Training clips the int8 activation ranges are calibrated on (at most).
CALIBRATION_CLIPS = 512
_CALIBRATION_BATCH = 32
#: The operators an int8 graph quantises (see the module docstring).
QUANTIZED_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Relu", "AveragePool", "MaxPool")


def calibration_sample(n_available: int, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``min(n, n_available)`` clips drawn without replacement by a generator seeded ``seed``."""
    rng = np.random.default_rng(seed)
    take = min(int(n), int(n_available))
    return np.sort(rng.choice(int(n_available), size=take, replace=False))


def _reader(x: np.ndarray, batch_size: int, input_name: str) -> Any:
    """A calibration reader of equal-size batches of ``x`` (the remainder of ``len(x) % batch_size`` is dropped
    when there is more than one batch)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Batches(CalibrationDataReader):
        def __init__(self) -> None:
            n = (x.shape[0] // batch_size) * batch_size or x.shape[0]
            self._batches = iter([{input_name: x[i : i + batch_size]} for i in range(0, n, batch_size)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return _Batches()


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """Hide what onnxruntime's quantiser logs through the root logger (and the handler its ``logging.warning`` installs
    there) and anything it prints; put the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _calibration_clips(calibration_x: Any, max_clips: int, seed: int) -> np.ndarray:
    data = calibration_x.numpy() if hasattr(calibration_x, "numpy") else np.asarray(calibration_x)
    if data.ndim != 4 or data.shape[0] == 0:
        raise QuantizationError(f"calibration clips must be a non-empty [N, 1, F, T] array, got shape "
                                f"{list(data.shape)}")
    return np.ascontiguousarray(data[calibration_sample(data.shape[0], max_clips, seed)], dtype=np.float32)


def quantize_int8(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration_x: Any,
    *,
    seed: int = 0,
    max_clips: int = CALIBRATION_CLIPS,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> dict[str, Any]:
    """Quantise the float32 graph ``fp32_path`` to int8 (QDQ) at ``out_path``, calibrating on at most ``max_clips``
    clips of ``calibration_x`` ([N, 1, F, T]) drawn with ``seed`` (see the module docstring). Returns the settings
    used (a record for the export's ``deployed.quantization``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    clips = _calibration_clips(calibration_x, max_clips, seed)
    batch = max(1, min(_CALIBRATION_BATCH, clips.shape[0]))
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name
    started = time.perf_counter()
    try:
        with _quiet_onnxruntime():
            # no CalibMaxIntermediateOutputs: in onnxruntime 1.32 it DROPS every full group of batches unmerged
            quantize_static(str(fp32_path), str(out_path), _reader(clips, batch, input_name),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=reduce_range,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=list(QUANTIZED_OPS))
    except Exception as exc:  # onnxruntime raises ValueError, RuntimeError, KeyError, its own Fail ... for one cause
        Path(out_path).unlink(missing_ok=True)
        raise QuantizationError(f"onnxruntime could not quantise {Path(fp32_path).name} to int8 "
                                f"({type(exc).__name__}: {_first_line(exc)})") from None
    seconds = time.perf_counter() - started
    from .measure import float_parameters

    left = float_parameters(onnx.load(str(out_path)))
    if left:
        Path(out_path).unlink(missing_ok=True)
        ops = sorted({op for r in left for op in r["read_by"]})
        names = ", ".join(r["name"] for r in left[:3]) + (", ..." if len(left) > 3 else "")
        raise QuantizationError(f"onnxruntime cannot quantise the {', '.join(ops)} operator(s) of "
                                f"{Path(fp32_path).name}: {len(left)} weight tensor(s) ({names}) would stay float in "
                                "the int8 graph")
    return {
        "format": "QDQ",
        "weights": {"dtype": "int8", "symmetric": True, "per_channel": bool(per_channel),
                    "reduce_range": bool(reduce_range)},
        "activations": {"dtype": "int8", "symmetric": False, "per_tensor": True},
        "operators": list(QUANTIZED_OPS),
        "bias": "int32",
        "calibration": {"method": "minmax", "split": "train", "clips": int(clips.shape[0]), "seed": int(seed)},
        "seconds": round(seconds, 3),
    }


def convert_float16(fp32_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> None:
    """Convert the float32 graph to float16 weights and compute at ``out_path`` (float32 input and output)."""
    import onnx
    import onnx_ir as ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with _quiet_onnxruntime():
            model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        # the converter appends the Cast of the graph input at the END of the node list: onnxruntime copes, but
        # onnx.checker refuses the graph ("Nodes in a graph must be topologically sorted"); sort it with onnx_ir
        staged = ir.from_proto(model)
        staged.graph.sort()
        model = ir.to_proto(staged)
        onnx.checker.check_model(model)
        onnx.save(model, str(out_path))
    except Exception as exc:  # the converter asserts, raises ValueError or onnx's ValidationError
        Path(out_path).unlink(missing_ok=True)
        raise QuantizationError(f"onnxruntime could not convert {Path(fp32_path).name} to float16 "
                                f"({type(exc).__name__}: {_first_line(exc)})") from None
