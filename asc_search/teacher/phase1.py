"""Phase I: train a teacher on the feature cache, embed every clip with it (or an ensemble), import external targets.

A teacher folder (``asc-search teacher train CACHE_DIR --out TEACHER_DIR``)::

    TEACHER_DIR/teacher.pt     the best checkpoint's state dict (loads with torch.load(..., weights_only=True))
    TEACHER_DIR/teacher.json   preset + architecture, training and split settings, seed, feature cache fingerprint,
                               metrics, complexity, the checkpoint's sha256 fingerprint, versions
    TEACHER_DIR/metrics.json   validation (best epoch) and test metrics: macro accuracy, log loss, per class,
                               per device with seen / unseen marked; the per-epoch history

The test split is scored once, at the end, with the checkpoint chosen on the location-disjoint validation split.
The embedding is the teacher's second-to-last-layer feature map (before the classifier), average-pooled to a small
grid (default 1 x 1: a vector of C values; ``pool=None`` keeps it spatial). See :mod:`asc_search.data.teacher_cache`
for the cache's format.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._io import atomic_output_dir, fingerprint_file, fingerprint_json, provenance, write_json_atomic
from .._progress import OnEvent, emit, progress
from .._runtime import ray_session, resolve_device, torch_threads
from ..config import SplitConfig
from ..data.cache import load_features
from ..data.teacher_cache import DEFAULT_SHARD_ROWS, import_teacher_cache, teacher_cache_path, write_teacher_cache
from ..errors import CacheError, ConfigError, NotFoundError
from ..training.loop import FitResult, TensorData, TrainConfig, fit, predict
from ..training.metrics import score

__all__ = [
    "TEACHER_FILE",
    "TEACHER_META",
    "METRICS_FILE",
    "EMBEDDING_MODES",
    "TeacherRun",
    "LoadedTeacher",
    "check_teacher_out_dir",
    "default_teacher_preset",
    "default_train_config",
    "train_teacher",
    "load_teacher",
    "embed_features",
    "embed_shard",
    "import_teacher",
]

TEACHER_FILE = "teacher.pt"
TEACHER_META = "teacher.json"
METRICS_FILE = "metrics.json"
EMBEDDING_MODES = ("first", "concat")


# ------------------------------------------------------------------------------------------------- training
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


def _teacher_config(preset: str, n_classes: int, in_channels: int) -> tuple[Any, str]:
    """(TeacherConfig of ``preset`` for these classes and channels, preset name)."""
    from ..models.presets import get_preset

    p = get_preset(preset)
    if p.family != "teacher" or p.config is None:
        from ..models.presets import PRESETS

        teachers = [n for n, q in PRESETS.items() if q.family == "teacher"]
        raise ConfigError(f"preset {preset!r} is not a teacher; teacher presets: {', '.join(teachers)}")
    return dataclasses.replace(p.config, n_classes=n_classes, in_channels=in_channels), preset


@dataclass
class TeacherRun:
    """What :func:`train_teacher` produced."""

    out_dir: Path
    meta: dict[str, Any]
    metrics: dict[str, Any]
    fit: FitResult = field(repr=False)


def check_teacher_out_dir(out_dir: Path, force: bool, what: str = "--out folder") -> None:
    """ConfigError unless ``out_dir`` is absent or empty, or ``force`` is set and it holds a teacher."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not force:
            raise ConfigError(f"{out_dir}: already exists and is not empty; choose another {what} or pass --force")
        if not (out_dir / TEACHER_META).is_file() and out_dir.is_dir():
            raise ConfigError(f"{out_dir}: exists and does not hold a teacher; refusing to replace it even with --force")


