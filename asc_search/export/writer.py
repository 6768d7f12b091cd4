"""Export the best student of a search run: the files a user deploys and numbers they can trust.

``export_run(RUN, OUT)`` takes the completed trial with the best validation macro accuracy within the run's budget
(or the trial named), restores its weights from the trial's best checkpoint (or, with ``retrain=True``, trains the
same architecture, distillation and training settings from scratch on all of train: the search's train and
validation parts together, for the trial's number of epochs), scores it ONCE on the test split, re-checks the
budget and writes, atomically (a temporary folder renamed into place)::

    OUT/student.yaml         architecture, distillation + training settings, complexity, metrics, provenance
    OUT/student.safetensors  the weights (state dict; safetensors never runs code when loaded)
    OUT/student.onnx         the model as ONNX (input "x" [batch, 1, n_mels, n_frames] -> "logits"), checked
                             against the torch model's outputs with onnxruntime before it is written
    OUT/report.md            a short human-readable report

:func:`load_export` reads such a folder back into a ready model (used by ``predict`` and ``bench``).
Nothing here prints; ``log`` (a callable) receives progress messages.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import jsonable, sha256_file
from .._io import provenance as stamp
from ..config import Budget, FeatureProfile
from ..errors import AscSearchError, BudgetError, CacheError, ConfigError, DataError, NotFoundError

__all__ = [
    "EXPORT_FORMAT",
    "STUDENT_YAML",
    "WEIGHTS_FILE",
    "ONNX_FILE",
    "REPORT_FILE",
    "ExportSummary",
    "ExportedStudent",
    "export_run",
    "write_export",
    "export_onnx",
    "load_export",
    "trial_proposal",
    "trial_state_dict",
    "run_info",
    "split_tensors",
]

EXPORT_FORMAT = 1
STUDENT_YAML = "student.yaml"
WEIGHTS_FILE = "student.safetensors"
ONNX_FILE = "student.onnx"
REPORT_FILE = "report.md"
#: onnxruntime's logits must match torch's within this (absolute, scaled by max(1, |logit|max)).
ONNX_TOLERANCE = 1e-3
#: Clips of the test split the ONNX check runs on.
ONNX_CHECK_CLIPS = 64

Log = Callable[[str], None]


def _nolog(_msg: str) -> None:
    return None


# ------------------------------------------------------------------------------------------------ run inputs


def run_info(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's ``run.json`` (what produced it: caches, fingerprints, versions); ``{}`` when absent."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _first(info: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        node: Any = info
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node not in (None, ""):
            return node
    return None


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA (a scalar cell of a trials table that holds nothing)."""
    if value is None:
        return True
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not isinstance(value, (dict, list, tuple)) else False
    except (TypeError, ValueError):
        return False


def trial_proposal(row: Mapping[str, Any]) -> Any:
    """The :class:`asc_search.space.Proposal` (student, distill, train configs) of one trials.parquet row,
    rebuilt from its ``config`` column."""
    from ..search.space import Proposal

    raw = row.get("config") if hasattr(row, "get") else None
    if _missing(raw):
        raise DataError(
            f"trial {row.get('trial_id')!r} has no 'config' in trials.parquet: cannot rebuild its student"
        )
    data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    try:
        return Proposal.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise DataError(f"trial {row.get('trial_id')!r}: its config in trials.parquet is incomplete ({exc})") from None


def _checkpoint_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("best.pt", "model.pt", "checkpoint.pt", "state.pt", "trial.pt"):
            if (path / name).is_file():
                return path / name
        files = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth"))
        if len(files) == 1:
            return files[0]
    raise NotFoundError(f"checkpoint {path} holds no model file (expected one *.pt file)")


