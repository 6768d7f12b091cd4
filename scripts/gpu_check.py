"""GPU check: the figures of issue #12 on a machine with a CUDA GPU, in a few minutes.

    python scripts/gpu_check.py [--out DIR] [--trials N] [--json FILE]

1. Student training throughput on the GPU (``asc_search.bench.training`` with ``device="cuda"``: bf16 autocast,
   ``before`` vs ``after`` variants, quick and dcase profiles), as clips/s and as a fraction of the same GPU's
   bf16 4096 x 4096 matmul rate.
2. The quick search (the demo: synthetic data, teacher, budgeted search) with **fractional GPUs per trial**
   (``gpus_per_trial: 0.25``, 4 trials at a time on one GPU) and mixed precision (``train.amp``, on by default on
   CUDA): wall time, trained and rejected proposals, seconds per trained epoch, the best student.

Prints one JSON object (and writes it to ``--json`` when given). Without a CUDA GPU it prints
``no CUDA GPU: skipped`` and exits 0; it never needs one to be imported (the tests do not run it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GPU_RESOURCES = {"cpus_per_trial": 1, "gpus_per_trial": 0.25}


def fractional_space(out: Path, trials: int, concurrent: int) -> Path:
    """search_spaces/quick.yaml with 0.25 GPU per trial, ``concurrent`` trials at a time and ``trials`` trained."""
    import yaml

    from asc_search.search.space import resolve_space

    raw = yaml.safe_load(resolve_space(Path("quick.yaml")).read_text(encoding="utf-8"))
    raw["search"].update(num_samples=trials, max_concurrent=concurrent, resources=dict(GPU_RESOURCES))
    raw["train"]["amp"] = True
    path = out / "quick_gpu.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def search_figures(work: Path, trials: int) -> dict[str, Any]:
    """The demo with the fractional-GPU quick space; its timings, counts and per-epoch times."""
    from asc_search.demo import DemoSettings, run_demo
    from asc_search.search.runfolder import load_trials

    space = fractional_space(work, trials, concurrent=int(1 / GPU_RESOURCES["gpus_per_trial"]))
    t0 = time.perf_counter()
    summary = run_demo(work / "demo", DemoSettings(clips=3000, teacher_epochs=6, num_samples=trials, space=space,
                                                   device="cuda"), force=True)
    wall = time.perf_counter() - t0
    table = load_trials(summary.paths["run"])
    trained = table[table["epochs"] > 0]
    epochs = int(trained["epochs"].sum())
    busy = float(trained["duration_s"].sum())
    return {
        "resources_per_trial": GPU_RESOURCES,
        "demo_wall_s": wall,
        "timings_s": summary.timings_s,
        "proposals": summary.proposals,
        "trained_epochs": epochs,
        "trial_seconds_per_epoch": busy / epochs if epochs else None,
        "trial_seconds_sum_over_search_s": busy / summary.timings_s["search"] if summary.timings_s.get("search") else None,
        "best_student": summary.student,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    p.add_argument("--trials", type=int, default=12, help="trained trials of the quick search (default 12)")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    a = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: skipped")
        return 0
    from asc_search.bench import training

    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    result["training"] = training.run(device="cuda", rounds=1, epochs=3, variants=("before", "after"))
    with tempfile.TemporaryDirectory(prefix="asc-gpu-check-") as tmp:
        work = Path(a.out) if a.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result["search"] = search_figures(work, a.trials)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if a.json:
        Path(a.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
