"""Benchmark of the search driver at scale: proposals/s and driver memory over a long search.

    python -m asc_search.bench.driver [--proposals N] [--every K] [--max-seconds S] [--out DIR] [--quick]   # JSON (+ PNG)

``run()`` returns a dict (no printing). It runs the real driver machinery of ``asc-search search``: the
:class:`~asc_search.search.searcher.BudgetedSearcher` (TPE with the search file's settings, SQLite study with the
same pragmas, analytic + torchinfo costing) inside a Ray Tune run with the driver's Tune settings (its scheduler,
reused actors, one checkpoint kept, Tune's auto-loggers off as :func:`asc_search._runtime.quiet_ray_env` sets
them), on the DCASE space under a budget most proposals exceed (:data:`SPACE`). Feasible proposals become **instant
trials** (a trainable that reports one epoch at once, with a score that grows with the share of the budget used), so
what is measured is the driver: asking, sampling, costing, recording, telling, and Tune's bookkeeping per trial. Then
(``sampler_sizes``) :mod:`asc_search.bench.sampler_scaling`: TPE's cost per proposal at 1,000 / 5,000 / 10,000
trials, Optuna's against the search's bounded one.

Every ``every`` proposals it records the proposal count, the wall time, the trained trials so far, the time spent
inside the searcher (``suggest`` + ``on_trial_complete``: Optuna ask/tell, SQLite, sampling, costing; the rest is
Tune's own bookkeeping and the instant trials), the time in Python's garbage collector, the driver process's CPU
time (all its threads: ``cpu_ms_per_proposal``, and ``cpu_busy``, the cores' worth it kept busy; with the wall time
this tells the driver's own work from waiting for a core or for the trials) and its resident memory (RSS). The
search stops after ``proposals`` proposals or, when ``max_seconds`` is given, at the first proposal after that much
wall time (``stopped_by_time_cap`` says which). Reported: proposals/s over each window and over the whole run (the
lowest window is what "keeps N proposals/s from start to end" means), the RSS at the start and the largest, and a
PNG plot of the rate, the CPU and searcher time per proposal and the RSS against the number of proposals (``out``
folder, when given).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["SPACE", "run", "driver_rss_mb", "instant_score", "plot"]

#: The benchmark's search file: the DCASE space (search_spaces/dcase.yaml's student, distill and train ranges, no
#: reference arms) under a budget of 40,000 B at int8 and 8 M MACs, which ~98 % of random proposals exceed. The
#: instant trials score higher the more of the budget a student uses (as real accuracy does), so TPE keeps proposing
#: at the budget's edge, where about half its proposals fall over it (reported as ``rejected``).
SPACE = """\
description: driver-scale benchmark (DCASE space, a budget most proposals exceed; trials are instant)
profile: dcase
split: {val_fraction: 0.2, seed: 0}
budget: {max_param_bytes: 40000, param_dtype: int8, max_macs: 8000000}
student:
  base_channels: {type: int, low: 16, high: 64, step: 8}
  channels_multiplier: {type: float, low: 1.4, high: 2.6}
  expansion_rate: {type: float, low: 1.5, high: 4.0}
  n_stages: {type: int, low: 2, high: 4}
  blocks_per_stage: {type: int, low: 1, high: 4}
  strides: {b2: [1, 1], b3: [1, 2], b4: [2, 1]}
distill:
  kd_weight: {type: float, low: 0.0, high: 1.0}
  temperature: {type: float, low: 1.0, high: 5.0, log: true}
  use_embedding: {type: categorical, choices: [true, false]}
  emb_weight: {type: float, low: 0.05, high: 5.0, log: true, when: {use_embedding: true}, default: 0.0}
  emb_loss: {type: categorical, choices: [mse, cosine], when: {use_embedding: true}}
  embed_block: {type: categorical, choices: [last, penultimate], when: {use_embedding: true}}
train:
  lr: {type: float, low: 3.0e-4, high: 5.0e-3, log: true}
  weight_decay: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
  batch_size: {type: categorical, choices: [64, 128, 256]}
  epochs: {type: int, low: 40, high: 120, step: 20}