def train_teacher(
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    preset: str | None = None,
    train_config: TrainConfig | None = None,
    epochs: int = 30,
    seed: int = 0,
    device: str = "auto",
    split: SplitConfig | None = None,
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
    force: bool = False,
    features: Any = None,
) -> TeacherRun:
    """Train a teacher preset on the train split of the feature cache; see the module docstring.

    ``train_config`` overrides everything of :func:`default_train_config` (``epochs``, ``seed`` and ``device`` are
    used only when it is None). ``on_epoch(epoch, metrics)`` reports progress (it cannot stop the run).
    ``features`` may pass an already loaded :class:`~asc_search.data.cache.FeatureSet` of ``cache_dir``.
    """
    from ..complexity import measure
    from ..models.teacher import build_teacher

    out_dir = Path(out_dir)
    check_teacher_out_dir(out_dir, force, "--out folder")
    fs = features if features is not None else load_features(cache_dir)
    split = split or SplitConfig(seed=seed)
    parts = fs.split(split)
    (x_tr, y_tr, _), (x_va, y_va, t_va), (x_te, y_te, t_te) = parts["train"], parts["val"], parts["test"]
    if len(y_tr) == 0:
        raise CacheError(f"{fs.cache_dir}: the train split is empty; the teacher has nothing to learn from")
    if len(y_va) == 0:
        raise CacheError(
            f"{fs.cache_dir}: the validation split carved from train is empty (val_fraction {split.val_fraction}); "
            "the data set needs more recording locations"
        )
    input_shape = tuple(int(v) for v in fs.x.shape[1:])
    if features is None:
        fs.x = None  # loaded here and now split into train/val/test copies: free the whole-cache tensor
    preset = preset or default_teacher_preset(input_shape)
    tcfg, preset = _teacher_config(preset, len(fs.labels), input_shape[0])
    cfg = train_config or default_train_config(input_shape, epochs=epochs, seed=seed, device=device)
    torch.manual_seed(cfg.seed)
    model = build_teacher(tcfg)
    complexity = measure(model, (1, *input_shape), dtype="float32")  # also checks the model takes this input

    def _cb(epoch: int, m: dict[str, Any], state: dict[str, Any]) -> bool:
        if on_epoch is not None:
            on_epoch(epoch, m)
        return False

    result = fit(model, TensorData(x_tr, y_tr), TensorData(x_va, y_va), cfg, on_epoch=_cb)
    model.load_state_dict(result.best_state)
    dev = resolve_device(cfg.device)
    val_logits = predict(model, x_va, cfg.eval_batch_size, dev)
    val_metrics = score(val_logits, y_va, t_va, fs.labels)
    test_metrics = None
    if len(y_te):
        test_logits = predict(model, x_te, cfg.eval_batch_size, dev)  # the one look at the test split
        test_metrics = score(test_logits, y_te, t_te, fs.labels)
    model.cpu()

    metrics = {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "val": val_metrics,
        "test": test_metrics,
        "split_sizes": {"train": len(y_tr), "val": len(y_va), "test": len(y_te)},
        "history": result.history,
    }
    meta: dict[str, Any] = {
        "kind": "asc_search.teacher.phase1",
        "preset": preset,
        "model": tcfg.to_dict(),
        "embedding_layer": getattr(model, "embedding_layer", "embedding"),
        "embedding_channels": getattr(model, "embedding_channels", None),
        "input_shape": list(input_shape),
        "labels": list(fs.labels),
        "train_config": cfg.to_dict(),
        "split": dataclasses.asdict(split),
        "seed": cfg.seed,
        "feature_cache": {
            "dir": str(Path(fs.cache_dir).resolve()),
            "fingerprint": fs.fingerprint,
            "profile": fs.profile.name,
        },
        "complexity": complexity.to_dict(),
        "metrics": {
            "best_epoch": result.best_epoch,
            "val_macro_accuracy": val_metrics["macro_accuracy"],
            "val_log_loss": val_metrics["log_loss"],
            "test_macro_accuracy": test_metrics["macro_accuracy"] if test_metrics else None,
            "test_log_loss": test_metrics["log_loss"] if test_metrics else None,
        },
        "device": result.device,
        **provenance(),
    }
    with atomic_output_dir(out_dir) as tmp:
        torch.save(result.best_state, tmp / TEACHER_FILE)
        meta["checkpoint_fingerprint"] = fingerprint_file(tmp / TEACHER_FILE)
        write_json_atomic(tmp / METRICS_FILE, metrics)
        write_json_atomic(tmp / TEACHER_META, meta)
    return TeacherRun(out_dir, meta, metrics, result)


# ------------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedTeacher:
    model: torch.nn.Module
    meta: dict[str, Any]
    dir: Path

    @property
    def fingerprint(self) -> str:
        return str(self.meta["checkpoint_fingerprint"])


def _read_teacher_meta(teacher_dir: Path) -> dict[str, Any]:
    import json

    path = teacher_dir / TEACHER_META
    if not teacher_dir.is_dir():
        raise NotFoundError(f"{teacher_dir}: no such teacher folder; train one with `asc-search teacher train`")
    if not path.is_file():
        raise NotFoundError(f"{teacher_dir}: not a teacher folder (no {TEACHER_META})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: unreadable ({exc})") from None
    for key in ("model", "checkpoint_fingerprint", "input_shape", "labels"):
        if key not in meta:
            raise CacheError(f"{path}: missing key {key!r}; retrain the teacher")
    return meta


