"""Benchmark of the complexity accounting: how long costing one student candidate takes, and the teachers' size.

    python -m asc_search.bench.complexity [N]      # prints one JSON object

``run()`` returns a dict (no printing): ``cost_student`` timings over N random candidates drawn around CP-Mobile
(the work a search does per proposal; wall and process CPU time): as the search runs it (``counter="auto"``:
analytic count, over-budget proposals rejected on it, feasible ones confirmed with torchinfo), split into the
analytic rejections and the torchinfo confirmations; the analytic count alone and the torchinfo path alone (build +
torchinfo count) on every candidate; whether the two counts agreed on every candidate; and the parameters / MACs
of the presets on the ``quick`` (40 x 51) and ``dcase`` (256 x 65) input shapes.
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

from ..complexity import cost_student, measure, student_cost_from_config
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


def _stats(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"n": 0, "mean_s": None, "median_s": None, "max_s": None}
    return {
        "n": len(seconds),
        "mean_s": statistics.fmean(seconds),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
    }


def _time_candidates(configs: list[StudentConfig], input_shape: tuple[int, ...], budget: Budget) -> dict[str, Any]:
    """Each config costed as the search does it (``counter="auto"``), then by each counter alone."""
    totals, cpu_totals, rejections, confirmations = [], [], [], []
    analytic_only, torchinfo_only, builds, counts = [], [], [], []
    passed = disagreements = 0
    for cfg in configs:
        # as the search does it: analytic rejection or torchinfo confirmation
        t0, c0 = time.perf_counter(), time.process_time()
        report = cost_student(cfg, input_shape, budget)
        elapsed = time.perf_counter() - t0
        totals.append(elapsed)
        cpu_totals.append(time.process_time() - c0)
        (confirmations if report.counter == "torchinfo" else rejections).append(elapsed)
        passed += report.passed
        # each counter alone on every candidate
        t0 = time.perf_counter()
        analytic = student_cost_from_config(cfg, input_shape, dtype=budget.param_dtype)
        analytic_only.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model = build_student(cfg, init_weights=False)
        t1 = time.perf_counter()
        counted = measure(model, input_shape, dtype=budget.param_dtype)
        t2 = time.perf_counter()
        builds.append(t1 - t0)
        counts.append(t2 - t1)
        torchinfo_only.append(t2 - t0)
        disagreements += (analytic.params, analytic.macs) != (counted.params, counted.macs)
    return {
        "n_candidates": len(configs),
        "input_shape": list(input_shape),
        "budget": budget.to_dict(),
        "within_budget": passed,
        # cost_student as the search calls it (counter="auto")
        "mean_s": statistics.fmean(totals),
        "median_s": statistics.median(totals),
        "max_s": max(totals),
        "cpu_mean_s": statistics.fmean(cpu_totals),  # process CPU time: robust to other load
        "analytic_rejections": _stats(rejections),  # over budget: rejected on the analytic count
        "torchinfo_confirmations": _stats(confirmations),  # within budget: analytic + build + torchinfo
        # each counter alone, on every candidate
        "analytic_only": _stats(analytic_only),
        "torchinfo_only": _stats(torchinfo_only),  # build + torchinfo: what every proposal cost before
        "build_mean_s": statistics.fmean(builds),
        "torchinfo_mean_s": statistics.fmean(counts),
        "counts_disagree": disagreements,  # candidates where analytic != torchinfo (params or MACs); expect 0
        "speedup_total": sum(torchinfo_only) / sum(totals),  # torchinfo on every proposal / as the search does it
    }


def space_candidates(n: int, seed: int = 0, space: str = "dcase") -> tuple[list[StudentConfig], Any]:
    """``n`` student configs drawn from a built-in search space with Optuna's seeded random sampler."""
    import optuna

    from ..search.space import load_space

    spec = load_space(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for number in range(n):
        trial = study.ask()
        configs.append(spec.sample(trial, trial_seed=seed + number).student)
        study.tell(trial, 0.0)
    return configs, spec


def run(
    n_candidates: int = 50,
    seed: int = 0,
    input_shape: tuple[int, ...] = DCASE_SHAPE,
    n_space_candidates: int | None = None,
) -> dict[str, Any]:
    """``n_candidates`` random students around CP-Mobile on ``input_shape``, and ``n_space_candidates`` (default:
    as many) proposals drawn from the built-in ``dcase`` search space on its own profile and budget."""
    rng = random.Random(seed)
    configs = [random_student_config(rng) for _ in range(n_candidates)]
    budget = Budget()
    cost_student(configs[0], input_shape, budget, counter="torchinfo")  # warm-up (imports, first forward)
    around = {"seed": seed, **_time_candidates(configs, input_shape, budget)}
    n_space = n_candidates if n_space_candidates is None else n_space_candidates
    dcase_space: dict[str, Any] = {"n_candidates": 0}
    if n_space > 0:
        drawn, spec = space_candidates(n_space, seed=seed)
        dcase_space = {"space": spec.source, "sampler": f"optuna RandomSampler(seed={seed})",
                       **_time_candidates(drawn, spec.input_shape, spec.budget)}

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
        "cost_student": around,
        "dcase_space": dcase_space,
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
