"""The deployed model inside an export: its graph at the budget's precision, the bytes measured from that file (held
against ``max_param_bytes``), its scores with onnxruntime next to the float32 ones, and the ``deployed:`` block of
``student.yaml``. Used by :func:`asc_search.export.export.write_export`."""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import Budget
from ..errors import BudgetError

__all__ = ["score_graph", "score_torch", "nominal_check", "check_measured_bytes", "validation_scores",
           "deployed_record", "drop", "cpu_flags"]


def score_graph(path: str | Path, x: torch.Tensor, y: torch.Tensor, table: Any, labels: tuple[str, ...],
                threads: int = 0) -> dict[str, Any]:
    """DCASE scores (:func:`asc_search.training.metrics.score`) of the ONNX graph at ``path`` run by onnxruntime."""
    from ..deploy import run_onnx
    from ..training.metrics import score

    return score(torch.from_numpy(run_onnx(path, x, threads=threads)), y, table, labels)


def score_torch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, table: Any, labels: tuple[str, ...],
                device: str = "auto") -> dict[str, Any]:
    """DCASE scores of the torch model (float32) on ``device``; the model is left on the CPU in eval mode."""
    from .._runtime import resolve_device
    from ..training.inference import predict
    from ..training.metrics import score

    dev = resolve_device(device)
    logits = predict(model.to(dev), x, device=dev)
    model.cpu().eval()
    return score(logits, y, table, labels)


def nominal_check(model: torch.nn.Module, input_shape: tuple[int, ...], budget: Budget) -> Any:
    """The budget report of ``model`` (the DCASE count and the deployed estimate); BudgetError when over."""
    from ..complexity import check_budget, measure

    report = check_budget(measure(model, input_shape, dtype=budget.param_dtype), budget)
    if not report.passed:
        raise BudgetError(f"the student is over budget ({'; '.join(report.failures)}); refusing to export it")
    return report


def validation_scores(model: torch.nn.Module, graph: Any, val: Any, labels: tuple[str, ...],
                       device: str) -> dict[str, Any]:
    """``{"deployed", "fp32", "drop"}`` scores on ``val`` = (x, y, table); {} without it."""
    if val is None or len(val[1]) == 0:
        return {}
    val_x, val_y, val_table = val
    deployed = score_graph(graph.path, val_x, val_y, val_table, labels)
    fp32 = score_torch(model, val_x, val_y, val_table, labels, device)
    return {"deployed": deployed, "fp32": fp32, "drop": drop(deployed, fp32)}


def check_measured_bytes(graph: Any, budget: Budget) -> None:
    """BudgetError when the deployed graph's weights (measured from the file) exceed ``max_param_bytes``."""
    b = graph.bytes
    if b["weights_bytes"] <= budget.max_param_bytes:
        return
    parts = " + ".join(f"{dtype} {n:,}" for dtype, n in b["by_dtype"].items())
    raise BudgetError(f"the deployed {graph.precision} graph stores {b['weights_bytes']:,} bytes of weights "
                      f"({parts}) > max_param_bytes {budget.max_param_bytes:,}; refusing to export it")


def drop(deployed: Mapping[str, Any], fp32: Mapping[str, Any]) -> dict[str, float | None]:
    """float32 minus deployed for the accuracies (positive: the deployed model is worse), deployed minus float32 for
    the log loss."""
    def diff(a: Any, b: Any) -> float | None:
        if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
            return None
        return float(a) - float(b)

    out = {k: diff(fp32.get(k), deployed.get(k))
           for k in ("macro_accuracy", "accuracy", "seen_macro_accuracy", "unseen_macro_accuracy")}
    out["log_loss"] = diff(deployed.get("log_loss"), fp32.get("log_loss"))
    return out


def cpu_flags() -> dict[str, Any]:
    """Whether this CPU has AVX-512 VNNI / AVX-VNNI (int8 dot products without int16 saturation), from
    /proc/cpuinfo on Linux (None elsewhere): the int8 scores are exact for the runtime, the weight grid and this."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"machine": platform.machine(), "vnni": None}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"machine": platform.machine(), "vnni": "avx512_vnni" in flags or "avx_vnni" in flags}


def deployed_record(graph: Any, counted: Mapping[str, Any], budget: Budget, qat: Mapping[str, Any] | None,
                    exporter: str) -> dict[str, Any]:
    """The ``deployed:`` block of student.yaml for ``graph`` (a :class:`asc_search.deploy.DeployedGraph`);
    ``counted``: the budget report's dict (the DCASE count and the analytic deployed estimate)."""
    import onnxruntime

    from ..deploy import ONNX_INPUT, ONNX_OUTPUT

    b = graph.bytes
    return {
        "precision": graph.precision,
        "file": graph.path.name,
        "reference_file": graph.reference_path.name,
        "io": {"input": ONNX_INPUT, "output": ONNX_OUTPUT, "dtype": "float32"},
        "weights_bytes": b["weights_bytes"],
        "kernel_bytes": b["kernel_bytes"],
        "bias_bytes": b["bias_bytes"],
        "by_dtype": b["by_dtype"],
        "scales_bytes": b["scales_bytes"],
        "zero_points_bytes": b["zero_points_bytes"],
        "other_bytes": b["other_bytes"],
        "n_weights": b["n_weights"],
        "file_bytes": b["file_bytes"],
        "counted_param_bytes": counted.get("param_bytes"),
        "estimated_param_bytes": counted.get("deployed_param_bytes"),
        "max_param_bytes": budget.max_param_bytes,
        "within_budget": b["weights_bytes"] <= budget.max_param_bytes,
        "batchnorm_folded": True,
        "exporter": exporter,
        "quantization": graph.quantization,
        "qat": dict(qat) if qat else None,
        "check": graph.check,
        "seconds": graph.seconds,
        "runtime": {"onnxruntime": onnxruntime.__version__, "cpu": cpu_flags()},
    }