def trial_state_dict(run_dir: str | os.PathLike[str], row: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model state dict of a trial's best validation epoch, from the checkpoint the search recorded."""
    raw = row.get("checkpoint_path") if hasattr(row, "get") else None
    if _missing(raw) or raw == "":
        raise NotFoundError(
            f"trial {row.get('trial_id')!r} has no checkpoint recorded in trials.parquet; export it with --retrain"
        )
    path = Path(str(raw))
    if not path.is_absolute():
        path = Path(run_dir) / path
    if not path.exists():
        raise NotFoundError(
            f"checkpoint {path} of trial {row.get('trial_id')!r} is gone (was the Ray experiment moved or "
            "deleted?); export with --retrain instead"
        )
    file = _checkpoint_file(path)
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a corrupt or foreign file
        raise DataError(f"checkpoint {file} cannot be read ({type(exc).__name__}: {exc})") from None
    if isinstance(data, Mapping):
        for key in ("best_state", "model_state", "model"):
            state = data.get(key)
            if isinstance(state, Mapping) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
                return dict(state)
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            return dict(data)
    raise DataError(f"checkpoint {file} holds no model state dict (keys: {list(data)[:10] if isinstance(data, Mapping) else type(data).__name__})")


# ------------------------------------------------------------------------------------------------ results


@dataclass
class ExportSummary:
    """What an export wrote and measured."""

    out_dir: Path
    run_name: str
    trial_id: str
    retrained: bool
    metrics: dict[str, Any]  # test split: asc_search.metrics.score(...)
    complexity: dict[str, Any]  # BudgetReport.to_dict()
    budget_rows: list[tuple[str, int, int, bool]]
    onnx_max_abs_diff: float
    files: list[Path] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
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
        }


# ------------------------------------------------------------------------------------------------ ONNX


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


# ------------------------------------------------------------------------------------------------ writing


