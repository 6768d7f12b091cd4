"""Device-specific students (the DCASE 2025 Task 1 device track): one fine-tuned copy of the exported student per
recording device of the training split, the general model staying the fallback for every other device.

For each device with at least ``min_clips`` training clips (fewer: skipped, with a warning), a copy of the general
model (the float32 model the general export deployed) is fine-tuned on that device's training clips with the trial's
losses (its distillation against the teacher cache, its augmentations, its device impulse responses) and training
settings at ``lr * lr_factor`` without warm-up for ``epochs`` epochs; the epoch kept is the best on that device's
validation clips, and the general model itself is kept when no epoch beats it there. Each copy is then exported as the
general model is (:func:`~asc_search.export.export.write_export`: the same precision, int8 calibration on that
device's training clips, the same QAT step, the budget checked on each model: the rule applies per device model) into
``OUT/devices/<device>/``, scored on the whole test split.

:func:`routed_scores` is the report: per device of the test split, the general model's and the device model's test
macro accuracy, and the scores of the routed system (each test clip classified by its device's model, or by the
general model when its device has none).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._progress import OnEvent, log, warn
from ..errors import ConfigError

__all__ = ["DEVICES_DIR", "DEFAULT_MIN_DEVICE_CLIPS", "DEVICE_LR_FACTOR", "DeviceSettings", "device_dir_name",
           "devices_to_fit", "finetune_device", "write_device_models", "routed_scores", "index_device_models"]

DEVICES_DIR = "devices"
#: Training clips a device needs for its own model.
DEFAULT_MIN_DEVICE_CLIPS = 50
#: A device model fine-tunes at the trial's learning rate times this.
DEVICE_LR_FACTOR = 0.3
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class DeviceSettings:
    """How the device models are made."""

    min_clips: int = DEFAULT_MIN_DEVICE_CLIPS  # training clips a device needs for its own model
    epochs: int | None = None  # fine-tuning epochs (None: the trial's)
    lr_factor: float = DEVICE_LR_FACTOR

    def __post_init__(self) -> None:
        if isinstance(self.min_clips, bool) or not isinstance(self.min_clips, int) or self.min_clips < 1:
            raise ConfigError(f"min_device_clips must be a positive integer, got {self.min_clips!r}",
                              params=("min_device_clips",))
        if self.epochs is not None and (isinstance(self.epochs, bool) or not isinstance(self.epochs, int)
                                        or self.epochs < 1):
            raise ConfigError(f"device_epochs must be a positive integer, got {self.epochs!r}", params=("device_epochs",))


def device_dir_name(device: str) -> str:
    """The folder name of a device's model (the device id itself; ConfigError for an id unsafe as a file name)."""
    if not _SAFE.match(str(device)):
        raise ConfigError(f"device id {device!r} cannot name a folder (letters, digits, '.', '_', '-' only)")
    return str(device)


def devices_to_fit(train_table: Any, settings: DeviceSettings, on_event: OnEvent | None
                   ) -> tuple[list[str], dict[str, int]]:
    """(the training split's devices with at least ``min_clips`` clips, sorted; {device skipped: its clips}); a
    warning names each one skipped."""
    counts = train_table["device"].astype(str).value_counts()
    kept, skipped = [], {}
    for dev in sorted(counts.index):
        if counts[dev] < settings.min_clips:
            skipped[dev] = int(counts[dev])
            warn(on_event, f"device {dev}: {int(counts[dev])} training clip(s) < min_device_clips "
                           f"{settings.min_clips}; no model of its own, it uses the general model")
        else:
            kept.append(dev)
    return kept, skipped


def _rows(table: Any, device: str) -> np.ndarray:
    return np.flatnonzero(table["device"].astype(str).to_numpy() == device)


