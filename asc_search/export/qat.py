"""The export's quantisation-aware step (int8 only): ``qat_epochs`` = ``"auto"`` (the default), N or 0.

1. The trial's model is quantised after training (PTQ, onnxruntime; the TorchScript exporter here, the export
   itself then writes its graph with the dynamo exporter) and scored on the validation split beside the float32
   model.
2. ``auto``: when PTQ loses more than :data:`AUTO_THRESHOLD` (1 point) of validation macro accuracy, QAT runs for
   10 % of the trial's epochs, at least 2 (:func:`auto_epochs`), and the better of the PTQ and QAT models by
   validation macro accuracy (ties: PTQ) is exported. ``N`` forces N epochs of QAT and exports its result; ``0``
   disables QAT.
3. QAT = :func:`asc_search.training.qat.qat_finetune`: the trial's losses (CE + KD + embedding matching from the
   teacher cache, its projection head from the checkpoint when there is one), its augmentations and batch size, a
   tenth of its learning rate, no warm-up.

Every variant is scored on validation and test (float32, int8 PTQ and, when it ran, int8 QAT): the report shows
them side by side; the choice is made on validation only.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .._progress import OnEvent, log
from ..errors import ConfigError

__all__ = ["AUTO_THRESHOLD", "QAT_LR_FACTOR", "parse_qat_epochs", "auto_epochs", "quantisation_aware"]

#: ``auto`` runs QAT when PTQ loses more than this much validation macro accuracy.
AUTO_THRESHOLD = 0.01
#: QAT's peak learning rate: this fraction of the trial's.
QAT_LR_FACTOR = 0.1


def parse_qat_epochs(value: Any) -> int | str:
    """``"auto"`` or a non-negative integer (also given as text); anything else is a ConfigError."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"qat_epochs must be 'auto' or a whole number >= 0, got {value!r}", params=("qat_epochs",))
    return number


def auto_epochs(trial_epochs: int) -> int:
    """QAT epochs of ``auto``: 10 % of the trial's epochs, at least 2."""
    return max(2, round(0.1 * int(trial_epochs)))


def _ptq_scores(model: torch.nn.Module, work: Path, name: str, calibration_x: torch.Tensor, seed: int,
                parts: dict[str, Any], labels: tuple[str, ...]) -> dict[str, Any]:
    """Validation and test macro accuracy of ``model`` quantised to int8 (a graph in ``work``)."""
    from ..deploy import ONNX_CHECK_CLIPS, deploy_model
    from .deployed import score_graph

    test, test_table = parts["test"]
    graph = deploy_model(model, work, "int8", example=test.x[:ONNX_CHECK_CLIPS], calibration_x=calibration_x,
                         seed=seed, fast=True, name=f"{name}.onnx", reference_name=f"{name}.fp32.onnx")
    out = {}
    for split, (data, table) in (("val", parts["val"]), ("test", (test, test_table))):
        out[f"{split}_macro_accuracy"] = score_graph(graph.path, data.x, data.y, table, labels)["macro_accuracy"]
    return out


def _fp32_scores(model: torch.nn.Module, parts: dict[str, Any], labels: tuple[str, ...], device: str) -> dict[str, Any]:
    from .deployed import score_torch

    return {f"{split}_macro_accuracy": score_torch(model, d.x, d.y, t, labels, device)["macro_accuracy"]
            for split, (d, t) in (("val", parts["val"]), ("test", parts["test"]))}


def _finetune(model: torch.nn.Module, proposal: Any, parts: dict[str, Any], epochs: int, device: str,
              embedding_shape: Any, head_state: Any, dir_log_gains: Any = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    from ..models.build import build_student_and_head
    from ..training.qat import qat_finetune

    _, head = build_student_and_head(proposal.student, proposal.distill, embedding_shape)
    if head is not None and head_state:
        head.load_state_dict(head_state)
    lr = proposal.train.lr * QAT_LR_FACTOR
    tuned, result, diff = qat_finetune(model, parts["train"][0], parts["val"][0], proposal.train.replace(device=device),
                                       epochs=epochs, lr=lr, distill=proposal.distill, head=head,
                                       dir_log_gains=dir_log_gains)
    return tuned, {"epochs": int(epochs), "lr": lr, "best_epoch": result.best_epoch, "fold_back_diff": diff,
                   "head_from_checkpoint": bool(head is not None and head_state)}


def quantisation_aware(
    model: torch.nn.Module,
    proposal: Any,
    parts: dict[str, Any],
    labels: tuple[str, ...],
    *,
    qat_epochs: int | str,
    calibration_x: torch.Tensor,
    seed: int,
    device: str = "auto",
    embedding_shape: Any = None,
    head_state: Any = None,
    dir_log_gains: Any = None,
    on_event: OnEvent | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model to export (the trial's, or its QAT fine-tuning) and the record of what was done (see the module
    docstring). ``parts``: :func:`asc_search.export.inputs.split_tensors` with train (teacher targets aligned when the
    trial distils), val and test; ``calibration_x``: the training clips the int8 ranges are calibrated on."""
    epochs = parse_qat_epochs(qat_epochs)
    started = time.perf_counter()
    variants = {"float32": _fp32_scores(model, parts, labels, device)}
    with tempfile.TemporaryDirectory(prefix="asc-qat-") as work:
        log(on_event, "post-training quantisation of the trial's model, scored on validation")
        variants["int8_ptq"] = _ptq_scores(model, Path(work), "ptq", calibration_x, seed, parts, labels)
        loss = variants["float32"]["val_macro_accuracy"] - variants["int8_ptq"]["val_macro_accuracy"]
        record: dict[str, Any] = {"mode": "auto" if epochs == "auto" else ("off" if epochs == 0 else "forced"),
                                  "threshold": AUTO_THRESHOLD, "ptq_val_loss": loss, "ran": False, "chosen": "int8_ptq"}
        if isinstance(epochs, int):
            run = epochs
        else:
            run = auto_epochs(proposal.train.epochs) if loss > AUTO_THRESHOLD else 0
        if run == 0:
            record["reason"] = ("QAT off (qat_epochs 0)." if epochs == 0 else
                                f"PTQ lost {loss:+.4f} of validation macro accuracy (<= {AUTO_THRESHOLD}): no QAT.")
            record.update(variants=variants, seconds=round(time.perf_counter() - started, 2))
            return model, record
        log(on_event, f"quantisation-aware fine-tuning: {run} epoch(s) (PTQ lost {loss:+.4f} on validation)")
        tuned, info = _finetune(model, proposal, parts, run, device, embedding_shape, head_state, dir_log_gains)
        variants["int8_qat"] = _ptq_scores(tuned, Path(work), "qat", calibration_x, seed, parts, labels)
    better = variants["int8_qat"]["val_macro_accuracy"] > variants["int8_ptq"]["val_macro_accuracy"]
    chosen = "int8_qat" if epochs != "auto" or better else "int8_ptq"
    record.update(info, ran=True, chosen=chosen, variants=variants, seconds=round(time.perf_counter() - started, 2),
                  reason=(f"QAT forced ({run} epochs)." if epochs != "auto" else
                          f"PTQ lost {loss:+.4f} of validation macro accuracy (> {AUTO_THRESHOLD}): QAT for {run} "
                          f"epochs; the {'QAT' if better else 'PTQ'} model validates better and is exported."))
    return (tuned if chosen == "int8_qat" else model), record
