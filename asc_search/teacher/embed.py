"""Phase I, step 2: the teacher cache (``asc-search teacher embed`` / ``teacher import``).

:func:`embed_features` runs one teacher, or an ensemble, on every clip of a feature cache and writes its
second-to-last-layer feature map (before the classifier), average-pooled to a small grid (default 1 x 1: a vector of
C values; ``pool=None`` keeps it spatial), and its logits; locally or as Ray tasks on a cluster, with the same numbers.
:func:`import_teacher` adopts embeddings and logits computed elsewhere instead. See
:mod:`asc_search.data.teacher_cache` for the cache's format.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._io import fingerprint_json, provenance
from .._progress import OnEvent, emit, progress
from .._runtime import ray_session, resolve_device, steady_cwd, torch_threads
from ..data.cache import load_features
from ..data.teacher_cache import DEFAULT_SHARD_ROWS, import_teacher_cache, teacher_cache_path, write_teacher_cache
from ..errors import CacheError, ConfigError
from ..training.inference import predict
from .folder import LoadedTeacher, load_teacher

__all__ = ["EMBEDDING_MODES", "embed_features", "embed_shard", "import_teacher"]

EMBEDDING_MODES = ("first", "concat")


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
    from ..models.teacher import build_teacher

    with torch_threads(num_threads):
        device = resolve_device(payload.get("device", "cpu"))
        xt = torch.as_tensor(x)
        pool = tuple(payload["pool"]) if payload.get("pool") is not None else None
        logits_sum, embs = None, []
        for i, (config, state) in enumerate(payload["teachers"]):
            model = build_teacher(config)
            model.load_state_dict(state)
            model.to(device)
            if i == 0 or payload["embedding"] == "concat":
                logits, emb = predict(model, xt, payload["batch_size"], device, embedding=lambda f: _pool(f, pool))
                embs.append(emb)
            else:
                logits = predict(model, xt, payload["batch_size"], device)
            logits_sum = logits if logits_sum is None else logits_sum + logits
    n_teachers = len(payload["teachers"])
    logits = logits_sum / n_teachers if n_teachers > 1 else logits_sum
    if len({tuple(e.shape[2:]) for e in embs}) > 1:
        raise ConfigError("embedding 'concat' needs teacher feature maps of one spatial size; pool them to a common grid")
    emb_t = torch.cat(embs, dim=1) if len(embs) > 1 else embs[0]
    return logits.numpy(), emb_t.contiguous().numpy()


def _shards(n: int, shard_rows: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + shard_rows)) for lo in range(0, n, shard_rows)]


def _load_teachers(teacher_dirs: Sequence[str | os.PathLike], fs: Any) -> list[LoadedTeacher]:
    """The teachers, each checked to have been trained on this cache's input shape and label set."""
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
    return teachers


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
        raise ConfigError(f"embedding must be one of {', '.join(EMBEDDING_MODES)}, got {embedding!r}")
    if not teacher_dirs:
        raise ConfigError("give at least one teacher folder")
    if pool is not None and (len(pool) != 2 or any(int(p) <= 0 for p in pool)):
        raise ConfigError(f"pool must be two positive integers (H, W) or None for spatial, got {pool!r}")
    if batch_size <= 0 or shard_rows <= 0:
        raise ConfigError(f"batch_size and shard_rows must be positive, got {batch_size} and {shard_rows}")
    fs = features if features is not None else load_features(cache_dir)
    teachers = _load_teachers(teacher_dirs, fs)
    payload = {
        "teachers": [(t.meta["model"], t.model.state_dict()) for t in teachers],
        "pool": list(pool) if pool is not None else None,
        "embedding": embedding,
        "batch_size": batch_size,
        "device": str(resolve_device(device)) if address is None else "auto",
    }
    shards = _shards(int(fs.x.shape[0]), shard_rows)
    if address is None:
        results = _embed_local(payload, fs.x, shards, num_threads, on_event)
    else:
        with steady_cwd(Path(fs.cache_dir).resolve()):  # a Ray job's working folder can be replaced meanwhile
            results = _embed_ray(payload, fs.x, shards, address, on_event)
    logits = np.concatenate([r[0] for r in results]) if results else np.zeros((0, len(fs.labels)), np.float32)
    embs = np.concatenate([r[1] for r in results]) if results else np.zeros((0, 1, 1, 1), np.float32)
    meta = _cache_meta(teachers, fs, embedding, pool, {"address": address, "device": payload["device"],
                                                       "shard_rows": shard_rows, "batch_size": batch_size})
    out = Path(out_dir) if out_dir is not None else teacher_cache_path(fs.cache_dir)
    return write_teacher_cache(out, fs.table["filename"].to_numpy(), embs, logits, meta, shard_rows=shard_rows)


def _cache_meta(teachers: list[LoadedTeacher], fs: Any, embedding: str, pool: tuple[int, int] | None,
                compute: dict[str, Any]) -> dict[str, Any]:
    """The teacher cache's record of what produced it (see :mod:`asc_search.data.teacher_cache`)."""
    fps = [t.fingerprint for t in teachers]
    layers = [t.meta.get("embedding_layer", "embedding") for t in teachers]
    return {
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
        "compute": compute,
        **provenance(),
    }


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


def import_teacher(
    cache_dir: str | os.PathLike, file: str | os.PathLike, out_dir: str | os.PathLike | None = None
) -> Path:
    """Validate ``file`` (Parquet: filename, embedding, logits) and adopt it as the teacher cache of ``cache_dir``
    (default ``CACHE_DIR-teacher``); see :func:`asc_search.data.teacher_cache.import_teacher_cache`."""
    fs = load_features(cache_dir, columns_only=True)
    return import_teacher_cache(fs, file, out_dir)