def load_teacher(teacher_dir: str | os.PathLike) -> LoadedTeacher:
    """The trained teacher of ``teacher_dir`` (on the CPU, eval mode). The checkpoint must match the fingerprint
    recorded in teacher.json (CacheError otherwise) and loads with ``weights_only=True``."""
    from ..models.teacher import build_teacher

    teacher_dir = Path(teacher_dir)
    meta = _read_teacher_meta(teacher_dir)
    ckpt = teacher_dir / TEACHER_FILE
    if not ckpt.is_file():
        raise NotFoundError(f"{teacher_dir}: {TEACHER_FILE} is missing")
    actual = fingerprint_file(ckpt)
    if actual != meta["checkpoint_fingerprint"]:
        raise CacheError(
            f"{ckpt}: its fingerprint {actual} differs from {meta['checkpoint_fingerprint']} recorded in "
            f"{TEACHER_META} (the checkpoint was replaced or damaged)"
        )
    model = build_teacher(meta["model"])
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is a cache problem for the user
        raise CacheError(f"{ckpt}: cannot be loaded into the recorded architecture ({exc})") from None
    model.eval()
    return LoadedTeacher(model, meta, teacher_dir)


# ------------------------------------------------------------------------------------------------ embedding
def _pool(fmap: torch.Tensor, pool: tuple[int, int] | None) -> torch.Tensor:
    return fmap if pool is None else F.adaptive_avg_pool2d(fmap, pool)


