"""Benchmark: how fast does each way of searching find a good student, for the same budget of trial-epochs?

    python -m asc_search.bench.efficiency [--clips N] [--seeds 0,1,2] [--budget E] [--work-dir DIR] [--quick]

On the built-in data (synthetic, ``quick`` profile, the demo's sizes; or a finished demo's caches), with
``search_spaces/quick.yaml``, each method runs once per seed (``search.seed`` = the seed) until it has trained
``budget`` trial-epochs (counted as they are reported: every trained epoch of every trial; over-budget proposals
cost none), then Tune stops it:

* ``default``: this tool's search as shipped: TPE + budget constraints (over-budget proposals rejected before they
  become trials) + ASHA, with the reference arms;
* ``default_no_references``: the same without the reference arms (``references: []``);
* ``random_no_asha``: random sampling, no early stopping, no references (still rejecting over-budget proposals);
* ``ray_optuna_search``: Ray Tune's own ``OptunaSearch`` (TPE, seeded) on the same space, with the same ASHA: a
  define-by-run function draws the proposal (:meth:`SearchSpec.sample`); every proposal becomes a Ray trial, and the
  trainable costs it and reports a score of 0 without training when it is over budget (what an ``OptunaSearch``
  user pays).

Per method and seed: the best validation macro accuracy reached (of any trained epoch of any trial: each is a
checkpoint export can restore), and the trial-epochs and wall time until each method first reached random search's
final best of the same seed (None: never). Then mean ± sd over seeds. Each (method, seed) trace is kept in
``work_dir/traces/`` and reused by a later call with the same settings, so a long measurement can run in parts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["METHODS", "run", "summarise_traces", "reach"]

METHODS = ("default", "default_no_references", "random_no_asha", "ray_optuna_search")
QUICK_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "quick.yaml"


def reach(trace: list[dict[str, Any]], target: float | None) -> dict[str, Any] | None:
    """The first point of ``trace`` (trained epochs in order: ``trial_epochs``, ``wall_s``, ``val``) whose best so
    far reaches ``target``; None when none does."""
    if target is None:
        return None
    for point in trace:
        if point["val"] >= target - 1e-12:
            return {"trial_epochs": point["trial_epochs"], "wall_s": point["wall_s"]}
    return None


def summarise_traces(traces: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per method: per seed, its final best, trial-epochs used and when it reached random search's final best of
    that seed; then mean ± sd over seeds (``reached`` counts the seeds where it did)."""
    from ..training.seeds import mean_sd

    out: dict[str, Any] = {}
    for method, by_seed in traces.items():
        per_seed = {}
        for seed, t in sorted(by_seed.items()):
            target = (traces.get("random_no_asha", {}).get(seed) or {}).get("final_best")
            per_seed[seed] = {"final_best": t["final_best"], "trial_epochs_used": t["trial_epochs"],
                              "wall_s": t["wall_s"], "trials": t["trials"], "target": target,
                              "reached": reach(t["trace"], target)}
        hits = [p["reached"] for p in per_seed.values() if p["reached"] is not None]
        out[method] = {
            "per_seed": per_seed,
            "final_best": mean_sd([p["final_best"] for p in per_seed.values()]),
            "reached": f"{len(hits)}/{len(per_seed)}",
            "trial_epochs_to_target": mean_sd([h["trial_epochs"] for h in hits]),
            "wall_s_to_target": mean_sd([h["wall_s"] for h in hits]),
            "wall_s_total": mean_sd([p["wall_s"] for p in per_seed.values()]),
        }
    return out


# ------------------------------------------------------------------------------------------------ counting


