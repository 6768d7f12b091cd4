"""Benchmark of Phase II: what budget rejection saves, what Ray Tune costs and buys, what the teacher cache saves.

    python -m asc_search.bench.search [--clips N] [--trials N] [--no-tune] [--no-dcase]   # one JSON object

``run()`` returns a dict (no printing), measured on synthetic random spectrograms of the ``quick`` profile
(``clips`` training clips + 20 % validation clips; random teacher logits and pooled embeddings of the
``teacher_quick`` preset's width), with ``search_spaces/quick.yaml``:

* ``rejection``: one over-budget proposal through :class:`asc_search.search.searcher.BudgetedSearcher` (Optuna ask,
  define-by-run sampling, torchinfo costing, constraint + attributes + tell in SQLite) against one trained quick
  trial (:func:`asc_search.search.trainable.fit_proposal` of a feasible proposal, the space's epochs, 1 thread as in a trial).
* ``tune``: wall time of ``trials`` feasible quick proposals run through Ray Tune, 2 at a time (1 CPU each, FIFO,
  per-epoch checkpoints as in a search), against the same proposals one after the other in this process (same
  settings: 1 torch thread each), and against the same 2 at a time in 2 plain started processes without Ray (the
  machine's own ceiling for 2 trials at a time). ``ray_init_s`` (starting a local Ray) is reported apart from the
  Tune wall time; where the slots' time went (worker start, between trials, after the last one) beside it. Tune
  starts one worker per slot once (reused actors: ~4.5 s here, half of it Tune's own start with a trivial trainable,
  the rest imports), so the more trials per slot, the less it weighs: 8 trials (4 per slot) by default.
* ``teacher``: one student epoch with cached teacher targets (KD + embedding matching read from memory) against the
  same epoch plus the teacher forward pass over every training batch (what distilling online would add; the extra
  work is exactly that forward, measured over the epoch's batches with the teacher in eval mode, no grad), for the
  ``quick`` profile (teacher_quick) and, unless disabled, the ``dcase`` profile (teacher preset, 256 x 65).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["run", "bench_rejection", "bench_tune", "bench_teacher_cache", "synthetic_trial_data"]

QUICK_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "quick.yaml"
TEACHERS = {"quick": "teacher_quick", "dcase": "teacher"}


def _teacher_embedding_width(preset: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    from ..models.presets import get_preset
    from ..models.teacher import build_teacher

    model = build_teacher(get_preset(preset).config).eval()
    with torch.no_grad():
        _, fmap = model.forward_with_embedding(torch.zeros(1, *input_shape[1:]))
    return (int(fmap.shape[1]), 1, 1)


def synthetic_trial_data(n_train: int, profile: str = "quick", seed: int = 0) -> dict[str, Any]:
    """A payload shaped like :func:`asc_search.search.trainable.prepare_trial_data` output, of random spectrograms/targets
    (and the built-in device-response bank, for search files that train with it)."""
    from ..config import get_profile
    from ..data.impulses import build_ir_bank

    prof = get_profile(profile)
    shape = (1, 1, *prof.shape)
    emb = _teacher_embedding_width(TEACHERS[profile], shape)
    rng = np.random.default_rng(seed)
    n_val = max(10, n_train // 5)
    out: dict[str, Any] = {"input_shape": list(shape), "teacher_embedding_shape": list(emb), "profile": profile,
                           "labels": [str(i) for i in range(10)], "dir_log_gains": np.asarray(build_ir_bank(prof).log_gains, dtype=np.float32)}
    for name, n in (("train", n_train), ("val", n_val)):
        out[f"{name}_x"] = rng.standard_normal((n, *shape[1:]), dtype=np.float32).astype(np.float16)
        out[f"{name}_y"] = rng.integers(0, 10, n).astype(np.int64)
        out[f"{name}_logits"] = rng.standard_normal((n, 10), dtype=np.float32)
        out[f"{name}_emb"] = rng.standard_normal((n, *emb), dtype=np.float32).astype(np.float16)
        out[f"{name}_files"] = [f"{name}-{i}.wav" for i in range(n)]
    return out


def _proposals(spec: Any, n_feasible: int, workdir: Path, threads: int = 1) -> tuple[list[dict], Any]:
    """``n_feasible`` trial configs from the searcher (and the searcher, whose study also holds the rejections)."""
    import dataclasses

    from ..search.searcher import BudgetedSearcher

    spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, cpus_per_trial=float(threads)))
    searcher = BudgetedSearcher(spec, f"sqlite:///{workdir / 'bench.db'}", "bench")
    configs = [searcher.suggest(f"b{i}") for i in range(n_feasible)]
    return configs, searcher


def bench_rejection(data: dict[str, Any], workdir: Path, n_feasible: int = 3) -> dict[str, Any]:
    """Time per rejected proposal vs one trained quick trial."""
    from ..search.runfolder import Status
    from ..search.space import load_space
    from ..search.trainable import fit_proposal

    spec = load_space(QUICK_SPACE)
    # warm-up outside the timing: imports, torchinfo's first pass, the SQLite schema
    _proposals(spec, 1, workdir / "warmup")
    t0 = time.perf_counter()
    configs, searcher = _proposals(spec, n_feasible, workdir)
    suggest_s = time.perf_counter() - t0
    trials = searcher.study.get_trials(deepcopy=False)
    rejected = [t for t in trials if t.user_attrs.get("status") == Status.REJECTED]
    n_props = len(trials)
    cost_s = [float(t.user_attrs["cost_s"]) for t in rejected]
    t0 = time.perf_counter()
    fit_proposal(configs[0], data)
    trial_s = time.perf_counter() - t0
    per_proposal = suggest_s / max(1, n_props)
    return {
        "proposals": n_props,
        "rejected": len(rejected),
        "suggest_wall_s": suggest_s,
        "per_proposal_s": per_proposal,  # everything: ask, sample, cost, SQLite writes, tell
        "rejected_cost_s_mean": float(np.mean(cost_s)) if cost_s else None,  # ask + sample + costing only
        "trained_trial_s": trial_s,
        "trained_trial_epochs": configs[0]["proposal"]["train"]["epochs"],
        "trained_trial_params": configs[0]["cost"]["params"],
        "trial_over_rejection": trial_s / per_proposal,
    }


def _tune_trial(config: dict[str, Any], data: dict[str, Any], configs: list[dict], timings: str) -> None:
    """One trial as the search runs it, plus its time and its checkpoint writes (to ``timings``/<index>.json)."""
    from ..search import trainable

    started = time.time()
    t1 = time.perf_counter()
    write = trainable.write_checkpoint
    spent = {"checkpoint_s": 0.0, "epochs": 0}

    def timed_write(*args: Any, **kwargs: Any) -> None:
        c0 = time.perf_counter()
        write(*args, **kwargs)
        spent["checkpoint_s"] += time.perf_counter() - c0
        spent["epochs"] += 1

    trainable.write_checkpoint = timed_write
    try:
        trainable.train_trial(configs[config["index"]], data)
    finally:
        trainable.write_checkpoint = write
    out = {"pid": os.getpid(), "trial_s": time.perf_counter() - t1, "started": started, "ended": time.time(), **spent}
    Path(timings, f"{config['index']}.json").write_text(json.dumps(out), encoding="utf-8")


_POOL_DATA: dict[str, Any] = {}


def _pool_init(data: dict[str, Any]) -> None:
    """A plain worker process of :func:`two_processes`: the trial data, and the imports a trial needs."""
    from ..search import trainable  # noqa: F401 - imported before the clock starts, as a Tune worker's are not

    _POOL_DATA.update(data)


def _pool_ready(wait_s: float) -> int:
    time.sleep(wait_s)
    return os.getpid()


def _pool_fit(config: dict[str, Any]) -> float:
    from ..search.trainable import fit_proposal

    t0 = time.perf_counter()
    fit_proposal(config, _POOL_DATA)
    return time.perf_counter() - t0


def two_processes(configs: list[dict], data: dict[str, Any]) -> dict[str, Any]:
    """The same trials 2 at a time in 2 plain worker processes (no Ray): what 2 trials at a time can gain on this
    machine at all. The workers are started and have imported the trial code before the clock starts."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")  # torch's thread pools do not survive a fork
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx, initializer=_pool_init, initargs=(data,)) as pool:
        pids = set(pool.map(_pool_ready, [1.0, 1.0]))  # both workers up (each sleeps while the other starts)
        t0 = time.perf_counter()
        inside = list(pool.map(_pool_fit, configs))
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "trials_inside_s": sum(inside), "workers": len(pids)}