def finetune_device(model: torch.nn.Module, device_id: str, proposal: Any, parts: Mapping[str, Any],
                    settings: DeviceSettings, *, embedding_shape: Any = None, head_state: Any = None,
                    dir_log_gains: Any = None, compute: str = "auto", on_event: OnEvent | None = None
                    ) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """(the device model, its parts {train, val, test} restricted to the device (test: the whole split), the record
    of the fine-tuning). ``parts``: :func:`~asc_search.export.inputs.split_tensors` of the run (train with the
    teacher targets when the trial distils)."""
    from ..models.build import build_student_and_head
    from ..training.inference import predict
    from ..training.loop import fit
    from ..training.metrics import macro_accuracy

    (train, tr_table), (val, va_table) = parts["train"], parts["val"]
    tr_rows, va_rows = _rows(tr_table, device_id), _rows(va_table, device_id)
    dev_train, dev_val = train.subset(tr_rows), val.subset(va_rows) if len(va_rows) else None
    cfg = proposal.train.replace(device=compute, epochs=settings.epochs or proposal.train.epochs,
                                 lr=proposal.train.lr * settings.lr_factor, warmup_epochs=0.0)
    tuned = copy.deepcopy(model)
    _, head = build_student_and_head(proposal.student, proposal.distill, embedding_shape)
    if head is not None and head_state:
        head.load_state_dict(head_state)
    log(on_event, f"device {device_id}: fine-tuning on {len(tr_rows)} training clips for {cfg.epochs} epochs "
                  f"(validation: {len(va_rows)} clips)")
    result = fit(tuned, dev_train, dev_val, cfg, distill=proposal.distill, head=head, dir_log_gains=dir_log_gains)
    record: dict[str, Any] = {"device": device_id, "train_clips": int(len(tr_rows)), "val_clips": int(len(va_rows)),
                              "epochs": cfg.epochs, "lr": cfg.lr, "best_epoch": result.best_epoch}
    tuned.load_state_dict(result.best_state)
    if dev_val is not None:
        n_classes = proposal.student.n_classes
        general_val = macro_accuracy(predict(model, dev_val.x, device=torch.device("cpu")), dev_val.y, n_classes)
        tuned_val = float(result.best_metrics.get("val_macro_accuracy", float("nan")))
        record.update(general_val_macro_accuracy=general_val, val_macro_accuracy=tuned_val)
        if not tuned_val >= general_val:  # no epoch beats the general model on this device: keep it
            tuned, record["kept_general"] = copy.deepcopy(model), True
    else:
        warn(on_event, f"device {device_id}: no validation clips; its model is the last fine-tuning epoch")
    model.cpu().eval()
    tuned.cpu().eval()
    dev_parts = {"train": (dev_train, tr_table.iloc[tr_rows].reset_index(drop=True)),
                 "val": (dev_val, va_table.iloc[va_rows].reset_index(drop=True)) if dev_val is not None else None,
                 "test": parts["test"]}
    return tuned, dev_parts, record


def routed_scores(out: Path, devices: Mapping[str, str], test: Any, test_table: Any, labels: tuple[str, ...],
                  general_metrics: Mapping[str, Any], device_metrics: Mapping[str, Mapping[str, Any]],
                  onnx_file: str) -> dict[str, Any]:
    """The per-device report: ``{"per_device": {device: {n, seen, general, device_model}}, "routed": score of each
    test clip by its device's deployed graph (the general one for a device without a model)}``."""
    from ..deploy import run_onnx
    from ..training.metrics import score

    logits = torch.from_numpy(run_onnx(out / onnx_file, test.x))
    for dev, rel in devices.items():
        rows = _rows(test_table, dev)
        if len(rows):
            logits[torch.from_numpy(rows)] = torch.from_numpy(run_onnx(out / rel / onnx_file, test.x[rows]))
    routed = score(logits, test.y, test_table, labels)
    per_device = {}
    for dev, g in (general_metrics.get("per_device") or {}).items():
        own = (device_metrics.get(dev) or {}).get("per_device", {}).get(dev) if dev in devices else None
        per_device[dev] = {"n": g["n"], "seen": g["seen"], "general": g["macro_accuracy"],
                           "device_model": own["macro_accuracy"] if own else None}
    return {"per_device": per_device,
            "routed": {k: routed.get(k) for k in ("macro_accuracy", "seen_macro_accuracy", "unseen_macro_accuracy",
                                                  "log_loss")}}


