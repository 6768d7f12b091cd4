"""What an export reads from a search run: the feature cache's splits (and teacher targets), and the trial's model
(its best checkpoint, or retrained from scratch on all of train). The run is read through
:mod:`asc_search.search.runfolder` only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._progress import OnEvent, emit, log
from ..errors import CacheError, DataError, NotFoundError
from ..search.runfolder import load_best_weights, read_run_record

__all__ = ["split_tensors", "ExportInputs", "load_inputs", "retrained", "checkpoint_head", "from_checkpoint"]


def split_tensors(
    features: Any, split: Any, targets: Any = None, names: tuple[str, ...] = ("train", "val", "test"),
    subset: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """{name: (TensorData, table)} for the splits in ``names`` of a feature cache, validation carved from train as
    the search carves it, teacher targets (when given) aligned by row. Only the splits named are copied out of the
    cache; ``subset`` {name: positions within that split} copies only those rows of a split."""
    from ..training.loop import TensorData

    out = {}
    for name, (rows, table) in features.split_indices(split).items():
        if name not in names:
            continue
        if subset is not None and name in subset:
            keep = np.asarray(subset[name], dtype=np.int64)
            rows, table = rows[keep], table.iloc[keep].reset_index(drop=True)
        idx = torch.from_numpy(rows)
        y = torch.from_numpy(table["label"].to_numpy(dtype=np.int64, copy=True))
        logits = emb = None
        if targets is not None:
            logits = targets.logits.index_select(0, idx)
            emb = targets.embeddings.index_select(0, idx)
        out[name] = (TensorData(features.x.index_select(0, idx), y, logits, emb), table)
    return out


@dataclass
class ExportInputs:
    """The data an export scores on (and retrains with), and where it came from."""

    features: Any  # FeatureSet (its whole-cache tensor freed)
    parts: dict[str, Any]  # split_tensors(...)
    cache_dir: Path
    teacher_dir: str | None
    teacher_fingerprint: str | None
    embedding_shape: tuple[int, ...] | None
    dir_log_gains: Any = None  # the run's device impulse responses, when training here may use them (dir_p > 0)
    record: Any = None  # the run's run.json (RunRecord), None for a run without one


def load_inputs(run_dir: Path, spec: Any, proposal: Any, cache_dir: Any, teacher_cache_dir: Any, retrain: bool,
                 qat: bool, on_event: OnEvent | None, dir_folder: Any = None) -> ExportInputs:
    """The run's feature cache (or ``cache_dir``), checked against the run; its teacher cache when retraining or QAT
    needs it; the splits copied out: test and val; all of train when retraining or QAT may run, else only the
    calibration clips of an int8 export."""
    from ..data.cache import load_features

    record = read_run_record(run_dir)
    cache = cache_dir or (record.cache_dir if record is not None else None)
    if cache is None:
        raise NotFoundError(f"{run_dir} has no run.json naming the feature cache the run used; give cache_dir",
                            params=("cache_dir",))
    log(on_event, f"loading the feature cache {cache}")
    features = load_features(cache)
    if features.profile.name != spec.profile.name or tuple(features.profile.shape) != tuple(spec.profile.shape):
        raise CacheError(f"feature cache {cache} has profile {features.profile.name!r} {features.profile.shape} but "
                         f"the run searched with {spec.profile.name!r} {spec.profile.shape}")
    if record is not None and cache_dir is None and record.feature_fingerprint != features.fingerprint:
        raise CacheError(f"feature cache {cache} has fingerprint {features.fingerprint} but the run used "
                         f"{record.feature_fingerprint}: it was rebuilt since; give cache_dir to score on it anyway",
                         params=("cache_dir",))
    teacher_dir = teacher_cache_dir or (record.teacher_cache_dir if record is not None else None)
    teacher_fp = record.teacher_fingerprint if record is not None else None
    targets = None
    if (retrain or qat) and (proposal.distill.uses_teacher_logits or proposal.distill.uses_embeddings):
        from ..data.teacher_cache import load_teacher_targets

        targets = load_teacher_targets(features, teacher_dir)
        teacher_fp = targets.meta.get("teacher_fingerprint")
    subset, names = None, ("train", "val", "test")
    if not (retrain or qat) and spec.budget.param_dtype == "int8":  # only the clips int8 calibrates on
        from ..deploy import CALIBRATION_CLIPS, calibration_sample

        n_train = len(features.split_indices(spec.split)["train"][0])
        subset = {"train": calibration_sample(n_train, CALIBRATION_CLIPS, proposal.train.seed)}
    elif not (retrain or qat):
        names = ("val", "test")
    parts = split_tensors(features, spec.split, targets, names=names, subset=subset)
    features.x = None  # the splits it needs are copied out: free the whole-cache tensor
    gains = None
    if (retrain or qat) and proposal.train.dir_p > 0:  # the bank the run trained with, checked by its fingerprint
        from ..data.impulses import ir_bank_from_record

        gains = ir_bank_from_record(record.dir_bank if record is not None else None, spec.profile, dir_folder).log_gains
    return ExportInputs(features=features, parts=parts, cache_dir=Path(cache),
                        teacher_dir=teacher_dir and str(teacher_dir), teacher_fingerprint=teacher_fp,
                        embedding_shape=tuple(targets.embeddings.shape[1:]) if targets is not None else None,
                        dir_log_gains=gains, record=record)


def retrained(proposal: Any, inputs: ExportInputs, device: str, on_event: OnEvent | None) -> tuple[torch.nn.Module, Any,
                                                                                               Any]:
    """The proposal trained from scratch on train + validation, for its number of epochs: (model, its training
    settings, its projection head's state or None)."""
    from ..models.build import build_student_and_head
    from ..training.loop import TensorData, fit

    tr, va = inputs.parts["train"][0], inputs.parts["val"][0]

    def cat(a: Any, b: Any) -> Any:
        return None if a is None or b is None else torch.cat([a, b])

    all_train = TensorData(cat(tr.x, va.x), cat(tr.y, va.y), cat(tr.teacher_logits, va.teacher_logits),
                           cat(tr.teacher_emb, va.teacher_emb))
    model, head = build_student_and_head(proposal.student, proposal.distill, inputs.embedding_shape)
    train_cfg = proposal.train.replace(device=device)
    task = f"retraining on all of train ({len(all_train)} clips, epochs)"
    emit(on_event, "progress", task=task, done=0, total=train_cfg.epochs)
    result = fit(model, all_train, None, train_cfg, distill=proposal.distill, head=head,
                 dir_log_gains=inputs.dir_log_gains,
                 on_epoch=lambda e, m, s: emit(on_event, "progress", task=task, done=e, total=train_cfg.epochs))
    model.load_state_dict(result.best_state)
    return model, train_cfg, result.head_state


def checkpoint_head(run_dir: Path, row: Mapping[str, Any]) -> Any:
    """The trial's projection head at its best epoch (from its resume state), or None when it is not there."""
    from ..search.runfolder import read_resume_state

    path = row.get("checkpoint_path")
    if not isinstance(path, str) or not path:
        return None
    try:
        return read_resume_state(Path(path) if Path(path).is_absolute() else run_dir / path).get("best_head")
    except Exception:  # noqa: BLE001 - no resume state (moved, pruned): QAT starts from a fresh head
        return None


def from_checkpoint(run_dir: Path, row: Mapping[str, Any], proposal: Any) -> torch.nn.Module:
    from ..models.student import build_student

    model = build_student(proposal.student)
    try:
        model.load_state_dict(load_best_weights(run_dir, row.get("checkpoint_path"), row["trial_id"]))
    except RuntimeError as exc:
        raise DataError(f"the checkpoint of trial {row['trial_id']} does not fit its recorded architecture "
                        f"({str(exc)[:300]})") from None
    return model