def _report_md(record: Mapping[str, Any]) -> str:
    test = record["metrics"]["test"]
    comp = record["complexity"]
    prov = record["provenance"]
    lines = [
        f"# Exported student: trial {prov['trial_id']} of run {prov['run']}",
        "",
        f"Exported {prov['created_utc']} by asc-search {prov['asc_search_version']}"
        + (" (retrained from scratch on all of train)" if prov["retrained"] else " (weights of the trial's best "
           "validation epoch)") + ".",
        "",
        "## Complexity (deployed model)",
        "",
        "| figure | value | limit | ok |",
        "|---|---:|---:|:---:|",
    ]
    for row in comp["rows"]:
        lines.append(f"| {row['figure']} | {row['value']:,} | {row['limit']:,} | {'yes' if row['ok'] else 'NO'} |")
    lines += [
        "",
        f"Parameter bytes at {comp['param_dtype']}; MACs for one clip of shape {comp['input_shape']}. "
        + comp.get("note", ""),
        "",
        "## Test split (scored once)",
        "",
        f"- macro accuracy: **{test['macro_accuracy']:.4f}**  (accuracy {test['accuracy']:.4f}, "
        f"log loss {test['log_loss']:.4f}, {test['n']} clips)",
    ]
    val = record["metrics"].get("validation") or {}
    for kind in ("seen", "unseen"):
        if test.get(f"{kind}_macro_accuracy") is not None:
            lines.append(f"- macro accuracy on {kind} devices: {test[f'{kind}_macro_accuracy']:.4f}")
    if val.get("val_macro_accuracy") is not None:
        lines.append(f"- validation macro accuracy during the search: {val['val_macro_accuracy']:.4f}")
    if test.get("per_device"):
        lines += ["", "| device | seen | accuracy | clips |", "|---|:---:|---:|---:|"]
        for dev, d in test["per_device"].items():
            seen = {True: "seen", False: "unseen", None: "?"}[d.get("seen")]
            lines.append(f"| {dev} | {seen} | {d['acc']:.4f} | {d['n']} |")
    if test.get("per_class"):
        lines += ["", "| class | accuracy |", "|---|---:|"]
        for label, acc in test["per_class"].items():
            lines.append(f"| {label} | {'-' if acc is None else f'{acc:.4f}'} |")
    d, t = record["distillation"], record["training"]
    lines += ["", "## Training", ""]
    if d:
        lines.append(
            f"- distillation: kd_weight {d.get('kd_weight')}, temperature {d.get('temperature')}, "
            f"emb_weight {d.get('emb_weight')} ({d.get('emb_loss')})"
        )
    if t:
        lines.append(f"- training: {t.get('epochs')} epochs, lr {t.get('lr')}, batch size {t.get('batch_size')}")
    lines += [
        f"- ONNX check: max |onnxruntime - torch| = {record['onnx']['max_abs_diff']:.2e} on "
        f"{record['onnx']['check_clips']} test clips",
        "",
        "## Provenance",
        "",
        f"- feature cache fingerprint: {prov.get('feature_fingerprint')} ({prov.get('feature_cache')})",
        f"- teacher fingerprint(s): {prov.get('teacher_fingerprints')}",
        f"- search file sha256: {prov.get('search_file_sha256')}",
        "",
    ]
    return "\n".join(lines)


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
    log: Log = _nolog,
) -> ExportSummary:
    """Score ``model`` once on the test split, re-check ``budget``, and write the export folder ``out``
    atomically. An over-budget model raises BudgetError and writes nothing; an existing ``out`` needs ``force``."""
    import yaml
    from safetensors.torch import save_file

    from .._io import atomic_output_dir
    from .._runtime import resolve_device
    from ..complexity import check_budget, measure
    from ..training.loop import predict
    from ..training.metrics import score

    out = Path(out)
    _refuse_existing(out, force)
    input_shape = (1, *tuple(int(s) for s in test_x.shape[1:]))
    model = model.cpu().eval()
    log(f"re-checking the budget on input {list(input_shape)}")
    report = check_budget(measure(model, input_shape, dtype=budget.param_dtype), budget)
    if not report.passed:
        raise BudgetError(
            f"the student is over budget ({'; '.join(report.failures)}); refusing to export it"
        )
    dev = resolve_device(device)
    log(f"scoring once on the test split ({len(test_y)} clips, {dev.type})")
    logits = predict(model.to(dev), test_x, device=dev)
    model = model.cpu().eval()
    metrics = score(logits, test_y, test_table, labels)
    seen_unseen = {}
    if "device" in getattr(test_table, "columns", ()):
        from ..config import SEEN_DEVICES, UNSEEN_DEVICES
        from ..training.metrics import macro_accuracy

        devices = test_table["device"].astype(str).to_numpy()
        for kind, group in (("seen", SEEN_DEVICES), ("unseen", UNSEEN_DEVICES)):
            mask = np.isin(devices, np.asarray(group))
            if mask.any():
                idx = torch.from_numpy(np.flatnonzero(mask))
                seen_unseen[f"{kind}_macro_accuracy"] = macro_accuracy(logits[idx], test_y[idx], len(labels))
    metrics.update(seen_unseen)

    prov = {**stamp(), **dict(provenance or {})}
    prov.setdefault("retrained", False)
    prov.setdefault("run", None)
    prov.setdefault("trial_id", None)

    with atomic_output_dir(out) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "asc_search.student", "version": str(EXPORT_FORMAT)})
        log("exporting ONNX and checking it with onnxruntime")
        n_check = min(ONNX_CHECK_CLIPS, int(test_x.shape[0]))
        example = test_x[:n_check].float() if n_check else torch.zeros(input_shape)
        diff = export_onnx(model, example, tmp / ONNX_FILE)
        record = jsonable(
            {
                "format": EXPORT_FORMAT,
                "kind": "asc_search.student",
                "model": {
                    "family": "student",
                    "config": student_config.to_dict() if hasattr(student_config, "to_dict") else student_config,
                    "input_shape": list(input_shape),
                    "labels": list(labels),
                    "feature_profile": profile.to_dict(),
                },
                "distillation": distill if distill is not None else {},
                "training": train if train is not None else {},
                "complexity": report.to_dict(),
                "metrics": {"test": metrics, "validation": dict(validation or {})},
                "onnx": {"file": ONNX_FILE, "max_abs_diff": diff, "check_clips": int(example.shape[0]),
                         "input": "x", "output": "logits"},
                "files": {
                    "weights": WEIGHTS_FILE,
                    "onnx": ONNX_FILE,
                    "report": REPORT_FILE,
                    "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                    "onnx_sha256": sha256_file(tmp / ONNX_FILE),
                },
                "provenance": prov,
            }
        )
        (tmp / STUDENT_YAML).write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
        (tmp / REPORT_FILE).write_text(_report_md(record), encoding="utf-8")
    files = [out / STUDENT_YAML, out / WEIGHTS_FILE, out / ONNX_FILE, out / REPORT_FILE]
    return ExportSummary(
        out_dir=out,
        run_name=str(prov.get("run")),
        trial_id=str(prov.get("trial_id")),
        retrained=bool(prov.get("retrained")),
        metrics=record["metrics"]["test"],
        complexity=record["complexity"],
        budget_rows=[tuple(r) for r in report.rows],
        onnx_max_abs_diff=diff,
        files=files,
        extra=dict(seen_unseen),
        record=record,
    )


