"""Benchmark of the complexity accounting: how long costing one student candidate takes, and the teachers' size.

    python -m asc_search.benchmarks.complexity [N]      # prints one JSON object

``run()`` returns a dict (no printing): ``cost_student`` timings over N random candidates drawn around CP-Mobile
(build + torchinfo count + budget check, the work a search does per proposal; wall and process CPU time), split into
build and count, and the
parameters / MACs of the presets on the ``quick`` (40 x 51) and ``dcase`` (256 x 65) input shapes.
"""

from __future__ import annotations

import json
import platform
import random
import statistics
import sys
import time
from typing import Any

import torch

from ..complexity import cost_student, measure
from ..config import Budget
from ..models.presets import PRESETS, build_preset
from ..models.student import StudentConfig, build_student

__all__ = ["random_student_config", "run"]

QUICK_SHAPE = (1, 1, 40, 51)
DCASE_SHAPE = (1, 1, 256, 65)


def random_student_config(rng: random.Random) -> StudentConfig:
    """A student drawn from a space around CP-Mobile (wide enough that many are over the DCASE budget)."""
    n_stages = rng.randint(2, 4)
    n_blocks = tuple(rng.randint(1, 3) for _ in range(n_stages))
    names = [f"b{i + 1}" for i in range(sum(n_blocks))]
    strides = {name: (rng.choice((1, 2)), rng.choice((1, 2))) for name in rng.sample(names, k=min(2, len(names)))}
    return StudentConfig(
        base_channels=rng.choice((16, 24, 32, 40, 48, 64)),
        channels_multiplier=round(rng.uniform(1.2, 2.5), 2),
        expansion_rate=round(rng.uniform(1.5, 4.0), 2),
        n_blocks=n_blocks,
        strides=strides,
        embed_block=rng.choice(names),
    )


def run(n_candidates: int = 50, seed: int = 0, input_shape: tuple[int, ...] = DCASE_SHAPE) -> dict[str, Any]:
    rng = random.Random(seed)
    configs = [random_student_config(rng) for _ in range(n_candidates)]
    budget = Budget()
    cost_student(configs[0], input_shape, budget)  # warm-up (imports, first forward)

    totals, cpu_totals, builds, counts, passed = [], [], [], [], 0
    for cfg in configs:
        t0, c0 = time.perf_counter(), time.process_time()
        report = cost_student(cfg, input_shape, budget)
        totals.append(time.perf_counter() - t0)
        cpu_totals.append(time.process_time() - c0)
        passed += report.passed
        t0 = time.perf_counter()
        model = build_student(cfg)
        t1 = time.perf_counter()
        measure(model, input_shape, dtype=budget.param_dtype)
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        counts.append(t2 - t1)

    models: dict[str, Any] = {}
    for name, preset in PRESETS.items():
        if name == "dcase2024_baseline_quick":
            continue
        model, own_shape = build_preset(name)
        entry: dict[str, Any] = {"input_shape": list(own_shape), "param_dtype": preset.param_dtype}
        shapes = {"own": own_shape}
        if preset.family == "teacher":
            shapes = {"quick": QUICK_SHAPE, "dcase": DCASE_SHAPE}
        for label, shape in shapes.items():
            c = measure(model, shape, dtype=preset.param_dtype)
            entry[label] = {"input_shape": list(shape), "params": c.params, "param_bytes": c.param_bytes, "macs": c.macs}
        models[name] = entry

    import torchinfo

    return {
        "benchmark": "complexity",
        "cost_student": {
            "n_candidates": n_candidates,
            "seed": seed,
            "input_shape": list(input_shape),
            "budget": budget.to_dict(),
            "within_budget": passed,
            "mean_s": statistics.fmean(totals),
            "median_s": statistics.median(totals),
            "max_s": max(totals),
            "cpu_mean_s": statistics.fmean(cpu_totals),  # process CPU time: robust to other load
            "build_mean_s": statistics.fmean(builds),
            "torchinfo_mean_s": statistics.fmean(counts),
        },
        "models": models,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchinfo": torchinfo.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }


if __name__ == "__main__":  # pragma: no cover
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    print(json.dumps(run(n_candidates=n), indent=2))
