"""Benchmark of Phase I: the teachers' size, one training epoch and the embedding throughput, per feature profile.

    python -m asc_search.bench.teacher [--quick-clips N] [--dcase-clips N] [--threads T]   # one JSON object

``run()`` returns a dict (no printing). For each profile (``quick`` 40 x 51 with ``teacher_quick``, ``dcase``
256 x 65 with ``teacher``): parameters and MACs (torchinfo, the organisers' counter), the wall time of one
training epoch (the best of the epochs after the first, which
includes one-off set-up and is reported apart; best-of because the cores may be shared) of :func:`asc_search.train.fit` with the default teacher augmentations (mixup, Freq-MixStyle,
masking, roll) on a synthetic set of random spectrograms (clip counts are in the result; 20 % extra clips for the
validation pass, included in the epoch time), and the embedding throughput of :func:`asc_search.teacher.embed_shard`
(clips/s, batch 256, pooled 1x1 embeddings + logits; best of 3) on the same clips. ``threads`` torch threads (default 2, the
machine's cores); the device is the CPU unless ``device`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import torch

__all__ = ["run", "bench_profile"]

PROFILE_PRESETS = {"quick": "teacher_quick", "dcase": "teacher"}


def bench_profile(
    profile: str, n_clips: int, threads: int = 2, device: str = "cpu", seed: int = 0, epochs: int = 3, repeats: int = 3
) -> dict[str, Any]:
    """Figures for one profile on ``n_clips`` random training clips."""
    from .._runtime import torch_threads
    from ..complexity import measure
    from ..config import get_profile
    from ..models.presets import get_preset
    from ..models.teacher import build_teacher
    from ..teacher import default_train_config, embed_shard
    from ..training.loop import TensorData, fit

    prof = get_profile(profile)
    preset = get_preset(PROFILE_PRESETS[profile])
    shape = (1, prof.n_mels, prof.n_frames)
    model = build_teacher(preset.config)
    c = measure(model, (1, *shape), dtype="float32")

    g = torch.Generator().manual_seed(seed)
    n_val = max(1, n_clips // 5)
    x = torch.randn(n_clips + n_val, *shape, generator=g).half()
    y = torch.randint(0, preset.config.n_classes, (n_clips + n_val,), generator=g)
    train, val = TensorData(x[:n_clips], y[:n_clips]), TensorData(x[n_clips:], y[n_clips:])
    cfg = default_train_config(shape, epochs=epochs, seed=seed, device=device, num_threads=threads, warmup_epochs=0.0)
    torch.manual_seed(seed)
    res = fit(model, train, val, cfg)
    times = [h["epoch_time_s"] for h in res.history]
    first_s, epoch_s = times[0], min(times[1:])

    payload = {
        "teachers": [(preset.config.to_dict(), {k: v.cpu() for k, v in model.state_dict().items()})],
        "pool": [1, 1],
        "embedding": "first",
        "batch_size": 256,
        "device": device,
    }
    with torch_threads(threads):
        embed_shard(payload, x[: min(32, n_clips)])  # warm-up
        embed_times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            logits, emb = embed_shard(payload, x[:n_clips])
            embed_times.append(time.perf_counter() - t0)
        embed_s = min(embed_times)
    return {
        "profile": profile,
        "preset": preset.name,
        "input_shape": list(shape),
        "params": c.params,
        "macs": c.macs,
        "train_clips": n_clips,
        "val_clips": n_val,
        "batch_size": cfg.batch_size,
        "epoch_time_s": round(epoch_s, 3),  # best epoch after the first (steady state), validation pass included
        "first_epoch_time_s": round(first_s, 3),  # includes one-off kernel set-up
        "epoch_times_s": [round(t, 3) for t in times],
        "train_clips_per_s": round(n_clips / epoch_s, 2),
        "embed_clips": n_clips,
        "embed_time_s": round(embed_s, 3),  # best of `repeats`
        "embed_times_s": [round(t, 3) for t in embed_times],
        "embed_clips_per_s": round(n_clips / embed_s, 2),
        "embedding_shape": list(emb.shape[1:]),
    }


def run(quick_clips: int = 1024, dcase_clips: int = 256, threads: int = 2, device: str = "cpu") -> dict[str, Any]:
    """Both profiles; see the module docstring."""
    return {
        "benchmark": "teacher",
        "threads": threads,
        "device": device,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average_1m_before": round(os.getloadavg()[0], 2),  # other work on the cores skews the timings
        "profiles": [
            bench_profile("quick", quick_clips, threads, device),
            bench_profile("dcase", dcase_clips, threads, device),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asc_search.bench.teacher", description=__doc__.splitlines()[0])
    p.add_argument("--quick-clips", type=int, default=1024)
    p.add_argument("--dcase-clips", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    print(json.dumps(run(a.quick_clips, a.dcase_clips, a.threads, a.device), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