search:
  sampler: tpe
  seed: 0
  num_samples: 100000
  max_concurrent: 2
  max_consecutive_rejections: 100000
  n_startup_trials: 20
  asha: {enabled: false}
  resources: {cpus_per_trial: 1, gpus_per_trial: 0}
  max_failures: 0
references: []
"""
BUDGET_BYTES, BUDGET_MACS = 40_000, 8_000_000


def driver_rss_mb() -> float:
    """This process's resident memory in MB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def instant_score(config: dict[str, Any]) -> float:
    """The instant trials' score: 0.3 + 0.5 x the smaller of the budget shares used (bytes, MACs) + noise < 0.1."""
    cost = config["cost"]
    used = min(cost["param_bytes"] / BUDGET_BYTES, cost["macs"] / BUDGET_MACS)
    digest = hashlib.sha256(json.dumps(config["proposal"], sort_keys=True).encode()).digest()
    return 0.3 + 0.5 * min(used, 1.0) + 0.1 * int.from_bytes(digest[:4], "big") / 2**32


def _instant_trial(config: dict[str, Any]) -> None:
    """A trial that 'trains' at once: one epoch, a score that grows with the share of the budget the student uses
    (plus a little noise that depends on the proposal), so that TPE keeps proposing at the budget's edge."""
    from ray import tune

    score = instant_score(config)
    tune.report({"val_macro_accuracy": score, "val_log_loss": 1.0 - score, "epoch": 1, "epochs_planned": 1,
                 **{k: int(v) for k, v in config["cost"].items()}})


class _Recorder:
    """The searcher's event sink: counts proposals (one ``rejected`` or ``started`` event each) and samples."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.proposals = self.trained = 0
        self.searcher_s = 0.0  # wall time inside the searcher's suggest / on_trial_complete (finished calls)
        self.gc_s = 0.0  # time in Python's garbage collector (any part of the driver process's main thread)
        self._gc_since: float | None = None
        self.call_since: float | None = None  # start of the searcher call in progress (samples are taken inside it)
        self.t0 = time.perf_counter()
        self.samples: list[dict[str, float]] = [self._sample()]

    def _sample(self) -> dict[str, float]:
        now = time.perf_counter()
        running = now - self.call_since if self.call_since is not None else 0.0
        return {"proposals": self.proposals, "trained": self.trained, "t": now - self.t0,
                "searcher_s": self.searcher_s + running, "gc_s": self.gc_s, "cpu_s": time.process_time(),
                "rss_mb": driver_rss_mb()}

    def gc_callback(self, phase: str, info: dict[str, Any]) -> None:
        """For ``gc.callbacks``: adds each collection's duration to ``gc_s``."""
        if phase == "start":
            self._gc_since = time.perf_counter()
        elif self._gc_since is not None:
            self.gc_s += time.perf_counter() - self._gc_since
            self._gc_since = None

    def timed(self, call: Any, *args: Any) -> Any:
        """``call(*args)``, its wall time added to ``searcher_s`` (also while it runs, for samples taken inside)."""
        self.call_since = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.searcher_s += time.perf_counter() - self.call_since
            self.call_since = None

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event not in ("rejected", "started"):
            return
        self.proposals += 1
        self.trained += event == "started"
        if self.proposals % self.every == 0:
            self.samples.append(self._sample())

    def finish(self) -> None:
        if self.samples[-1]["proposals"] != self.proposals:
            self.samples.append(self._sample())


def _capped_searcher(spec: Any, storage_url: str, cap: int, max_seconds: float | None, recorder: _Recorder,
                     channel: str) -> Any:
    from ..search.searcher import BudgetedSearcher

    class Capped(BudgetedSearcher):
        """The real searcher, stopping (Searcher.FINISHED) after ``cap`` proposals or ``max_seconds``; it adds the
        wall time of its ``suggest`` and ``on_trial_complete`` calls to ``recorder.searcher_s``."""

        asked = 0
        timed_out = False

        def _propose_one(self) -> Any:
            if self.asked >= cap:
                return None
            if max_seconds is not None and time.perf_counter() - recorder.t0 > max_seconds:
                self.timed_out = True
                return None
            self.asked += 1
            return super()._propose_one()

        def suggest(self, trial_id: str) -> Any:
            return recorder.timed(super().suggest, trial_id)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            recorder.timed(super().on_trial_complete, trial_id, result, error)

    return Capped(spec, storage_url, "driver-bench", n_classes=10, channel=channel)