def _planned_epochs(config: dict[str, Any], data: dict[str, Any]) -> int:
    """The epochs a trial of ``config`` trains on ``data`` (its epochs, raised to reach ``train.min_steps``)."""
    from ..search.proposal import Proposal

    return Proposal.from_dict(config["proposal"]).train.planned_epochs(len(data["train_y"]))


def bench_tune(data: dict[str, Any], workdir: Path, n_trials: int = 8) -> dict[str, Any]:
    """``n_trials`` feasible quick proposals through Tune (2 at a time) vs one after the other in-process."""
    from ray import tune

    from .._runtime import quiet_ray_env, ray_session
    from ..search.space import load_space
    from ..search.trainable import fit_proposal

    spec = load_space(QUICK_SPACE)
    configs, _ = _proposals(spec, n_trials, workdir / "t1", threads=1)

    # The same trials, same settings (1 torch thread each, as in a trial), one after the other in this process.
    # (With 2 threads per trial instead, a busy 2-core machine slowed each trial ~10x through thread contention.)
    t0 = time.perf_counter()
    for cfg in configs:
        fit_proposal(cfg, data)
    sequential_s = time.perf_counter() - t0

    pool = two_processes(configs, data)

    quiet_ray_env()  # also: no experiment banner on stdout (it carries the JSON)
    t0 = time.perf_counter()
    with ray_session("local", num_cpus=2):
        init_s = time.perf_counter() - t0
        timings = workdir / "timings"
        timings.mkdir(parents=True, exist_ok=True)
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, data=data, configs=configs, timings=str(timings)), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"index": tune.grid_search(list(range(n_trials)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
            run_config=tune.RunConfig(name="bench", storage_path=str(workdir / "ray"), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        t0, fit_started = time.perf_counter(), time.time()
        grid = tuner.fit()
        tune_s = time.perf_counter() - t0
        errors = len(grid.errors)
    per_trial = [json.loads(f.read_text(encoding="utf-8")) for f in sorted(timings.glob("*.json"))]
    inside = sum(t["trial_s"] for t in per_trial)
    by_worker: dict[int, list[dict]] = {}
    for t in sorted(per_trial, key=lambda t: t["started"]):
        by_worker.setdefault(t["pid"], []).append(t)
    first_starts = [ts[0]["started"] - fit_started for ts in by_worker.values()]
    between = [b["started"] - a["ended"] for ts in by_worker.values() for a, b in zip(ts, ts[1:])]
    return {
        "trials": n_trials,
        "epochs_per_trial": _planned_epochs(configs[0], data),
        "tune_2_at_a_time_s": tune_s,
        "ray_init_s": init_s,
        "sequential_one_process_s": sequential_s,
        "speedup": sequential_s / tune_s,
        "tune_over_sequential": tune_s / sequential_s,  # the figure (ideal on 2 free cores: 0.5)
        "tune_errors": errors,
        # where the 2 slots' time went: the trials themselves (training + per-epoch checkpoints), and the rest (Tune:
        # worker start and imports, actor reuse, scheduling, result and checkpoint handling)
        "trials_inside_s": inside,
        "workers": len({t["pid"] for t in per_trial}),
        "checkpoint_write_s": sum(t["checkpoint_s"] for t in per_trial),
        "checkpoints": sum(t["epochs"] for t in per_trial),
        "tune_overhead_slot_s": max(0.0, 2 * tune_s - inside),
        # the slots' time, by when it went: from Tuner.fit() to each worker's first trial (worker start, imports,
        # the trial data), between two trials of one worker (actor reuse), after the last trial ended until fit()
        # returned (results, experiment state, shutdown of the workers)
        "until_first_trial_s": first_starts,
        "between_trials_s": between,
        "after_last_trial_s": fit_started + tune_s - max((t["ended"] for t in per_trial), default=fit_started),
        # the machine's own ceiling: the same trials 2 at a time in 2 started plain processes, without Ray
        "two_processes_s": pool["wall_s"],
        "two_processes_over_sequential": pool["wall_s"] / sequential_s,
        "two_processes_trials_inside_s": pool["trials_inside_s"],
        "tune_over_two_processes": tune_s / pool["wall_s"],
    }


def bench_teacher_cache(profile: str, n_train: int, batch_size: int = 64, threads: int = 2) -> dict[str, Any]:
    """One student epoch with cached targets vs the same plus the teacher forward over every batch."""
    from .._runtime import torch_threads
    from ..config import get_profile
    from ..models.build import build_student_and_head
    from ..models.presets import get_preset
    from ..models.student import StudentConfig
    from ..models.teacher import build_teacher
    from ..training.loop import TensorData, TrainConfig, fit
    from ..training.losses import DistillConfig

    data = synthetic_trial_data(n_train, profile)
    prof = get_profile(profile)
    distill = DistillConfig(kd_weight=0.5, emb_weight=1.0)
    # the DCASE 2024 baseline shape, with the projection head that embedding matching trains
    student, head = build_student_and_head(StudentConfig(), distill, data["teacher_embedding_shape"])
    t = lambda k: torch.from_numpy(data[k])  # noqa: E731
    train = TensorData(t("train_x"), t("train_y"), t("train_logits"), t("train_emb"))
    val = TensorData(t("val_x"), t("val_y"))
    cfg = TrainConfig(epochs=1, batch_size=batch_size, device="cpu", num_threads=threads, warmup_epochs=0.0, seed=0)
    t0 = time.perf_counter()
    res = fit(student, train, val, cfg, distill=distill, head=head)
    cached_s = time.perf_counter() - t0
    val_s = float(res.history[-1].get("epoch_time_s", cached_s)) if res.history else cached_s

    teacher = build_teacher(get_preset(TEACHERS[profile]).config).eval()
    x = train.x
    steps = max(1, len(x) // batch_size)
    t0 = time.perf_counter()
    with torch_threads(threads), torch.no_grad():
        for i in range(steps):
            logits, fmap = teacher.forward_with_embedding(x[i * batch_size : (i + 1) * batch_size].float())
            torch.nn.functional.adaptive_avg_pool2d(fmap, 1)
    teacher_s = time.perf_counter() - t0
    return {
        "profile": profile,
        "input": list(prof.shape),
        "train_clips": n_train,
        "teacher_preset": TEACHERS[profile],
        "student": "StudentConfig() (DCASE 2024 baseline shape)",
        "epoch_cached_targets_s": cached_s,
        "teacher_forward_per_epoch_s": teacher_s,
        "epoch_online_teacher_s": cached_s + teacher_s,
        "online_over_cached": (cached_s + teacher_s) / cached_s,
        "fit_epoch_time_s": val_s,
    }


def run(clips: int = 1280, trials: int = 8, tune: bool = True, dcase: bool = True, dcase_clips: int = 256) -> dict[str, Any]:
    """All Phase II figures; see the module docstring. ``clips``: quick training clips (the demo has ~1,300)."""
    from .. import __version__

    out: dict[str, Any] = {
        "benchmark": "search",
        "version": __version__,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "cuda": torch.cuda.is_available()},
        "space": str(QUICK_SPACE.name),
    }
    data = synthetic_trial_data(clips, "quick")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for sub in ("t1", "warmup"):
            (work / sub).mkdir()
        out["rejection"] = bench_rejection(data, work)
        if tune:
            out["tune"] = bench_tune(data, work, n_trials=trials)
    out["teacher"] = [bench_teacher_cache("quick", clips)]
    if dcase:
        out["teacher"].append(bench_teacher_cache("dcase", dcase_clips))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asc_search.bench.search", description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=1280, help="quick training clips (default 1280, the demo's)")
    p.add_argument("--trials", type=int, default=8, help="quick trials for the Tune comparison (default 8: 4 per slot)")
    p.add_argument("--no-tune", action="store_true", help="skip the Tune vs sequential comparison")
    p.add_argument("--no-dcase", action="store_true", help="skip the dcase-profile teacher comparison")
    a = p.parse_args(argv)
    json.dump(run(clips=a.clips, trials=a.trials, tune=not a.no_tune, dcase=not a.no_dcase), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