def write_device_models(stage: Path, model: torch.nn.Module, proposal: Any, inputs: Any, budget: Any,
                        settings: DeviceSettings, *, qat_epochs: int | str, head_state: Any, compute: str,
                        provenance: Mapping[str, Any], on_event: OnEvent | None) -> dict[str, Any]:
    """Fine-tune and export a model per device into ``stage/devices/<device>/`` (see the module docstring);
    returns ``{"devices": {device: relative folder}, "metrics": {device: test scores}, "records": {device: ...},
    "skipped": {device: training clips}}``."""
    from ..deploy import CALIBRATION_CLIPS, calibration_sample
    from .export import write_export
    from .qat import quantisation_aware

    labels, profile = tuple(inputs.features.labels), inputs.features.profile
    test, test_table = inputs.parts["test"]
    int8 = budget.param_dtype == "int8"
    seed = proposal.train.seed
    kept, skipped = devices_to_fit(inputs.parts["train"][1], settings, on_event)
    out: dict[str, Any] = {"devices": {}, "metrics": {}, "records": {}, "skipped": skipped}
    for dev in kept:
        name = device_dir_name(dev)
        tuned, parts, record = finetune_device(
            model, dev, proposal, inputs.parts, settings, embedding_shape=inputs.embedding_shape,
            head_state=head_state, dir_log_gains=inputs.dir_log_gains, compute=compute, on_event=on_event)
        dev_train = parts["train"][0]
        calibration = dev_train.x[calibration_sample(len(dev_train), CALIBRATION_CLIPS, seed)] if int8 else None
        qat_record = None
        if int8 and qat_epochs != 0 and parts["val"] is not None:
            tuned, qat_record = quantisation_aware(
                tuned, proposal, parts, labels, qat_epochs=qat_epochs, calibration_x=calibration, seed=seed,
                device=compute, embedding_shape=inputs.embedding_shape, dir_log_gains=inputs.dir_log_gains,
                on_event=on_event)
        val = parts["val"]
        summary = write_export(
            stage / DEVICES_DIR / name, tuned, student_config=proposal.student, profile=profile, labels=labels,
            budget=budget, test_x=test.x, test_y=test.y, test_table=test_table, calibration_x=calibration,
            calibration_seed=seed, val=(val[0].x, val[0].y, val[1]) if val is not None else None, qat=qat_record,
            distill=proposal.distill.to_dict(),
            train=proposal.train.replace(epochs=record["epochs"], lr=record["lr"], warmup_epochs=0.0).to_dict(),
            provenance={**provenance, "device": dev, "device_model": record}, device=compute, on_event=on_event)
        out["devices"][dev] = f"{DEVICES_DIR}/{name}"
        out["metrics"][dev] = summary.metrics
        out["records"][dev] = record
    return out


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def index_device_models(stage: Path, made: Mapping[str, Any], report: Mapping[str, Any], settings: DeviceSettings
                        ) -> dict[str, Any]:
    """Add the device models to the general export's ``student.yaml`` (``devices: {device: devices/<device>}``,
    ``device_models``: settings, fine-tuning records, the per-device report) and ``report.md``; returns the record."""
    import yaml

    from .._io import write_text_atomic

    skipped = made["skipped"]
    from .folder import REPORT_FILE, STUDENT_YAML

    path = stage / STUDENT_YAML
    record = yaml.safe_load(path.read_text(encoding="utf-8"))
    record["devices"] = dict(made["devices"])
    record["device_models"] = {
        "min_device_clips": settings.min_clips, "epochs": settings.epochs, "lr_factor": settings.lr_factor,
        "skipped": {k: int(v) for k, v in skipped.items()}, "fine_tuning": dict(made["records"]),
        "report": dict(report)}
    write_text_atomic(path, yaml.safe_dump(record, sort_keys=False))
    lines = ["", "## Device-specific models", "",
             f"One fine-tuned copy per training device with >= {settings.min_clips} training clips (folders "
             "`devices/<device>/`); any other device uses the general model. Test macro accuracy of the deployed "
             "graphs:", "", "| device | seen in training | test clips | general model | device model |",
             "|---|:---:|---:|---:|---:|"]
    for dev, row in report["per_device"].items():
        lines.append(f"| {dev} | {'yes' if row['seen'] else ('no' if row['seen'] is False else '?')} | {row['n']} | "
                     f"{_fmt(row['general'])} | {_fmt(row['device_model'])} |")
    r = report["routed"]
    lines += ["", f"Routed by device (each clip by its device's model, else the general one): macro accuracy "
              f"{_fmt(r['macro_accuracy'])}, seen devices {_fmt(r['seen_macro_accuracy'])}, unseen devices "
              f"{_fmt(r['unseen_macro_accuracy'])} (scored by the general model)."]
    if skipped:
        lines.append("Skipped (too few training clips): " + ", ".join(f"{k} ({v})" for k, v in skipped.items()) + ".")
    report_file = stage / REPORT_FILE
    write_text_atomic(report_file, report_file.read_text(encoding="utf-8") + "\n".join(lines) + "\n")
    return record