class _Ledger:
    """Trained epochs as Tune reports them (driver side): the trace, and whether the budget is used up."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.t0 = time.perf_counter()
        self.epochs = 0
        self.best = float("-inf")
        self.trials: set[str] = set()
        self.trace: list[dict[str, Any]] = []

    def add(self, trial_id: str, result: dict[str, Any]) -> None:
        if int(result.get("epoch") or 0) < 1 or result.get("diverged") or self.epochs >= self.budget:
            return
        self.epochs += 1
        self.trials.add(trial_id)
        self.best = max(self.best, float(result.get("val_macro_accuracy") or 0.0))
        self.trace.append({"trial_epochs": self.epochs, "wall_s": round(time.perf_counter() - self.t0, 2),
                           "val": self.best})


def _tune_hooks(ledger: _Ledger) -> tuple[Any, Any]:
    """A Tune stopper that stops everything once the ledger's budget is used, and a callback that starts its clock
    when the experiment starts and feeds it every result."""
    from ray import tune

    class Stop(tune.Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return ledger.epochs >= ledger.budget

    class Count(tune.Callback):
        def setup(self, **info: Any) -> None:
            ledger.t0 = time.perf_counter()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            ledger.add(trial.trial_id, result)

    return Stop(), Count()


# ------------------------------------------------------------------------------------------------ methods


def _space_for(method: str, seed: int, work: Path) -> Path:
    raw = yaml.safe_load(QUICK_SPACE.read_text(encoding="utf-8"))
    raw["search"].update(seed=seed, num_samples=1000, max_consecutive_rejections=1000)
    if method != "default":
        raw["references"] = []
    if method == "random_no_asha":
        raw["search"]["sampler"] = "random"
        raw["search"]["asha"] = {"enabled": False}
    path = work / f"{method}-{seed}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def _run_ours(method: str, seed: int, caches: tuple[Path, Path], budget: int, work: Path) -> _Ledger:
    from ..search.driver import run_search

    ledger = _Ledger(budget)
    stopper, callback = _tune_hooks(ledger)
    run_search(caches[0], _space_for(method, seed, work), teacher_cache=caches[1], name=f"{method}-{seed}",
               results_dir=work / "runs", stopper=stopper, callbacks=[callback])
    return ledger


def _optuna_trial(config: dict[str, Any], data: dict[str, Any], space_text: str) -> None:
    """The trainable an OptunaSearch user writes: cost the proposal, report 0 untrained when over budget."""
    from ray import tune

    from ..search.space import parse_space
    from ..search.trainable import fit_proposal

    spec = parse_space(space_text)
    if not _passes(spec, config):
        tune.report({"val_macro_accuracy": 0.0, "epoch": 0, "over_budget": True})
        return
    fit_proposal({"proposal": config["proposal"]}, data, on_epoch=lambda e, m, s: tune.report(
        {"val_macro_accuracy": float(m["val_macro_accuracy"]), "epoch": int(e), "steps": int(m["steps"])}))


def _passes(spec: Any, config: dict[str, Any]) -> bool:
    from ..search.spec import Proposal

    return spec.cost(Proposal.from_dict(config["proposal"]).student).passed


class _DefineByRun:
    """OptunaSearch's define-by-run space: draws a proposal as the search does. An object of a module-level class,
    not a closure, because Tune checkpoints its searcher (OptunaSearch included) by pickling it."""

    def __init__(self, space_text: str, n_classes: int, seed: int) -> None:
        self.space_text, self.n_classes, self.seed = space_text, n_classes, seed
        self._spec: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_spec": None}  # parsed again after unpickling

    def __call__(self, trial: Any) -> dict[str, Any]:
        from ..search.space import parse_space

        if self._spec is None:
            self._spec = parse_space(self.space_text)
        proposal = self._spec.sample(trial, n_classes=self.n_classes, trial_seed=self.seed + trial.number)
        return {"proposal": proposal.to_dict()}


def _run_optuna_search(seed: int, caches: tuple[Path, Path], budget: int, work: Path) -> _Ledger:
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    from .._runtime import quiet_ray_env, ray_session
    from ..data.cache import load_features
    from ..data.teacher_cache import load_teacher_targets
    from ..search.scheduler import make_scheduler
    from ..search.space import load_space
    from ..search.trainable import prepare_trial_data

    spec = load_space(_space_for("ray_optuna_search", seed, work))
    features = load_features(caches[0])
    data = prepare_trial_data(features, load_teacher_targets(features, caches[1]), spec)
    n_classes = len(features.labels)
    del features

    s = spec.search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.n_startup_trials)
    searcher = OptunaSearch(space=_DefineByRun(spec.text, n_classes, seed), metric="val_macro_accuracy", mode="max", sampler=sampler)
    ledger = _Ledger(budget)
    stopper, callback = _tune_hooks(ledger)
    quiet_ray_env()
    with ray_session(None):
        trainable = tune.with_resources(tune.with_parameters(_optuna_trial, data=data, space_text=spec.text),
                                        {"cpu": s.cpus_per_trial})
        tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=make_scheduler(spec, len(data["train_y"])),
                                        num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=f"ray_optuna_search-{seed}", storage_path=str(work / "runs"), verbose=0,
                                      stop=stopper, callbacks=[callback]),
        ).fit()
    return ledger


# ------------------------------------------------------------------------------------------------ the data


def _caches(work: Path, clips: int, teacher_epochs: int, demo_dir: Path | None) -> tuple[Path, Path]:
    """The feature cache and teacher cache to search on: a finished demo's, or built-in data made in ``work``
    (synth -> features (quick) -> teacher -> embed; reused when already there)."""
    if demo_dir is not None:
        from ..demo import load_summary

        paths = load_summary(demo_dir)["paths"]
        return Path(paths["cache"]), Path(paths["teacher_cache"])
    from ..data.cache import load_features
    from ..data.features import build_feature_cache
    from ..data.synth import synthesize
    from ..teacher import default_train_config, embed_features, train_teacher

    data, cache, teacher, tcache = (work / n for n in ("data", "cache", "teacher", "cache-teacher"))
    if not (tcache / "_done").exists():
        synthesize(data, n_clips=clips, seed=0)
        build_feature_cache(data, cache, profile="quick")
        features = load_features(cache)
        cfg = default_train_config(features.x.shape[1:], epochs=teacher_epochs, seed=0)
        train_teacher(cache, teacher, train_config=cfg, features=features, force=True)
        embed_features(cache, [teacher], tcache)
        (tcache / "_done").write_text("ok")
    return cache, tcache


def run(clips: int = 3000, seeds: tuple[int, ...] | list[int] = (0, 1, 2), budget: int = 100,
        teacher_epochs: int = 12, methods: tuple[str, ...] = METHODS, quick: bool = False,
        work_dir: str | os.PathLike[str] | None = None, demo_dir: str | os.PathLike[str] | None = None
        ) -> dict[str, Any]:
    """Measure every method on every seed (see the module docstring); returns one JSON-ready dict."""
    import tempfile

    if quick:
        clips, seeds, budget, teacher_epochs = min(clips, 600), tuple(seeds)[:1], min(budget, 12), min(teacher_epochs, 2)
    own = tempfile.TemporaryDirectory(prefix="asc-efficiency-") if work_dir is None else None
    work = Path(own.name if own is not None else work_dir)
    (work / "traces").mkdir(parents=True, exist_ok=True)
    settings = {"clips": clips, "budget": budget, "teacher_epochs": teacher_epochs, "space": str(QUICK_SPACE),
                "space_sha256": __import__("hashlib").sha256(QUICK_SPACE.read_bytes()).hexdigest(),
                "demo_dir": str(demo_dir) if demo_dir else None}
    try:
        caches = _caches(work, clips, teacher_epochs, Path(demo_dir) if demo_dir else None)
        traces: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in methods}
        for seed in seeds:
            for method in methods:
                traces[method][int(seed)] = _trace(method, int(seed), caches, budget, work, settings)
    finally:
        if own is not None:
            own.cleanup()
    return {"settings": {**settings, "seeds": list(seeds), "methods": list(methods),
                         "cpu_count": os.cpu_count()},
            "methods": summarise_traces(traces)}


def _trace(method: str, seed: int, caches: tuple[Path, Path], budget: int, work: Path,
           settings: dict[str, Any]) -> dict[str, Any]:
    """One method on one seed: measured, or the trace a previous call with the same settings kept."""
    path = work / "traces" / f"{method}-{seed}.json"
    if path.is_file():
        kept = json.loads(path.read_text(encoding="utf-8"))
        if kept.get("settings") == settings:
            return kept
    import shutil

    for leftover in (work / "runs" / f"{method}-{seed}",):
        shutil.rmtree(leftover, ignore_errors=True)
    t0 = time.perf_counter()
    if method == "ray_optuna_search":
        ledger = _run_optuna_search(seed, caches, budget, work)
    else:
        ledger = _run_ours(method, seed, caches, budget, work)
    out = {"settings": settings, "method": method, "seed": seed, "trial_epochs": ledger.epochs,
           "trials": len(ledger.trials), "final_best": ledger.best if ledger.trace else None,
           "wall_s": round(time.perf_counter() - t0, 1), "trace": ledger.trace}
    from .._io import write_json_atomic

    write_json_atomic(path, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=3000)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated search seeds")
    p.add_argument("--budget", type=int, default=100, help="trial-epochs per method and seed")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--work-dir", default=None, help="keeps the data and each (method, seed) trace for reuse")
    p.add_argument("--demo-dir", default=None, help="search a finished demo's caches instead of new data")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    result = run(clips=args.clips, seeds=[int(s) for s in args.seeds.split(",") if s.strip()], budget=args.budget,
                 methods=tuple(m for m in args.methods.split(",") if m), quick=args.quick, work_dir=args.work_dir,
                 demo_dir=args.demo_dir)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
