"""Benchmark of the data layer: synthesis speed, feature throughput, cache size, cache load time.

    python -m asc_search.bench.features [--clips N] [--workers W] [--workdir DIR]   # prints one JSON object

``run()`` returns a dict (no printing). It synthesises ``n_clips`` clips (default 10,000) in the TAU layout, builds
the ``dcase`` feature cache (256 x 65, the DCASE 2024 front end: 44.1 -> 32 kHz resampling + log-mel) and the
``quick`` one with ``workers`` threads (default 2, this machine's cores), and loads the ``dcase`` cache into
tensors with :func:`asc_search.cache.load_features`. Figures: clips/s for synthesis and each profile, Parquet bytes
per 1,000 clips, and the load time (the files are fresh in the OS page cache: a warm read, as when a search
starts right after ``asc-search features``). CPU seconds and the load average are recorded too: on a shared
machine, CPU/wall well below ``workers`` means other processes took the cores and wall-clock figures are low.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished child processes."""
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(fn, *args, **kwargs) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds): CPU/wall near the worker count means the cores were ours."""
    wall0, cpu0 = time.perf_counter(), _cpu_seconds()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall0, _cpu_seconds() - cpu0


def _cache_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in cache_dir.glob("features-*.parquet"))


def run(n_clips: int = 10_000, workers: int = 2, workdir: str | os.PathLike | None = None, seed: int = 0) -> dict[str, Any]:
    """Measure the data layer on ``n_clips`` synthetic clips; see the module docstring."""
    import torch

    from .. import __version__
    from ..data.cache import load_features
    from ..data.features import build_feature_cache_report
    from ..data.synth import synthesize

    own = workdir is None
    base = Path(tempfile.mkdtemp(prefix="asc-bench-features-")) if own else Path(workdir)
    base.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "n_clips": n_clips,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "package_version": __version__,
    }
    try:
        root = base / "tau"
        if root.exists():
            shutil.rmtree(root)
        result["load_average_before"] = [round(v, 2) for v in os.getloadavg()]
        _, synth_s, synth_cpu = _timed(synthesize, root, n_clips=n_clips, seed=seed, workers=workers)
        audio_bytes = sum(p.stat().st_size for p in (root / "audio").iterdir())
        result["synth"] = {"seconds": round(synth_s, 2), "clips_per_s": round(n_clips / synth_s, 1),
                           "cpu_seconds": round(synth_cpu, 2), "cpu_per_wall": round(synth_cpu / synth_s, 2),
                           "audio_bytes_per_1000_clips": int(audio_bytes * 1000 / n_clips)}
        for profile in ("dcase", "quick"):
            cache = base / f"cache-{profile}"
            if cache.exists():
                shutil.rmtree(cache)
            report, wall, cpu = _timed(build_feature_cache_report, root, cache, profile=profile, workers=workers)
            size = _cache_bytes(cache)
            entry = {
                "seconds": round(report.seconds, 2),
                "clips_per_s": round(n_clips / report.seconds, 1),
                "cpu_seconds": round(cpu, 2),
                "cpu_per_wall": round(cpu / wall, 2),
                "clips_per_cpu_s": round(n_clips / cpu, 1),
                "files": report.n_files,
                "cache_bytes": size,
                "cache_bytes_per_1000_clips": int(size * 1000 / n_clips),
                "cache_mb_per_1000_clips": round(size * 1000 / n_clips / 1e6, 2),
            }
            if profile == "dcase":
                fs, load_s, load_cpu = _timed(load_features, cache)
                entry["load_seconds"] = round(load_s, 3)
                entry["load_cpu_seconds"] = round(load_cpu, 3)
                entry["load_clips_per_s"] = round(n_clips / load_s, 1)
                entry["tensor_shape"] = list(fs.x.shape)
                entry["tensor_dtype"] = str(fs.x.dtype).replace("torch.", "")
                entry["tensor_mb"] = round(fs.x.numel() * fs.x.element_size() / 1e6, 1)
                del fs
                # reuse check: a second build on unchanged inputs only fingerprints
                again = build_feature_cache_report(root, cache, profile=profile, workers=workers)
                entry["reuse_seconds"] = round(again.seconds, 3)
                entry["reused"] = again.reused
            result[profile] = entry
        result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    finally:
        if own:
            shutil.rmtree(base, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000, help="synthetic clips (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="threads (default 2)")
    parser.add_argument("--workdir", default=None, help="keep the data set and caches here (default: a temp dir)")
    args = parser.parse_args(argv)
    print(json.dumps(run(n_clips=args.clips, workers=args.workers, workdir=args.workdir), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
