"""Export the best student of a search run: the files a user deploys (:mod:`asc_search.export.folder`) and numbers
they can trust.

``export_run(RUN, OUT)`` takes THE best trial of the run (:func:`asc_search.search.runfolder.best_trial`:
completed, within the run's budget, best validation macro accuracy) or the trial named, restores its weights from
its best checkpoint (or, with ``retrain=True``, trains the same architecture, distillation and training settings
from scratch on all of train: the search's train and validation parts together, for the trial's number of epochs),
scores it ONCE on the test split, re-checks the budget, checks its ONNX graph against torch, and writes the export
folder atomically (a temporary folder renamed into place). The record says how the trial compares with the run's
best reference arm on validation and repeats the run's warnings (plus the winner's own: near chance, a
reference). With ``seeds=N`` the trial's configuration is also retrained N times on the search's train part
(epoch chosen on its validation part, :func:`asc_search.training.seeds.train_seeds`) and the test macro accuracy is
reported as mean ± sd over those seeds; the exported weights stay those of the search's own run (or of the
retraining). The run is read through
:mod:`asc_search.search.runfolder` only. Nothing here prints: progress goes to ``on_event``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import jsonable, sha256_file
from .._io import provenance as stamp
from .._progress import OnEvent, emit, log, warn
from ..config import Budget, FeatureProfile
from ..errors import BudgetError, CacheError, ConfigError, DataError, NotFoundError
from ..search.runfolder import (
    SEARCH_FILE,
    load_best_weights,
    load_trials,
    read_run_record,
    resolve_run,
    run_budget,
    select_trial,
    trial_proposal,
)
from .folder import EXPORT_FORMAT, KIND, ONNX_FILE, REPORT_FILE, STUDENT_YAML, WEIGHTS_FILE
from .onnx import ONNX_CHECK_CLIPS, export_onnx
from .report import report_markdown

__all__ = ["ExportSummary", "write_export", "export_run", "split_tensors"]


@dataclass
class ExportSummary:
    """What an export wrote and measured."""

    out_dir: Path
    run_name: str
    trial_id: str
    retrained: bool
    metrics: dict[str, Any]  # test split: asc_search.training.metrics.score(...)
    complexity: dict[str, Any]  # BudgetReport.to_dict()
    budget_rows: list[tuple[str, int, int, bool]]
    onnx_max_abs_diff: float
    files: list[Path] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # seen_/unseen_macro_accuracy
    record: dict[str, Any] = field(default_factory=dict)  # the content of student.yaml

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "run": self.run_name,
            "trial_id": self.trial_id,
            "retrained": self.retrained,
            "test": self.metrics,
            "complexity": self.complexity,
            "onnx_max_abs_diff": self.onnx_max_abs_diff,
            "files": [str(p) for p in self.files],
            **self.extra,
            **{k: self.record.get(k) for k in ("against_reference", "warnings", "seeds") if k in self.record},
        }


# ------------------------------------------------------------------------------------------------ writing


def _refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ConfigError(f"export folder {out} already exists; replace it with force", params=("force",))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"export folder {out} exists and is not a folder; remove it or choose another out",
                          params=("out",))


def _score_test(model: torch.nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, test_table: Any,
                labels: tuple[str, ...], device: str) -> tuple[dict[str, Any], dict[str, float]]:
    """The test scores (asc_search.training.metrics.score: seen / unseen devices as macro accuracy) and those two."""
    from .._runtime import resolve_device
    from ..training.loop import predict
    from ..training.metrics import score

    dev = resolve_device(device)
    logits = predict(model.to(dev), test_x, device=dev)
    model.cpu().eval()
    metrics = score(logits, test_y, test_table, labels)
    seen_unseen = {k: metrics[k] for k in ("seen_macro_accuracy", "unseen_macro_accuracy") if metrics.get(k) is not None}
    return metrics, seen_unseen


def write_export(
    out: str | os.PathLike[str],
    model: torch.nn.Module,
    *,
    student_config: Any,
    profile: FeatureProfile,
    labels: tuple[str, ...],
    budget: Budget,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    test_table: Any,
    distill: Any = None,
    train: Any = None,
    provenance: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    force: bool = False,
    device: str = "auto",
    evidence: Mapping[str, Any] | None = None,
    on_event: OnEvent | None = None,
) -> ExportSummary:
    """Score ``model`` once on the test split, re-check ``budget``, and write the export folder ``out``
    atomically. An over-budget model raises BudgetError and writes nothing; an existing ``out`` needs ``force``.
    ``evidence``: record keys about how far to trust it (``against_reference``, ``warnings``, ``seeds``)."""
    import yaml
    from safetensors.torch import save_file

    from .._io import atomic_output_dir
    from ..complexity import check_budget, measure

    out = Path(out)
    _refuse_existing(out, force)
    input_shape = (1, *tuple(int(s) for s in test_x.shape[1:]))
    model = model.cpu().eval()
    log(on_event, f"re-checking the budget on input {list(input_shape)}")
    report = check_budget(measure(model, input_shape, dtype=budget.param_dtype), budget)
    if not report.passed:
        raise BudgetError(f"the student is over budget ({'; '.join(report.failures)}); refusing to export it")
    log(on_event, f"scoring once on the test split ({len(test_y)} clips)")
    metrics, seen_unseen = _score_test(model, test_x, test_y, test_table, labels, device)
    prov = {**stamp(), **dict(provenance or {})}
    for key, default in (("retrained", False), ("run", None), ("trial_id", None)):
        prov.setdefault(key, default)
    with atomic_output_dir(out) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": KIND, "version": str(EXPORT_FORMAT)})
        log(on_event, "exporting ONNX and checking it with onnxruntime")
        n_check = min(ONNX_CHECK_CLIPS, int(test_x.shape[0]))
        example = test_x[:n_check].float() if n_check else torch.zeros(input_shape)
        diff = export_onnx(model, example, tmp / ONNX_FILE)
        record = jsonable({
            "format": EXPORT_FORMAT,
            "kind": KIND,
            "model": {"family": "student", "config": student_config.to_dict(), "input_shape": list(input_shape),
                      "labels": list(labels), "feature_profile": profile.to_dict()},
            "distillation": distill if distill is not None else {},
            "training": train if train is not None else {},
            "complexity": report.to_dict(),
            "metrics": {"test": metrics, "validation": dict(validation or {})},
            "onnx": {"file": ONNX_FILE, "max_abs_diff": diff, "check_clips": int(example.shape[0]), "input": "x",
                     "output": "logits"},
            "files": {"weights": WEIGHTS_FILE, "onnx": ONNX_FILE, "report": REPORT_FILE,
                      "weights_sha256": sha256_file(tmp / WEIGHTS_FILE), "onnx_sha256": sha256_file(tmp / ONNX_FILE)},
            "provenance": prov,
            **{k: v for k, v in dict(evidence or {}).items() if k in ("against_reference", "warnings", "seeds")},
        })
        (tmp / STUDENT_YAML).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
        (tmp / REPORT_FILE).write_text(report_markdown(record), encoding="utf-8")
    return ExportSummary(
        out_dir=out, run_name=str(prov["run"]), trial_id=str(prov["trial_id"]), retrained=bool(prov["retrained"]),
        metrics=record["metrics"]["test"], complexity=record["complexity"], budget_rows=[tuple(r) for r in report.rows],
        onnx_max_abs_diff=diff, files=[out / f for f in (STUDENT_YAML, WEIGHTS_FILE, ONNX_FILE, REPORT_FILE)],
        extra=dict(seen_unseen), record=record,
    )


# ------------------------------------------------------------------------------------------------ export a run


def split_tensors(
    features: Any, split: Any, targets: Any = None, names: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, Any]:
    """{name: (TensorData, table)} for the splits in ``names`` of a feature cache, validation carved from train as
    the search carves it, teacher targets (when given) aligned by row. Only the splits named are copied out of the
    cache."""
    from ..training.loop import TensorData

    out = {}
    for name, (rows, table) in features.split_indices(split).items():
        if name not in names:
            continue
        idx = torch.from_numpy(rows)
        y = torch.from_numpy(table["label"].to_numpy(dtype=np.int64, copy=True))
        logits = emb = None
        if targets is not None:
            logits = targets.logits.index_select(0, idx)
            emb = targets.embeddings.index_select(0, idx)
        out[name] = (TensorData(features.x.index_select(0, idx), y, logits, emb), table)
    return out


@dataclass
class _Inputs:
    """The data an export scores on (and retrains with), and where it came from."""

    features: Any  # FeatureSet (its whole-cache tensor freed)
    parts: dict[str, Any]  # split_tensors(...)
    cache_dir: Path
    teacher_dir: str | None
    teacher_fingerprint: str | None
    embedding_shape: tuple[int, ...] | None


def _load_inputs(run_dir: Path, spec: Any, proposal: Any, cache_dir: Any, teacher_cache_dir: Any, train_parts: bool,
                 on_event: OnEvent | None) -> _Inputs:
    """The run's feature cache (or ``cache_dir``), checked against the run; its teacher cache when training needs
    it; the splits copied out (test; train + val too when ``train_parts``: retraining, or seeds)."""
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
    if train_parts and (proposal.distill.uses_teacher_logits or proposal.distill.uses_embeddings):
        from ..data.teacher_cache import load_teacher_targets

        targets = load_teacher_targets(features, teacher_dir)
        teacher_fp = targets.meta.get("teacher_fingerprint")
    parts = split_tensors(features, spec.split, targets, names=("train", "val", "test") if train_parts else ("test",))
    features.x = None  # the splits it needs are copied out: free the whole-cache tensor
    return _Inputs(features=features, parts=parts, cache_dir=Path(cache), teacher_dir=teacher_dir and str(teacher_dir),
                   teacher_fingerprint=teacher_fp,
                   embedding_shape=tuple(targets.embeddings.shape[1:]) if targets is not None else None)


def _retrained(proposal: Any, inputs: _Inputs, device: str, on_event: OnEvent | None) -> tuple[torch.nn.Module, Any]:
    """The proposal trained from scratch on train + validation, for its number of epochs."""
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
                 on_epoch=lambda e, m, s: emit(on_event, "progress", task=task, done=e, total=train_cfg.epochs))
    model.load_state_dict(result.best_state)
    return model, train_cfg


def _from_checkpoint(run_dir: Path, row: Mapping[str, Any], proposal: Any) -> torch.nn.Module:
    from ..models.student import build_student

    model = build_student(proposal.student)
    try:
        model.load_state_dict(load_best_weights(run_dir, row.get("checkpoint_path"), row["trial_id"]))
    except RuntimeError as exc:
        raise DataError(f"the checkpoint of trial {row['trial_id']} does not fit its recorded architecture "
                        f"({str(exc)[:300]})") from None
    return model


def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    results_dir: str | os.PathLike[str] | None = None,
    trial_id: Any = None,
    retrain: bool = False,
    force: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    teacher_cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    seeds: int | None = None,
    threads: int | None = None,
    on_event: OnEvent | None = None,
) -> ExportSummary:
    """Export the best trial of run ``run`` (or ``trial_id``) to ``out``; ``seeds``: retrain its configuration that
    many times for a mean ± sd of its test score (``threads`` torch threads each, default all cores). See the module
    docstring."""
    from ..search.space import load_space

    out = Path(out)
    _refuse_existing(out, force)  # before any work
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}", params=("seeds",))
    run_dir = resolve_run(run, results_dir)
    table = load_trials(run_dir)
    row = select_trial(table, trial_id=trial_id, budget=run_budget(run_dir)).to_dict()
    search_file = run_dir / SEARCH_FILE
    if not search_file.is_file():
        raise NotFoundError(f"{search_file} does not exist: cannot tell the run's budget, profile and split")
    spec = load_space(search_file)
    log(on_event, f"trial {row['trial_id']}: validation macro accuracy {row['val_macro_accuracy']:.4f}, "
                  f"{int(row['param_bytes']):,} bytes, {int(row['macs']):,} MACs")
    proposal = trial_proposal(row)
    inputs = _load_inputs(run_dir, spec, proposal, cache_dir, teacher_cache_dir, retrain or bool(seeds), on_event)
    if retrain:
        model, train_cfg = _retrained(proposal, inputs, device, on_event)
    else:
        model, train_cfg = _from_checkpoint(run_dir, row, proposal), proposal.train
    record = read_run_record(run_dir)
    features = inputs.features
    provenance = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "trial_id": str(row["trial_id"]),
        "retrained": bool(retrain),
        "dataset": (record.dataset_root if record is not None else None) or features.meta.get("dataset_root"),
        "feature_cache": str(inputs.cache_dir.resolve()),
        "feature_fingerprint": features.fingerprint,
        "teacher_cache": inputs.teacher_dir,
        "teacher_fingerprints": inputs.teacher_fingerprint,
        "search_file": str(search_file),
        "search_file_sha256": sha256_file(search_file),
        "split": dataclasses.asdict(spec.split),
        "proposal_params": proposal.params,
    }
    test, test_table = inputs.parts["test"]
    evidence = _evidence(run_dir, table, row, spec, inputs, seeds, retrain, device, threads, on_event)
    return write_export(
        out, model, student_config=proposal.student, profile=features.profile, labels=tuple(features.labels),
        budget=spec.budget, test_x=test.x, test_y=test.y, test_table=test_table,
        distill=proposal.distill.to_dict(), train=train_cfg.to_dict(), provenance=provenance,
        validation={k: row.get(k) for k in ("val_macro_accuracy", "val_log_loss", "epochs")},
        force=force, device=device, evidence=evidence, on_event=on_event,
    )


def _evidence(run_dir: Path, table: Any, row: Mapping[str, Any], spec: Any, inputs: _Inputs, seeds: int | None,
              retrain: bool, device: str, threads: int | None, on_event: OnEvent | None) -> dict[str, Any]:
    """How far to trust the exported trial: against the best reference, the warnings, and (``seeds``) its test
    score over seeds."""
    from ..search.caveats import winner_caveats
    from ..search.runfolder import reference_margin

    labels = tuple(inputs.features.labels)
    record = read_run_record(run_dir)
    margin = reference_margin(table, row, spec.budget)
    if margin is not None:
        log(on_event, f"trial {row['trial_id']}: {margin['text']}")
    warnings = list(dict.fromkeys([*(record.warnings if record else []), *winner_caveats(row, len(labels))]))
    for message in warnings:
        warn(on_event, message)
    out: dict[str, Any] = {"against_reference": margin, "warnings": warnings}
    if seeds:
        from ..training.seeds import summarise_runs, train_seeds

        proposal = trial_proposal(row)
        first = int(proposal.train.seed)
        runs = train_seeds(proposal.student, proposal.distill, proposal.train, inputs.parts,
                           list(range(first, first + seeds)), labels=labels, embedding_shape=inputs.embedding_shape,
                           device=device, threads=threads, task=f"trial {row['trial_id']} over seeds", on_event=on_event)
        weights = (f"retrained on all of train with seed {first}" if retrain else
                   f"the search's own run of trial {row['trial_id']} (seed {first}, its best validation epoch)")
        out["seeds"] = {"seeds": [r["seed"] for r in runs], "runs": runs, **summarise_runs(runs),
                        "weights": weights,
                        "how": "each seed trained on the search's train part, epoch chosen on its validation part, "
                               "test split scored once per seed"}
    return out