def embed_shard(
    payload: dict[str, Any], x: np.ndarray | torch.Tensor, num_threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Logits [n, K] (mean over the teachers) and embeddings [n, C, H, W] of one shard of spectrograms.

    ``payload``: {"teachers": [(model config dict, state dict), ...], "pool": (H, W) or None, "embedding": "first" |
    "concat", "batch_size", "device"}. Pure function of its inputs, run in-process or as a Ray task, so both
    produce the same numbers.
    """
    with torch_threads(num_threads):
        return _embed_shard(payload, x)


def _embed_shard(payload: dict[str, Any], x: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from ..models.teacher import build_teacher

    device = resolve_device(payload.get("device", "cpu"))
    xt = torch.as_tensor(x)
    pool = tuple(payload["pool"]) if payload.get("pool") is not None else None
    logits_sum = None
    embs = []
    for i, (config, state) in enumerate(payload["teachers"]):
        model = build_teacher(config)
        model.load_state_dict(state)
        model.to(device)
        if i == 0 or payload["embedding"] == "concat":
            lg_t, emb = predict(model, xt, payload["batch_size"], device, embedding=lambda f: _pool(f, pool))
            embs.append(emb)
        else:
            lg_t = predict(model, xt, payload["batch_size"], device)
        logits_sum = lg_t if logits_sum is None else logits_sum + lg_t
    n_teachers = len(payload["teachers"])
    logits = logits_sum / n_teachers if n_teachers > 1 else logits_sum
    if len(embs) > 1:
        if len({tuple(e.shape[2:]) for e in embs}) > 1:
            raise ConfigError(
                "--embedding concat needs teacher feature maps of one spatial size; pool them to a common grid"
            )
        emb_t = torch.cat(embs, dim=1)
    else:
        emb_t = embs[0]
    return logits.numpy(), emb_t.contiguous().numpy()


def _shards(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + shard_rows)) for lo in range(0, max(n, 1), shard_rows)] if n else []


def embed_features(
    cache_dir: str | os.PathLike,
    teacher_dirs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    embedding: str = "first",
    pool: tuple[int, int] | None = (1, 1),
    batch_size: int = 256,
    device: str = "auto",
    address: str | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    num_threads: int = 0,
    on_event: OnEvent | None = None,
    features: Any = None,
) -> Path:
    """Write the teacher cache for every clip of the feature cache (default ``CACHE_DIR-teacher``, beside it).

    Several teachers: their logits are averaged; the embedding is the first teacher's (``embedding="first"``) or
    the channel-wise concatenation of all (``"concat"``). With ``address`` the shards run as Ray tasks on that
    cluster (the teachers' weights go to the object store once); the files are the same as a local run's.
    ``num_threads``: torch threads for a local run (0 = all cores). ``on_event`` receives ``progress`` events (shards).
    """
    if embedding not in EMBEDDING_MODES:
        raise ConfigError(f"--embedding must be one of {', '.join(EMBEDDING_MODES)}, got {embedding!r}")
    if not teacher_dirs:
        raise ConfigError("give at least one --teacher folder")
    if pool is not None and (len(pool) != 2 or any(int(p) <= 0 for p in pool)):
        raise ConfigError(f"pool must be two positive integers (H, W) or None for spatial, got {pool!r}")
    if batch_size <= 0 or shard_rows <= 0:
        raise ConfigError(f"batch_size and shard_rows must be positive, got {batch_size} and {shard_rows}")
    fs = features if features is not None else load_features(cache_dir)
    teachers = [load_teacher(d) for d in teacher_dirs]
    input_shape = [int(v) for v in fs.x.shape[1:]]
    for t in teachers:
        if list(t.meta["labels"]) != list(fs.labels):
            raise CacheError(f"{t.dir}: the teacher's labels {t.meta['labels']} differ from the feature cache's {list(fs.labels)}")
        if [int(v) for v in t.meta["input_shape"]] != input_shape:
            raise CacheError(
                f"{t.dir}: the teacher was trained on input {t.meta['input_shape']}, the feature cache holds "
                f"{input_shape} (profile {fs.profile.name}); use a teacher of this profile"
            )
    dev = resolve_device(device)
    payload = {
        "teachers": [(t.meta["model"], t.model.state_dict()) for t in teachers],
        "pool": list(pool) if pool is not None else None,
        "embedding": embedding,
        "batch_size": batch_size,
        "device": str(dev) if address is None else "auto",
    }
    n = int(fs.x.shape[0])
    shards = _shards(n, shard_rows)
    if address is None:
        results = _embed_local(payload, fs.x, shards, num_threads, on_event)
    else:
        results = _embed_ray(payload, fs.x, shards, address, on_event)
    logits = np.concatenate([r[0] for r in results]) if results else np.zeros((0, len(fs.labels)), np.float32)
    embs = np.concatenate([r[1] for r in results]) if results else np.zeros((0, 1, 1, 1), np.float32)

    fps = [t.fingerprint for t in teachers]
    layers = [t.meta.get("embedding_layer", "embedding") for t in teachers]
    meta = {
        "source": "embed",
        "teachers": [
            {
                "dir": str(t.dir.resolve()),
                "checkpoint_fingerprint": t.fingerprint,
                "preset": t.meta.get("preset"),
                "layer": t.meta.get("embedding_layer"),
                "feature_fingerprint": t.meta.get("feature_cache", {}).get("fingerprint"),
                "test_macro_accuracy": t.meta.get("metrics", {}).get("test_macro_accuracy"),
            }
            for t in teachers
        ],
        "teacher_fingerprint": fingerprint_json({"checkpoints": fps, "embedding": embedding, "pool": pool}),
        "layer": layers[0] if embedding == "first" else "+".join(layers),
        "pool": list(pool) if pool is not None else None,
        "ensemble": {"mode": "mean_logits" if len(teachers) > 1 else "single", "embedding": embedding},
        "labels": list(fs.labels),
        "feature_fingerprint": fs.fingerprint,
        "feature_profile": fs.profile.name,
        "compute": {"address": address, "device": payload["device"], "shard_rows": shard_rows, "batch_size": batch_size},
        **provenance(),
    }
    out = Path(out_dir) if out_dir is not None else teacher_cache_path(fs.cache_dir)
    return write_teacher_cache(out, fs.table["filename"].to_numpy(), embs, logits, meta, shard_rows=shard_rows)


def _embed_local(payload, x, shards, num_threads, on_event):
    with torch_threads(num_threads or os.cpu_count() or 1):
        return [embed_shard(payload, x[lo:hi]) for lo, hi in progress(shards, "embedding clips (shards)", on_event)]


def _embed_ray(payload, x, shards, address, on_event):
    import ray

    with ray_session(address):
        remote = ray.remote(num_cpus=1)(_embed_shard_task)
        payload_ref = ray.put(payload)  # the teachers' weights travel to the object store once
        # a bounded window of shards in flight, so the object store never holds the whole feature cache at once
        window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        results: dict[int, Any] = {}
        in_flight: dict[Any, int] = {}
        next_shard = 0
        task = "embedding clips (Ray tasks)"
        emit(on_event, "progress", task=task, done=0, total=len(shards))
        while next_shard < len(shards) or in_flight:
            while next_shard < len(shards) and len(in_flight) < window:
                lo, hi = shards[next_shard]
                in_flight[remote.remote(payload_ref, x[lo:hi].numpy())] = next_shard
                next_shard += 1
            done, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in done:
                results[in_flight.pop(ref)] = ray.get(ref)
            emit(on_event, "progress", task=task, done=len(results), total=len(shards))
        return [results[i] for i in range(len(shards))]


def _embed_shard_task(payload, x):
    return embed_shard(payload, x, num_threads=1)


# --------------------------------------------------------------------------------------------------- import
def import_teacher(
    cache_dir: str | os.PathLike, file: str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> Path:
    """Validate ``file`` (Parquet: filename, embedding, logits) and adopt it as the teacher cache of ``cache_dir``."""
    fs = load_features(cache_dir, columns_only=True)
    return import_teacher_cache(fs, file, out_dir)
