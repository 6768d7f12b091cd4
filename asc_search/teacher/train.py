"""Phase I, step 1: train a teacher preset on the train split of a feature cache (``asc-search teacher train``).

Validation is carved from train by recording location; each epoch scores it, the best checkpoint (validation macro
accuracy, ties -> lower log loss) is kept, and the test split is scored once, at the end, with that checkpoint.
The result is a teacher folder (:mod:`asc_search.teacher.folder`). Everything is checked (the output folder, the
preset, the training settings, the device) before the feature cache is loaded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import provenance
from .._progress import OnEvent, emit, log
from .._runtime import resolve_device
from ..config import SplitConfig
from ..data.cache import load_features, read_manifest
from ..errors import CacheError, ConfigError
from ..training.config import TrainConfig
from ..training.data import TensorData
from ..training.inference import predict
from ..training.loop import FitResult, fit
from ..training.metrics import score
from .folder import check_teacher_out_dir, write_teacher

__all__ = ["TeacherRun", "default_teacher_preset", "default_train_config", "train_teacher"]


def default_teacher_preset(input_shape: Sequence[int]) -> str:
    """The teacher preset made for this input: the preset whose input shape matches, else ``teacher`` for large
    spectrograms (>= 128 mel bins) and ``teacher_quick`` for small ones."""
    from ..models.presets import PRESETS

    shape = tuple(int(v) for v in input_shape)
    for name, preset in PRESETS.items():
        if preset.family == "teacher" and tuple(preset.input_shape[1:]) == shape[-3:]:
            return name
    return "teacher" if shape[-2] >= 128 else "teacher_quick"


def default_train_config(
    input_shape: Sequence[int], epochs: int = 30, seed: int = 0, device: str = "auto", **overrides: Any
) -> TrainConfig:
    """Teacher training settings scaled to the spectrogram size: AdamW, warm-up + cosine, mixup (alpha 0.3),
    Freq-MixStyle (p 0.4, alpha 0.3, as the DCASE 2024 baseline), frequency masking of up to 48/256 of the mel bins,
    time masking up to 10 % of the frames, time roll up to 5 % of the frames."""
    n_mels, n_frames = int(input_shape[-2]), int(input_shape[-1])
    cfg = TrainConfig(
        epochs=epochs,
        lr=2e-3,
        weight_decay=1e-3,
        batch_size=64,
        warmup_epochs=min(3.0, epochs / 5),
        seed=seed,
        device=device,
        mixup_alpha=0.3,
        freq_mixstyle_p=0.4,
        freq_mixstyle_alpha=0.3,
        freq_mask=max(1, round(n_mels * 48 / 256)),
        time_mask=max(1, round(n_frames * 0.1)),
        time_roll=max(1, round(n_frames * 0.05)),
    )
    return cfg.replace(**overrides) if overrides else cfg


def _teacher_config(preset: str, n_classes: int, in_channels: int) -> Any:
    """The TeacherConfig of ``preset`` for these classes and channels (ConfigError for a preset that is no teacher)."""
    from ..models.presets import PRESETS, get_preset

    p = get_preset(preset)
    if p.family != "teacher" or p.config is None:
        teachers = [n for n, q in PRESETS.items() if q.family == "teacher"]
        raise ConfigError(f"preset {preset!r} is not a teacher; teacher presets: {', '.join(teachers)}")
    return dataclasses.replace(p.config, n_classes=n_classes, in_channels=in_channels)


@dataclass
class TeacherRun:
    """What :func:`train_teacher` produced."""

    out_dir: Path
    meta: dict[str, Any]
    metrics: dict[str, Any]
    fit: FitResult = field(repr=False)


def _splits(fs: Any, split: SplitConfig) -> dict[str, tuple[Any, Any, Any]]:
    """{"train", "val", "test"} -> (x, y, table), refusing an empty train or validation split."""
    parts = fs.split(split)
    if len(parts["train"][1]) == 0:
        raise CacheError(f"{fs.cache_dir}: the train split is empty; the teacher has nothing to learn from")
    if len(parts["val"][1]) == 0:
        raise CacheError(
            f"{fs.cache_dir}: the validation split carved from train is empty (val_fraction {split.val_fraction}); "
            "the data set needs more recording locations"
        )
    return parts


def train_teacher(
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    train_config: TrainConfig | None = None,
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    overrides: Mapping[str, Any] | None = None,
    split: SplitConfig | None = None,
    force: bool = False,
    features: Any = None,
    dir_folder: str | os.PathLike | None = None,
    on_event: OnEvent | None = None,
) -> TeacherRun:
    """Train a teacher preset on the train split of the feature cache; see the module docstring.

    ``preset``: default :func:`default_teacher_preset` of the cache's input. ``train_config`` replaces the settings
    of :func:`default_train_config` (built from ``epochs``, ``seed``, ``device`` and ``overrides``, TrainConfig fields
    such as ``{"mixup_alpha": 0.0}``, when it is None). ``split``: how validation is carved (default seeded by
    ``seed``). ``force`` replaces a teacher already in ``out_dir``. ``features`` may pass an already loaded
    :class:`~asc_search.data.cache.FeatureSet` of ``cache_dir``. ``dir_folder``: WAV device impulse responses for
    the ``dir_p`` augmentation (default: the built-in generic bank); the bank is recorded in teacher.json.

    ``on_event`` receives a ``log`` line when training starts and an ``epoch`` event after each epoch
    (``{"task": "teacher", "epoch", "epochs", "train_loss", "val_macro_accuracy", "val_log_loss", "lr",
    "epoch_time_s", ...}``).
    """
    from ..complexity import measure
    from ..models.teacher import build_teacher

    out_dir = Path(out_dir)
    check_teacher_out_dir(out_dir, force)
    if features is not None:
        input_shape, n_labels = tuple(int(v) for v in features.x.shape[1:]), len(features.labels)
    else:  # the manifest says enough to check everything before the (long) load
        manifest = read_manifest(cache_dir)
        input_shape, n_labels = tuple(int(v) for v in manifest["shape"]), len(manifest["labels"])
    preset = preset or default_teacher_preset(input_shape)
    tcfg = _teacher_config(preset, n_labels, input_shape[0])
    cfg = train_config or default_train_config(input_shape, epochs=epochs, seed=seed, device=device, **(overrides or {}))
    dev = resolve_device(cfg.device)
    split = split or SplitConfig(seed=seed)

    fs = features if features is not None else load_features(cache_dir)
    log(on_event, f"training {preset} on {fs.cache_dir} (profile {fs.profile.name}, {len(fs.table)} clips, input "
                  f"{'x'.join(map(str, input_shape))}) for {cfg.epochs} epochs on {dev.type}")
    parts = _splits(fs, split)
    if features is None:
        fs.x = None  # loaded here and now split into train/val/test copies: free the whole-cache tensor
    torch.manual_seed(cfg.seed)
    model = build_teacher(tcfg)
    complexity = measure(model, (1, *input_shape), dtype="float32")  # also checks the model takes this input

    bank = None
    if cfg.dir_p > 0 or dir_folder is not None:
        from ..data.impulses import build_ir_bank

        bank = build_ir_bank(fs.profile, dir_folder)
    (x_tr, y_tr, _), (x_va, y_va, _) = parts["train"], parts["val"]
    result = fit(model, TensorData(x_tr, y_tr), TensorData(x_va, y_va), cfg,
                 on_epoch=_epoch_reporter(cfg.epochs, on_event), dir_log_gains=None if bank is None else bank.log_gains)
    model.load_state_dict(result.best_state)
    metrics = _scores(model, parts, fs.labels, cfg.eval_batch_size, dev, result)
    model.cpu()
    meta = {
        "kind": "asc_search.teacher",
        "preset": preset,
        "model": tcfg.to_dict(),
        "embedding_layer": getattr(model, "embedding_layer", "embedding"),
        "embedding_channels": getattr(model, "embedding_channels", None),
        "input_shape": list(input_shape),
        "labels": list(fs.labels),
        "train_config": cfg.to_dict(),
        "split": dataclasses.asdict(split),
        "dir_bank": bank.to_record() if bank is not None else None,
        "seed": cfg.seed,
        "feature_cache": {"dir": str(Path(fs.cache_dir).resolve()), "fingerprint": fs.fingerprint,
                          "profile": fs.profile.name},
        "complexity": complexity.to_dict(),
        "metrics": _headline(metrics),
        "device": result.device,
        **provenance(),
    }
    meta = write_teacher(out_dir, result.best_state, meta, metrics)
    return TeacherRun(out_dir, meta, metrics, result)


def _epoch_reporter(epochs: int, on_event: OnEvent | None) -> Callable[..., None]:
    """fit's ``on_epoch`` as an ``epoch`` event."""

    def report(epoch: int, metrics: dict[str, Any], state: Any) -> None:
        emit(on_event, "epoch", task="teacher", epochs=epochs, **metrics)

    return report


