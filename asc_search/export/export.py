"""Export the best student of a search run: the files a user deploys (:mod:`asc_search.export.folder`) and numbers
they can trust.

``export_run(RUN, OUT)`` takes THE best trial of the run (:func:`asc_search.search.runfolder.best_trial`:
completed, within the run's budget, best validation macro accuracy) or the trial named, restores its weights from
its best checkpoint (or, with ``retrain=True``, trains the same architecture, distillation and training settings
from scratch on all of train: the search's train and validation parts together, for the trial's number of epochs),
quantises it for an int8 budget, with QAT when ``qat_epochs`` asks (:mod:`asc_search.export.qat`), re-checks the
budget, writes the float32 graph (checked against torch) and the deployed graph at the budget's precision (its weight
bytes measured from the file: :mod:`asc_search.export.deployed`), scores the deployed graph ONCE on the test split
with onnxruntime beside the float32 model, and writes the export folder atomically (a temporary folder renamed into
place). The record says how the trial compares with the run's best reference arm on validation and repeats the
run's warnings (plus the winner's own: near chance, a reference). With ``seeds=N`` the trial's configuration is also
retrained N times on the search's train part (epoch chosen on its validation part,
:func:`asc_search.training.seeds.train_seeds`) and the float32 test macro accuracy is reported as mean ± sd over
those seeds; the exported weights stay those of the search's own run (or of the retraining). The run is read through
:mod:`asc_search.search.runfolder` only. Nothing here prints: progress goes to ``on_event``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import jsonable, sha256_file
from .._io import provenance as stamp
from .._progress import OnEvent, log, warn
from ..config import Budget, FeatureProfile
from ..deploy import CALIBRATION_CLIPS, calibration_sample
from ..errors import ConfigError, NotFoundError
from ..search.runfolder import SEARCH_FILE, load_trials, resolve_run, run_budget, select_trial, trial_proposal
from .deployed import (
    check_measured_bytes,
    deployed_record,
    drop,
    nominal_check,
    score_graph,
    score_torch,
    validation_scores,
)
from .devices import DeviceSettings, index_device_models, routed_scores, write_device_models
from .folder import EXPORT_FORMAT, KIND, ONNX_FILE, ONNX_FP32_FILE, REPORT_FILE, STUDENT_YAML, WEIGHTS_FILE
from .inputs import checkpoint_head, from_checkpoint, load_inputs, retrained
from .qat import quantisation_aware
from .report import report_markdown

__all__ = ["ExportSummary", "write_export", "export_run"]


@dataclass
class ExportSummary:
    """What an export wrote and measured."""

    out_dir: Path
    run_name: str
    trial_id: str
    retrained: bool
    metrics: dict[str, Any]  # test split, the DEPLOYED graph run by onnxruntime: asc_search.training.metrics.score
    complexity: dict[str, Any]  # BudgetReport.to_dict() (the DCASE count and the analytic deployed estimate)
    budget_rows: list[tuple[str, int, int, bool]]
    onnx_max_abs_diff: float  # the float32 graph against torch
    files: list[Path] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # seen_/unseen_macro_accuracy (deployed)
    record: dict[str, Any] = field(default_factory=dict)  # the content of student.yaml
    metrics_fp32: dict[str, Any] = field(default_factory=dict)  # test split, the float32 torch model
    deployed: dict[str, Any] = field(default_factory=dict)  # student.yaml's deployed: block

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "run": self.run_name,
            "trial_id": self.trial_id,
            "retrained": self.retrained,
            "test": self.metrics,
            "test_fp32": self.metrics_fp32,
            "deployed": self.deployed,
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


def _deploy_budget(precision: str | None, budget: Budget, calibration_x: Any) -> Budget:
    """``budget`` at the deployed precision (default: its ``param_dtype``), checked to be one the exporter writes."""
    from ..deploy import check_precision

    precision = check_precision(precision or budget.param_dtype)
    if precision == "int8" and calibration_x is None:
        raise ConfigError("an int8 export needs calibration clips (calibration_x: a sample of training clips)",
                          params=("calibration_x",))
    return dataclasses.replace(budget, param_dtype=precision)  # the bytes that count are those deployed


def _files(tmp: Path, graph: Any) -> dict[str, Any]:
    """The ``files:`` block: names and sha256 of the weights and graphs."""
    files = {"weights": WEIGHTS_FILE, "onnx": ONNX_FILE, "report": REPORT_FILE,
             "weights_sha256": sha256_file(tmp / WEIGHTS_FILE), "onnx_sha256": sha256_file(graph.path)}
    if graph.reference_path != graph.path:
        files.update(onnx_fp32=ONNX_FP32_FILE, onnx_fp32_sha256=sha256_file(graph.reference_path))
    return files


def _summary(out: Path, record: dict[str, Any], report: Any) -> ExportSummary:
    prov, metrics = record["provenance"], record["metrics"]["test"]
    names = [STUDENT_YAML, WEIGHTS_FILE, ONNX_FILE, *([ONNX_FP32_FILE] if "onnx_fp32" in record["files"] else []),
             REPORT_FILE]
    return ExportSummary(
        out_dir=out, run_name=str(prov["run"]), trial_id=str(prov["trial_id"]), retrained=bool(prov["retrained"]),
        metrics=metrics, complexity=record["complexity"], budget_rows=[tuple(r) for r in report.rows],
        onnx_max_abs_diff=record["onnx"]["max_abs_diff"], files=[out / f for f in names],
        extra={k: metrics[k] for k in ("seen_macro_accuracy", "unseen_macro_accuracy") if metrics.get(k) is not None},
        record=record, metrics_fp32=record["metrics"]["test_fp32"], deployed=record["deployed"],
    )


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
    precision: str | None = None,
    calibration_x: torch.Tensor | None = None,
    calibration_seed: int = 0,
    val: tuple[torch.Tensor, torch.Tensor, Any] | None = None,
    qat: Mapping[str, Any] | None = None,
    distill: Any = None,
    train: Any = None,
    provenance: Mapping[str, Any] | None = None,
    validation: Mapping[str, Any] | None = None,
    force: bool = False,
    device: str = "auto",
    evidence: Mapping[str, Any] | None = None,
    on_event: OnEvent | None = None,
) -> ExportSummary:
    """Check ``budget``, write the float32 graph and the deployed graph at ``precision`` (default: the budget's
    ``param_dtype``; int8 calibrates on ``calibration_x``, training clips, drawn with ``calibration_seed``), check
    the deployed graph's measured weight bytes against ``max_param_bytes``, score it with onnxruntime on the test
    split (and on ``val`` = (x, y, table) when given) beside the float32 model, and write the export folder ``out``
    atomically. Over budget (counted or measured): BudgetError, nothing written; an existing ``out`` needs ``force``.
    ``qat``: what the export's QAT step did (recorded). ``evidence``: record keys about how far to trust it
    (``against_reference``, ``warnings``, ``seeds``)."""
    import yaml
    from safetensors.torch import save_file

    from .._io import atomic_output_dir
    from ..deploy import ONNX_CHECK_CLIPS, deploy_model

    out = Path(out)
    _refuse_existing(out, force)
    budget = _deploy_budget(precision, budget, calibration_x)
    precision = budget.param_dtype
    input_shape = (1, *tuple(int(s) for s in test_x.shape[1:]))
    model = model.cpu().eval()
    log(on_event, f"checking the budget on input {list(input_shape)} ({precision})")
    report = nominal_check(model, input_shape, budget)
    log(on_event, f"scoring the float32 model on the test split ({len(test_y)} clips)")
    metrics_fp32 = score_torch(model, test_x, test_y, test_table, labels, device)
    prov = {**stamp(), **dict(provenance or {})}
    for key, default in (("retrained", False), ("run", None), ("trial_id", None)):
        prov.setdefault(key, default)
    with atomic_output_dir(out) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": KIND, "version": str(EXPORT_FORMAT)})
        log(on_event, f"exporting ONNX, deploying it at {precision} and checking it with onnxruntime")
        n_check = min(ONNX_CHECK_CLIPS, int(test_x.shape[0]))
        example = test_x[:n_check].float() if n_check else torch.zeros(input_shape)
        graph = deploy_model(model, tmp, precision, example=example, calibration_x=calibration_x,
                             seed=calibration_seed, name=ONNX_FILE, reference_name=ONNX_FP32_FILE)
        check_measured_bytes(graph, budget)
        log(on_event, f"scoring the deployed {precision} graph on the test split with onnxruntime")
        metrics = score_graph(graph.path, test_x, test_y, test_table, labels)
        record = jsonable({
            "format": EXPORT_FORMAT,
            "kind": KIND,
            "model": {"family": "student", "config": student_config.to_dict(), "input_shape": list(input_shape),
                      "labels": list(labels), "feature_profile": profile.to_dict()},
            "distillation": distill if distill is not None else {},
            "training": train if train is not None else {},
            "complexity": report.to_dict(),
            "deployed": deployed_record(graph, report.to_dict(), budget, qat, exporter="dynamo"),
            "metrics": {"test": metrics, "test_fp32": metrics_fp32, "test_drop": drop(metrics, metrics_fp32),
                        "validation": dict(validation or {}),
                        "validation_split": validation_scores(model, graph, val, labels, device)},
            "onnx": {"file": graph.reference_path.name, "max_abs_diff": graph.onnx_max_abs_diff,
                     "check_clips": int(example.shape[0]), "input": "x", "output": "logits"},
            "files": _files(tmp, graph),
            "provenance": prov,
            **{k: v for k, v in dict(evidence or {}).items() if k in ("against_reference", "warnings", "seeds")},
        })
        (tmp / STUDENT_YAML).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
        (tmp / REPORT_FILE).write_text(report_markdown(record), encoding="utf-8")
    return _summary(out, record, report)


# ------------------------------------------------------------------------------------------------ export a run


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
    qat_epochs: int | str = "auto",
    seeds: int | None = None,
    threads: int | None = None,
    dir_folder: str | os.PathLike[str] | None = None,
    per_device: DeviceSettings | None = None,
    on_event: OnEvent | None = None,
) -> ExportSummary:
    """Export the best trial of run ``run`` (or ``trial_id``) to ``out`` at the budget's precision; ``qat_epochs``
    (int8 only): :mod:`asc_search.export.qat`; ``seeds``: retrain its configuration that many times for a mean ± sd
    of its test score (``threads`` torch threads each, default all cores). ``per_device``: also a fine-tuned model
    per training device (:mod:`asc_search.export.devices`). ``dir_folder``: where the run's device impulse responses
    are now (a run that trained with a folder of them, when it moved). See the module docstring."""
    from ..search.space import load_space
    from .qat import parse_qat_epochs

    out = Path(out)
    _refuse_existing(out, force)  # before any work
    qat_epochs = parse_qat_epochs(qat_epochs)
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
    int8 = spec.budget.param_dtype == "int8"
    if not int8 and qat_epochs not in ("auto", 0):
        raise ConfigError(f"qat_epochs {qat_epochs}: QAT is for int8 exports, and this run's budget stores "
                          f"{spec.budget.param_dtype}", params=("qat_epochs",))
    proposal = trial_proposal(row)
    qat = int8 and qat_epochs != 0
    inputs = load_inputs(run_dir, spec, proposal, cache_dir, teacher_cache_dir, retrain or bool(seeds),
                         qat or per_device is not None, on_event, dir_folder)
    head_state = None
    if retrain:
        model, train_cfg, head_state = retrained(proposal, inputs, device, on_event)
    else:
        model, train_cfg = from_checkpoint(run_dir, row, proposal), proposal.train
        head_state = (checkpoint_head(run_dir, row) if (qat or per_device is not None)
                      and proposal.distill.uses_embeddings else None)
    calibration = None
    if int8:
        train = inputs.parts["train"][0]
        calibration = train.x[calibration_sample(len(train), CALIBRATION_CLIPS, proposal.train.seed)]
    qat_record = None
    if qat:
        model, qat_record = quantisation_aware(
            model, proposal, inputs.parts, tuple(inputs.features.labels), qat_epochs=qat_epochs,
            calibration_x=calibration, seed=proposal.train.seed, device=device,
            embedding_shape=inputs.embedding_shape, head_state=head_state, dir_log_gains=inputs.dir_log_gains,
            on_event=on_event)
    features = inputs.features
    provenance = _provenance(run_dir, row, retrain, inputs, spec, proposal)
    (test, test_table), (val, val_table) = inputs.parts["test"], inputs.parts["val"]
    evidence = _evidence(table, row, spec, inputs, seeds, retrain, device, threads, on_event)
    general = dict(
        model=model, student_config=proposal.student, profile=features.profile, labels=tuple(features.labels),
        budget=spec.budget, test_x=test.x, test_y=test.y, test_table=test_table, calibration_x=calibration,
        calibration_seed=proposal.train.seed, val=(val.x, val.y, val_table), qat=qat_record,
        distill=proposal.distill.to_dict(), train=train_cfg.to_dict(), provenance=provenance,
        validation={k: row.get(k) for k in ("val_macro_accuracy", "val_macro_accuracy_deployed", "val_log_loss",
                                             "epochs") if k in row},
        device=device, evidence=evidence, on_event=on_event,
    )
    if per_device is None:
        return write_export(out, force=force, **general)
    return _with_device_models(out, general, per_device, proposal, inputs, spec.budget, qat_epochs, head_state,
                               device, provenance, on_event)


def _provenance(run_dir: Path, row: Mapping[str, Any], retrain: bool, inputs: Any, spec: Any, proposal: Any
                ) -> dict[str, Any]:
    """student.yaml's ``provenance`` (before the stamp): the run, trial, data, caches and search file."""
    record = inputs.record
    search_file = run_dir / SEARCH_FILE
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "trial_id": str(row["trial_id"]),
        "retrained": bool(retrain),
        "dataset": (record.dataset_root if record is not None else None) or inputs.features.meta.get("dataset_root"),
        "feature_cache": str(inputs.cache_dir.resolve()),
        "feature_fingerprint": inputs.features.fingerprint,
        "teacher_cache": inputs.teacher_dir,
        "teacher_fingerprints": inputs.teacher_fingerprint,
        "search_file": str(search_file),
        "search_file_sha256": sha256_file(search_file),
        "split": dataclasses.asdict(spec.split),
        "proposal_params": proposal.params,
    }