def _refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise ConfigError(f"export folder {out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"export folder {out} exists and is not a folder; remove it or choose another --out")


# ------------------------------------------------------------------------------------------------ export a run


def split_tensors(
    features: Any, split: Any, targets: Any = None, names: tuple[str, ...] = ("train", "val", "test")
) -> dict[str, Any]:
    """{name: (TensorData, table)} for the splits in ``names`` of a feature cache, validation carved from train as
    the search carves it (:func:`asc_search.data.tau.carve_validation`), teacher targets (when given) aligned by row.
    Only the splits named are copied out of the cache."""
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


def export_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    results_dir: str | os.PathLike[str] | None = None,
    trial_id: str | None = None,
    retrain: bool = False,
    force: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    teacher_cache_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    log: Log = _nolog,
) -> ExportSummary:
    """Export the best feasible trial of run ``run`` (or ``trial_id``) to ``out``. See the module docstring."""
    from ..data.cache import load_features
    from ..models.student import build_student
    from ..results import analysis as R
    from ..search.space import load_space

    out = Path(out)
    _refuse_existing(out, force)  # before any work
    run_dir = R.resolve_run(run, results_dir)
    table = R.load_trials(run_dir)
    search_file = run_dir / R.SEARCH_FILE
    if not search_file.is_file():
        raise NotFoundError(f"{search_file} does not exist: cannot tell the run's budget, profile and split")
    row = R.best_trial(table, budget=R.load_budget(run_dir), trial_id=trial_id).to_dict()
    spec = load_space(search_file)
    budget = spec.budget
    log(f"trial {row['trial_id']}: validation macro accuracy {row['val_macro_accuracy']:.4f}, "
        f"{int(row['param_bytes']):,} bytes, {int(row['macs']):,} MACs")
    proposal = trial_proposal(row)
    info = run_info(run_dir)

    cache = cache_dir or _first(info, "cache_dir", "feature_cache", "features.cache_dir")
    if cache is None:
        raise NotFoundError(f"{run_dir}/run.json does not name the feature cache the run used; pass --cache DIR")
    log(f"loading the feature cache {cache}")
    features = load_features(cache)
    if features.profile.name != spec.profile.name or tuple(features.profile.shape) != tuple(spec.profile.shape):
        raise CacheError(
            f"feature cache {cache} has profile {features.profile.name!r} {features.profile.shape} but the run "
            f"searched with {spec.profile.name!r} {spec.profile.shape}"
        )
    run_fp = _first(info, "feature_fingerprint", "features.fingerprint")
    if run_fp and cache_dir is None and str(run_fp) != str(features.fingerprint):
        raise CacheError(
            f"feature cache {cache} has fingerprint {features.fingerprint} but the run used {run_fp}: it was "
            "rebuilt since; pass --cache to score on it anyway"
        )

    teacher_dir = teacher_cache_dir or _first(info, "teacher_cache_dir", "teacher_cache", "teacher.cache_dir")
    targets = None
    teacher_fps: Any = _first(info, "teacher_fingerprints", "teacher_fingerprint", "teacher.fingerprints")
    needs_teacher = retrain and (proposal.distill.uses_teacher_logits or proposal.distill.uses_embeddings)
    if needs_teacher:
        from ..data.teacher_cache import load_teacher_targets

        targets = load_teacher_targets(features, teacher_dir)
        teacher_fps = teacher_fps or _first(targets.meta, "teacher_fingerprints", "teacher_fingerprint")
    parts = split_tensors(features, spec.split, targets, names=("train", "val", "test") if retrain else ("test",))
    features.x = None  # the splits it needs are copied out: free the whole-cache tensor
    test_data, test_table = parts["test"]

    model = build_student(proposal.student)
    train_cfg = proposal.train
    if retrain:
        from ..training.loop import TensorData, fit

        tr, va = parts["train"][0], parts["val"][0]
        cat = lambda a, b: None if a is None or b is None else torch.cat([a, b])  # noqa: E731
        all_train = TensorData(cat(tr.x, va.x), cat(tr.y, va.y), cat(tr.teacher_logits, va.teacher_logits),
                               cat(tr.teacher_emb, va.teacher_emb))
        head = None
        if proposal.distill.uses_embeddings:
            from ..models.heads import ProjectionHead

            head = ProjectionHead(model.embedding_channels, tuple(targets.embeddings.shape[1:]))
        train_cfg = train_cfg.replace(device=device)
        log(f"retraining from scratch on all of train ({len(all_train)} clips, {train_cfg.epochs} epochs)")
        result = fit(
            model, all_train, None, train_cfg, distill=proposal.distill, head=head,
            on_epoch=lambda e, m, s: log(f"epoch {e}/{train_cfg.epochs}: train loss {m.get('train_loss', float('nan')):.4f}"),
        )
        model.load_state_dict(result.best_state)
    else:
        state = trial_state_dict(run_dir, row)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(
                f"the checkpoint of trial {row['trial_id']!r} does not fit its recorded architecture ({str(exc)[:300]})"
            ) from None

    provenance = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "trial_id": str(row["trial_id"]),
        "retrained": bool(retrain),
        "dataset": _first(info, "dataset_root", "dataset", "features.dataset_root")
        or features.meta.get("dataset_root") or features.meta.get("dataset"),
        "feature_cache": str(Path(cache).resolve()),
        "feature_fingerprint": features.fingerprint,
        "teacher_cache": str(teacher_dir) if teacher_dir else None,
        "teacher_fingerprints": teacher_fps,
        "search_file": str(search_file),
        "search_file_sha256": sha256_file(search_file),
        "split": dataclasses.asdict(spec.split),
        "proposal_params": proposal.params,
    }
    validation = {k: row.get(k) for k in ("val_macro_accuracy", "val_log_loss", "epochs")}
    return write_export(
        out,
        model,
        student_config=proposal.student,
        profile=features.profile,
        labels=tuple(features.labels),
        budget=budget,
        test_x=test_data.x,
        test_y=test_data.y,
        test_table=test_table,
        distill=dataclasses.asdict(proposal.distill),
        train=train_cfg.to_dict(),
        provenance=provenance,
        validation=validation,
        force=force,
        device=device,
        log=log,
    )