def _windows(samples: list[dict[str, float]]) -> list[dict[str, float]]:
    out = []
    for a, b in zip(samples, samples[1:]):
        dt = b["t"] - a["t"]
        if b["proposals"] > a["proposals"] and dt > 0:
            n = b["proposals"] - a["proposals"]
            out.append({"proposals": b["proposals"], "proposals_per_s": n / dt,
                        "ms_per_proposal": 1000 * dt / n,
                        "searcher_ms_per_proposal": 1000 * (b["searcher_s"] - a["searcher_s"]) / n,
                        "gc_ms_per_proposal": 1000 * (b["gc_s"] - a["gc_s"]) / n,
                        "cpu_ms_per_proposal": 1000 * (b["cpu_s"] - a["cpu_s"]) / n,
                        "cpu_busy": (b["cpu_s"] - a["cpu_s"]) / dt,
                        "rss_mb": b["rss_mb"], "trained": b["trained"]})
    return out


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """proposals/s, the driver's CPU and searcher time per proposal, and driver RSS against the number of proposals,
    one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._io import atomic_path

    w = result["windows"]
    x = [r["proposals"] for r in w]
    fig, (ax1, ax3, ax2) = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    ax1.plot(x, [r["proposals_per_s"] for r in w], marker=".")
    ax1.axhline(20, color="grey", ls="--", lw=1, label="20 proposals/s")
    ax1.set_ylabel(f"proposals/s (windows of {result['every']})")
    ax1.legend(loc="upper right")
    # what a proposal cost the driver: its CPU time, and the wall time inside the searcher (the same work throughout)
    ax3.plot(x, [r["cpu_ms_per_proposal"] for r in w], marker=".", label="driver CPU time")
    ax3.plot(x, [r["searcher_ms_per_proposal"] for r in w], marker=".", label="inside the searcher (wall)")
    ax3.set_ylabel("ms per proposal")
    ax3.set_ylim(bottom=0)
    ax3.legend(loc="lower right")
    ax2.plot([s["proposals"] for s in result["samples"]], [s["rss_mb"] for s in result["samples"]], marker=".")
    ax2.set_ylabel("driver RSS (MB)")
    ax2.set_xlabel("proposals (rejected + trained)")
    fig.suptitle(f"driver at scale: {result['proposals']:,} proposals, {result['trained']:,} instant trials")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def run(proposals: int = 10_000, every: int = 250, out: str | os.PathLike[str] | None = None, quick: bool = False,
        max_seconds: float | None = 1500.0, work_dir: str | os.PathLike[str] | None = None,
        sampler_sizes: tuple[int, ...] = (1000, 5000, 10000)) -> dict[str, Any]:
    """One long benchmark search (see the module docstring); ``quick``: 300 proposals, windows of 50. The plot goes
    to ``out``, else to ``work_dir`` when given (``asc-search bench --work-dir DIR``: DIR/driver/driver_scale.png)."""
    if out is None and work_dir is not None:
        out = work_dir
    if quick:
        proposals, every = min(proposals, 300), min(every, 50)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="asc-driver-bench-") as tmp:
        work = Path(work_dir) if work_dir is not None else Path(tmp)
        recorder, searcher, errors, init_rss, study_trials = _search(work, proposals, every, max_seconds)
    samples = recorder.samples
    windows = _windows(samples)
    rates = [w["proposals_per_s"] for w in windows]
    whole = next(iter(_windows([samples[0], samples[-1]])), None)  # the run as one window
    total_s = samples[-1]["t"]
    result: dict[str, Any] = {
        "benchmark": "driver",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average_1m_before": load_before,
                    "load_average_1m_after": round(os.getloadavg()[0], 2)},
        "proposals_asked_for": proposals,
        "max_seconds": max_seconds,
        "stopped_by_time_cap": bool(searcher.timed_out),
        "proposals": recorder.proposals,
        "study_trials": study_trials,
        "trained": recorder.trained,
        "rejected": recorder.proposals - recorder.trained,
        "trial_errors": errors,
        "every": every,
        "wall_s": total_s,
        "proposals_per_s": recorder.proposals / total_s if total_s > 0 else None,
        "proposals_per_s_lowest_window": min(rates) if rates else None,
        "proposals_per_s_first_window": rates[0] if rates else None,
        "proposals_per_s_last_window": rates[-1] if rates else None,
        "searcher_share_of_wall": recorder.searcher_s / total_s if total_s > 0 else None,
        "gc_share_of_wall": recorder.gc_s / total_s if total_s > 0 else None,
        "cpu_ms_per_proposal": whole["cpu_ms_per_proposal"] if whole else None,
        "cpu_busy": whole["cpu_busy"] if whole else None,
        "rss_mb_after_ray_init": init_rss,
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "windows": windows,
        "samples": samples,
    }
    if sampler_sizes:
        from . import sampler_scaling

        result["sampler_scaling"] = sampler_scaling.run(sizes=(200, 400) if quick else sampler_sizes,
                                                        asks=3 if quick else 10)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        result["plot"] = str(plot(result, Path(out) / "driver_scale.png"))
    return result


def _search(work: Path, proposals: int, every: int, max_seconds: float | None) -> tuple[Any, Any, int, float, int]:
    """The benchmark search in ``work``: (recorder, searcher, trial errors, RSS after ray.init, trials in the study)."""
    import optuna
    from ray import tune

    from .._runtime import quiet_ray_env, ray_session
    from ..search.channels import register_sink, unregister_sink
    from ..search.scheduler import make_scheduler
    from ..search.space import load_space
    from ..search.study import open_study

    quiet_ray_env()
    work.mkdir(parents=True, exist_ok=True)
    space_file = work / "driver-bench.yaml"
    space_file.write_text(SPACE, encoding="utf-8")
    spec = load_space(space_file)
    db = work / "study.db"
    if db.exists():
        db.unlink()
    open_study(spec, f"sqlite:///{db}", "driver-bench")  # created up front, as the search driver does
    recorder = _Recorder(every)
    channel = f"driver-bench-{os.getpid()}"
    register_sink(channel, recorder)
    gc.callbacks.append(recorder.gc_callback)
    try:
        with ray_session("local", num_cpus=2):
            init_rss = driver_rss_mb()
            searcher = _capped_searcher(spec, f"sqlite:///{db}", proposals, max_seconds, recorder, channel)
            tuner = tune.Tuner(
                tune.with_resources(_instant_trial, {"cpu": 1}),
                tune_config=tune.TuneConfig(search_alg=searcher, num_samples=proposals,
                                            scheduler=make_scheduler(spec, n_train=1000),  # the search's (FIFO here)
                                            max_concurrent_trials=spec.search.max_concurrent, reuse_actors=True),
                run_config=tune.RunConfig(name="ray", storage_path=str(work), verbose=0,
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
            )
            recorder.t0 = time.perf_counter()
            recorder.samples = [recorder._sample()]
            grid = tuner.fit()
            recorder.finish()
            errors = len(grid.errors)
    finally:
        gc.callbacks.remove(recorder.gc_callback)
        unregister_sink(channel)
    study_trials = len(optuna.load_study(study_name="driver-bench", storage=f"sqlite:///{db}").trials)
    return recorder, searcher, errors, init_rss, study_trials


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asc_search.bench.driver", description=__doc__.splitlines()[0])
    p.add_argument("--proposals", type=int, default=10_000, help="proposals in all (default 10,000)")
    p.add_argument("--every", type=int, default=250, help="record every K proposals (default 250)")
    p.add_argument("--out", default=None, help="folder for driver_scale.png (default: no plot)")
    p.add_argument("--max-seconds", type=float, default=1500.0, help="stop after this wall time (default 1500; 0: none)")
    p.add_argument("--quick", action="store_true", help="300 proposals, windows of 50")
    a = p.parse_args(argv)
    json.dump(run(proposals=a.proposals, every=a.every, out=a.out, quick=a.quick, max_seconds=a.max_seconds or None),
              sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
