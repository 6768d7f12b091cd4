"""One trial: the data it trains on (put in Ray's object store once), training one proposal, and the Ray Tune
function trainable that reports every epoch with a checkpoint and resumes from one.

The trial config Tune carries (made by :class:`~asc_search.search.searcher.BudgetedSearcher`)::

    {"trial_id": Optuna trial number, "kind": "reference" | "search", "proposal": Proposal.to_dict(),
     "cost": {"params", "param_bytes", "deployed_param_bytes", "macs"},
     "deploy": None | {"precision": the budget's param_dtype}}

With ``deploy`` (``search.score_precision: deployed``), the report of the trial's last epoch also carries
``val_macro_accuracy_deployed``: its best epoch quantised after training (:func:`deployed_score`) and scored on the
validation split with onnxruntime. Only a trial that trains all its epochs gets there (ASHA stops the others earlier).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..deploy.quantize import CALIBRATION_CLIPS
from ..errors import CacheError
from .runfolder import read_resume_state, write_checkpoint
from .spec import Proposal, SearchSpec

if TYPE_CHECKING:
    from ..training.loop import FitState

__all__ = ["TRIAL_CALIBRATION_CLIPS", "prepare_trial_data", "fit_proposal", "deployed_score", "train_trial"]

#: Training clips a trial's post-training quantisation is calibrated on (``score_precision: deployed``): the export's
#: number, drawn with the same seed from the same clips, so that the export's int8 graph of the trial is the one scored.
TRIAL_CALIBRATION_CLIPS = CALIBRATION_CLIPS


def prepare_trial_data(features: Any, teacher: Any, spec: SearchSpec, dir_log_gains: Any = None) -> dict[str, Any]:
    """The train and validation arrays one trial needs (never the test split), as numpy arrays for the object store.

    ``features``: a :class:`~asc_search.data.cache.FeatureSet`; ``teacher``:
    :class:`~asc_search.data.teacher_cache.TeacherTargets` aligned to ``features.table`` rows, or None (no
    distillation). Teacher embeddings are stored float16 (half the object store; ``fit`` turns each batch into
    float32). ``dir_log_gains``: the device impulse responses' [n_irs, n_mels] log-gains (the ``dir_p``
    augmentation's bank; :func:`asc_search.data.impulses.build_ir_bank`), or None.
    """
    import torch

    parts = features.split_indices(spec.split)
    out: dict[str, Any] = {
        "labels": list(features.labels),
        "input_shape": list(features.input_shape),
        "profile": features.profile.name,
        "teacher_embedding_shape": list(teacher.embedding_shape) if teacher is not None else None,
        "dir_log_gains": None if dir_log_gains is None else np.asarray(dir_log_gains, dtype=np.float32),
    }
    for name in ("train", "val"):
        idx, part = parts[name]
        if not len(idx):
            raise CacheError(
                f"{features.cache_dir}: the {name} split is empty after carving validation with {spec.split} "
                f"(from {spec.source}); the cache needs train clips from several recording locations"
            )
        index = torch.from_numpy(idx)
        out[f"{name}_x"] = features.x.index_select(0, index).numpy()
        out[f"{name}_y"] = part["label"].to_numpy(dtype=np.int64)
        out[f"{name}_files"] = part["filename"].to_numpy().astype(str).tolist()
        if teacher is not None:
            out[f"{name}_logits"] = teacher.logits.index_select(0, index).float().numpy()
            out[f"{name}_emb"] = teacher.embeddings.index_select(0, index).to(torch.float16).numpy()
    return out


def _tensor_data(data: dict[str, Any], name: str, proposal: Proposal) -> Any:
    import torch

    from ..training.loop import TensorData

    def tensor(key: str) -> Any:
        arr = data.get(key)
        if arr is None:
            return None
        with warnings.catch_warnings():  # object-store arrays are read-only; fit never writes to its inputs
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr)

    return TensorData(
        x=tensor(f"{name}_x"),
        y=tensor(f"{name}_y"),
        teacher_logits=tensor(f"{name}_logits") if proposal.distill.uses_teacher_logits else None,
        teacher_emb=tensor(f"{name}_emb") if proposal.distill.uses_embeddings else None,
    )


def fit_proposal(
    config: dict[str, Any],
    data: dict[str, Any],
    on_epoch: Callable[[int, dict[str, Any], FitState], Any] | None = None,
    start_state: dict[str, Any] | None = None,
) -> Any:
    """Build the proposal's student (+ projection head) and train it on the trial data; returns the FitResult.

    ``config`` is a trial config (see the module docstring), ``data`` the output of :func:`prepare_trial_data`.
    No Ray here.
    """
    from ..models.build import build_student_and_head
    from ..training.loop import fit

    proposal = Proposal.from_dict(config["proposal"])
    model, head = build_student_and_head(proposal.student, proposal.distill, data.get("teacher_embedding_shape"))
    return fit(model, _tensor_data(data, "train", proposal), _tensor_data(data, "val", proposal), proposal.train,
               distill=proposal.distill, head=head, on_epoch=on_epoch, start_state=start_state,
               dir_log_gains=data.get("dir_log_gains"))


def deployed_score(best_state: dict[str, Any], proposal: Proposal, data: dict[str, Any], precision: str,
                   threads: int = 1) -> dict[str, Any]:
    """``val_macro_accuracy_deployed`` of the student with ``best_state``: its graph at ``precision`` (the TorchScript
    exporter, :data:`TRIAL_CALIBRATION_CLIPS` training clips to calibrate int8, seeded by the trial's seed) scored on
    the trial's validation clips with onnxruntime on ``threads`` threads; ``deploy_s`` its cost in seconds. A graph
    onnxruntime cannot make gives NaN and ``deploy_error`` (the trial is then recorded as failed)."""
    import time

    import torch

    from ..deploy import deploy_model, run_onnx
    from ..errors import AscSearchError
    from ..models.student import build_student
    from ..training.metrics import macro_accuracy

    started = time.perf_counter()
    model = build_student(proposal.student)
    model.load_state_dict(best_state)
    val_x, val_y = torch.from_numpy(np.asarray(data["val_x"])), torch.from_numpy(np.asarray(data["val_y"]))
    try:
        with tempfile.TemporaryDirectory(prefix="asc-deploy-") as d:
            graph = deploy_model(model, d, precision, example=val_x[:64], calibration_x=np.asarray(data["train_x"]),
                                 seed=proposal.train.seed, fast=True, calibration_clips=TRIAL_CALIBRATION_CLIPS,
                                 threads=threads)
            logits = torch.from_numpy(run_onnx(graph.path, val_x, threads=threads))
    except AscSearchError as exc:
        return {"val_macro_accuracy_deployed": float("nan"), "deploy_error": f"{precision} graph: {exc}"[:500],
                "deploy_s": time.perf_counter() - started}
    return {"val_macro_accuracy_deployed": macro_accuracy(logits, val_y, proposal.student.n_classes),
            "deploy_s": time.perf_counter() - started}


def _epoch_report(epoch: int, metrics: dict[str, Any], state: FitState, fixed: dict[str, Any]) -> dict[str, Any]:
    nan = float("nan")
    return {
        "val_macro_accuracy": float(metrics.get("val_macro_accuracy", nan)),
        "val_log_loss": float(metrics.get("val_log_loss", nan)),
        "train_loss": float(metrics.get("train_loss", nan)),
        "epoch": int(epoch),
        "steps": int(metrics.get("steps", 0)),  # optimiser steps so far (ASHA's time with search.asha.unit: steps)
        "best_epoch": int(state.best_epoch or epoch),
        "best_val_macro_accuracy": float((state.best_metrics or metrics).get("val_macro_accuracy", nan)),
        "epoch_time_s": float(metrics.get("epoch_time_s", 0.0)),
        # every epoch so far, over all attempts (a retried or resumed trial's history holds the earlier ones)
        "train_time_s": float(sum(float(h.get("epoch_time_s", 0.0)) for h in state.history)),
        "pid": os.getpid(),  # the worker process (shown in the Ray dashboard, useful to inspect a slow trial)
        **fixed,
    }


def train_trial(config: dict[str, Any], data: dict[str, Any]) -> None:
    """The Ray Tune function trainable: one proposal, trained with distillation, reported every epoch with a
    checkpoint (:func:`asc_search.search.runfolder.write_checkpoint`); resumes from Tune's last checkpoint."""
    from ray import tune

    from ..training.loop import DivergedError

    proposal = Proposal.from_dict(config["proposal"])
    trial_id = int(config["trial_id"])
    checkpoint = tune.get_checkpoint()
    start_state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            start_state = read_resume_state(d)
    last_epoch = int(start_state["epoch"]) if start_state is not None else 0
    # resumed_from_epoch > 0: this attempt continued from a checkpoint (a retry, or a resumed search)
    # the epochs fit will run: train.epochs, raised by train.min_steps on this training set
    planned = proposal.train.planned_epochs(len(data["train_y"]))
    fixed = {"epochs_planned": planned, "resumed_from_epoch": last_epoch,
             **{k: int(v) for k, v in config["cost"].items()}}

    deploy = config.get("deploy")

    def on_epoch(epoch: int, metrics: dict[str, Any], state: FitState) -> None:
        nonlocal last_epoch
        last_epoch = epoch
        report = _epoch_report(epoch, metrics, state, fixed)
        if deploy and epoch >= proposal.train.epochs:  # the last epoch: ASHA may stop the trial on this report
            report.update(deployed_score(state.best_state or state.model, proposal, data, deploy["precision"],
                                         threads=max(1, proposal.train.num_threads)))
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(d, trial_id=trial_id, ray_trial_id=tune.get_context().get_trial_id(), epoch=epoch,
                             state=state, student_config=proposal.student.to_dict())
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(d))

    try:
        fit_proposal(config, data, on_epoch=on_epoch, start_state=start_state)
    except DivergedError as exc:
        # Reported, not raised: a diverged proposal would diverge again; Tune must not retry it.
        tune.report({"val_macro_accuracy": 0.0, "val_log_loss": float("nan"), "epoch": int(last_epoch),
                     "diverged": True, "error": str(exc)[:500], **fixed})