# ------------------------------------------------------------------------------------------------ loading


@dataclass
class ExportedStudent:
    """An export folder read back: the model (eval mode, CPU) and what it needs to run."""

    model: torch.nn.Module
    config: Any  # StudentConfig
    labels: tuple[str, ...]
    profile: FeatureProfile
    record: dict[str, Any]
    path: Path

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.record["model"]["input_shape"])


def load_export(export_dir: str | os.PathLike[str]) -> ExportedStudent:
    """Read an export folder (student.yaml + student.safetensors) into a ready model."""
    import yaml
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models.student import StudentConfig, build_student

    path = Path(export_dir)
    meta_file = path / STUDENT_YAML
    if not path.is_dir():
        raise NotFoundError(f"export folder {path} does not exist")
    if not meta_file.is_file():
        raise NotFoundError(f"{path} is not an export folder: it has no {STUDENT_YAML} (make one with `asc-search export`)")
    try:
        record = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{meta_file} is not valid YAML ({exc})") from None
    if not isinstance(record, dict) or record.get("kind") != "asc_search.student":
        raise DataError(f"{meta_file} is not an asc-search student description (kind: asc_search.student expected)")
    if record.get("format") != EXPORT_FORMAT:
        raise DataError(f"{meta_file} has export format {record.get('format')!r}; this asc-search reads {EXPORT_FORMAT}")
    try:
        cfg = StudentConfig.from_dict(record["model"]["config"])
        profile = FeatureProfile.from_dict(record["model"]["feature_profile"])
        labels = tuple(str(x) for x in record["model"]["labels"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{meta_file} lacks model.{exc}") from None
    except AscSearchError as exc:
        raise DataError(f"{meta_file}: {exc}") from None
    weights = path / record.get("files", {}).get("weights", WEIGHTS_FILE)
    if not weights.is_file():
        raise NotFoundError(f"{weights} does not exist (the export is incomplete)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{weights} is not a readable safetensors file ({exc})") from None
    model = build_student(cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{weights} does not fit the architecture in {meta_file} ({str(exc)[:300]})") from None
    return ExportedStudent(model=model.eval(), config=cfg, labels=labels, profile=profile, record=record, path=path)