def _evidence(table: Any, row: Mapping[str, Any], spec: Any, inputs: Any, seeds: int | None, retrain: bool,
              device: str, threads: int | None, on_event: OnEvent | None) -> dict[str, Any]:
    """How far to trust the exported trial: against the best reference, the warnings, and (``seeds``) its test
    score over seeds."""
    from ..search.caveats import winner_caveats
    from ..search.runfolder import reference_margin

    labels, record = tuple(inputs.features.labels), inputs.record
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
                           device=device, threads=threads, task=f"trial {row['trial_id']} over seeds",
                           dir_log_gains=inputs.dir_log_gains, on_event=on_event)
        weights = (f"retrained on all of train with seed {first}" if retrain else
                   f"the search's own run of trial {row['trial_id']} (seed {first}, its best validation epoch)")
        out["seeds"] = {"seeds": [r["seed"] for r in runs], "runs": runs, **summarise_runs(runs),
                        "weights": weights,
                        "how": "each seed trained on the search's train part, epoch chosen on its validation part, "
                               "test split scored once per seed (the float32 model)"}
    return out


def _with_device_models(out: Path, general: dict[str, Any], settings: DeviceSettings, proposal: Any, inputs: Any,
                        budget: Budget, qat_epochs: Any, head_state: Any, device: str, provenance: dict[str, Any],
                        on_event: OnEvent | None) -> ExportSummary:
    """The general export and the device models in one folder, written beside ``out`` and renamed into place."""
    import shutil
    import uuid

    from .._io import replace_dir

    stage = out.with_name(f".{out.name}.devices-{uuid.uuid4().hex[:8]}")
    try:
        summary = write_export(stage, **general)
        made = write_device_models(stage, general["model"], proposal, inputs, budget, settings,
                                   qat_epochs=qat_epochs, head_state=head_state, compute=device,
                                   provenance=provenance, on_event=on_event)
        test, test_table = inputs.parts["test"]
        report = routed_scores(stage, made["devices"], test, test_table, tuple(inputs.features.labels),
                               summary.metrics, made["metrics"], ONNX_FILE)
        summary.record = index_device_models(stage, made, report, settings)
        replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    summary.out_dir, summary.files = out, [out / f.relative_to(stage) for f in summary.files]
    summary.extra.update(devices=made["devices"], device_report=report, skipped_devices=made["skipped"])
    return summary
