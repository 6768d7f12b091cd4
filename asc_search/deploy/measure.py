"""What an ONNX graph stores: the bytes of its weights at their stored dtype, measured from the file.

Constants are the graph's initializers and the values of its Constant nodes that some node reads. Each gets one role:

* input 1 of a QuantizeLinear / DequantizeLinear: a **scale**; input 2: a **zero point** (quantisation metadata,
  reported apart, not counted against the budget);
* a float constant, or an integer constant a DequantizeLinear turns into a tensor (int8 weights, int32 biases of a
  QDQ graph): a **parameter**. A parameter is a **bias** when, through a DequantizeLinear or Cast, it ends up as the
  third input of a Conv / ConvTranspose / Gemm (after BatchNorm folding: one per output channel), else a **kernel**;
* any other integer constant: **other** (Reshape shapes, reduction axes).

``weights_bytes`` = kernel + bias bytes: the figure held against the budget's ``max_param_bytes``. These rules fit
float graphs and QDQ graphs (the only int8 format :mod:`asc_search.deploy.quantize` writes).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["weight_bytes", "float_parameters"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_WITH_BIAS = ("Conv", "ConvTranspose", "Gemm")


def _constants(model: Any) -> dict[str, Any]:
    """name -> TensorProto of every constant: initializers and the values of Constant nodes."""
    out = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    out[node.output[0]] = attr.t
    return out


def _role(uses: list[tuple[Any, int]], final: list[tuple[Any, int]], dtype: np.dtype) -> str:
    if any(n.op_type in _QDQ and i == 1 for n, i in uses):
        return "scale"
    if any(n.op_type in _QDQ and i == 2 for n, i in uses):
        return "zero_point"
    if np.issubdtype(dtype, np.floating) or any(n.op_type == "DequantizeLinear" and i == 0 for n, i in uses):
        return "bias" if any(t.op_type in _WITH_BIAS and j == 2 for t, j in final) else "kernel"
    return "other"


def _classify(model: Any) -> list[dict[str, Any]]:
    """One record per constant the graph reads: name, role, dtype, elements, bytes and the op types that finally
    read it (looking through DequantizeLinear / Cast)."""
    from onnx import helper

    consumers: dict[str, list[tuple[Any, int]]] = defaultdict(list)
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            consumers[name].append((node, i))
    records = []
    for name, tensor in _constants(model).items():
        uses = consumers.get(name, [])
        if not uses:
            continue  # an unused constant is not part of what runs
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        size = int(np.prod(tensor.dims)) if len(tensor.dims) else 1
        final = [t for node, i in uses
                 for t in (consumers[node.output[0]] if node.op_type in ("DequantizeLinear", "Cast") and i == 0
                           else [(node, i)])]
        records.append({"name": name, "role": _role(uses, final, dtype), "dtype": str(dtype), "elements": size,
                        "bytes": size * dtype.itemsize, "read_by": sorted({t.op_type for t, _ in final})})
    return records


def float_parameters(model: Any) -> list[dict[str, Any]]:
    """Parameters (more than one element) still stored as float: in an int8 graph, onnxruntime left the operators
    that read them unquantised."""
    return [r for r in _classify(model)
            if r["role"] in ("kernel", "bias") and r["elements"] > 1 and r["dtype"].startswith(("float", "bfloat"))]


def weight_bytes(onnx_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The stored bytes of the graph at ``onnx_path`` (see the module docstring): ``weights_bytes`` (kernels +
    biases, the budget figure), ``kernel_bytes``, ``bias_bytes``, ``by_dtype`` (parameter bytes per stored dtype),
    ``scales_bytes``, ``zero_points_bytes``, ``other_bytes``, ``n_weights`` / ``n_kernel`` / ``n_bias`` (element
    counts; torchinfo counts more: two per BatchNorm channel where the graph folded one bias) and ``file_bytes``."""
    import onnx

    records = _classify(onnx.load(str(onnx_path)))
    total: Counter[str] = Counter()
    count: Counter[str] = Counter()
    by_dtype: Counter[str] = Counter()
    for r in records:
        total[r["role"]] += r["bytes"]
        count[r["role"]] += r["elements"]
        if r["role"] in ("kernel", "bias"):
            by_dtype[r["dtype"]] += r["bytes"]
    return {
        "weights_bytes": total["kernel"] + total["bias"],
        "kernel_bytes": total["kernel"],
        "bias_bytes": total["bias"],
        "by_dtype": dict(sorted(by_dtype.items())),
        "scales_bytes": total["scale"],
        "zero_points_bytes": total["zero_point"],
        "other_bytes": total["other"],
        "n_weights": count["kernel"] + count["bias"],
        "n_kernel": count["kernel"],
        "n_bias": count["bias"],
        "file_bytes": Path(onnx_path).stat().st_size,
    }