def _scores(model: torch.nn.Module, parts: dict[str, Any], labels: Sequence[str], batch_size: int,
            device: torch.device, result: FitResult) -> dict[str, Any]:
    """metrics.json: the best checkpoint's validation scores and its one look at the test split (None when the
    cache has no test clips), the split sizes and the per-epoch history."""
    (_, y_tr, _), (x_va, y_va, t_va), (x_te, y_te, t_te) = parts["train"], parts["val"], parts["test"]
    val = score(predict(model, x_va, batch_size, device), y_va, t_va, labels)
    test = score(predict(model, x_te, batch_size, device), y_te, t_te, labels) if len(y_te) else None
    return {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val": val,
        "test": test,
        "split_sizes": {"train": len(y_tr), "val": len(y_va), "test": len(y_te)},
        "history": result.history,
    }


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures teacher.json repeats from metrics.json."""
    val, test = metrics["val"], metrics["test"] or {}
    return {
        "best_epoch": metrics["best_epoch"],
        "val_macro_accuracy": val["macro_accuracy"],
        "val_log_loss": val["log_loss"],
        "test_macro_accuracy": test.get("macro_accuracy"),
        "test_log_loss": test.get("log_loss"),
        "test_seen_macro_accuracy": test.get("seen_macro_accuracy"),
        "test_unseen_macro_accuracy": test.get("unseen_macro_accuracy"),
    }
