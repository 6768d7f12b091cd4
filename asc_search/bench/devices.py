"""Benchmark of the device track (issue #14): device impulse responses (DIR) on unseen devices, and device-specific
students on seen devices, over several seeds.

    python -m asc_search.bench.devices [--run RUN | --demo-dir DIR | --cache DIR --space FILE] [--work-dir DIR]
                                       [--seeds 3] [--dir-p 0.6] [--quick]

``run()`` returns a dict (no printing). On a finished search run (``--run``: its feature and teacher caches from its
run.json) or demo (``asc-search demo``; run first into the work folder when none is given), with the best searched
student; or, without Ray, on a feature cache and its teacher cache (``--cache``, beside it ``CACHE-teacher``) with
the first feasible proposal of the search file ``--space`` drawn by a random sampler seeded 0 (a student of the
space, not a searched one) (architecture, distillation and recipe from its trial), per
seed (the trial's seed + k):

* the student trained from scratch on the demo's train part without DIR and with DIR (``dir_p``, the built-in generic
  bank), the best epoch on validation; test macro accuracy overall, on seen and on unseen devices;
* from the model without DIR, a device-specific copy per training device with >= ``min_device_clips`` clips
  (:func:`asc_search.export.devices.finetune_device`, as ``export --per-device`` makes them); the routed system
  (each test clip by its device's model, else the general model) against the general model on seen devices.

Scores are the float32 models' (torch), not the deployed graphs': the comparison is between training methods.
The summary gives mean and sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["run"]


def _demo(work: Path, demo_dir: Any, quick: bool, on_event: Any) -> Path:
    if demo_dir is not None:
        return Path(demo_dir)
    from ..demo import DemoSettings, run_demo

    settings = (DemoSettings(clips=800, teacher_epochs=4, num_samples=4, student_epochs=3, device="cpu") if quick
                else DemoSettings(device="cpu"))
    run_demo(work / "demo", settings, force=True, on_event=on_event)
    return work / "demo"


def _train(proposal: Any, parts: dict[str, Any], embedding_shape: Any, gains: Any) -> torch.nn.Module:
    from ..models.build import build_student_and_head
    from ..training.loop import fit

    torch.manual_seed(proposal.train.seed)
    model, head = build_student_and_head(proposal.student, proposal.distill, embedding_shape)
    result = fit(model, parts["train"][0], parts["val"][0], proposal.train, distill=proposal.distill, head=head,
                 dir_log_gains=gains)
    model.load_state_dict(result.best_state)
    return model.eval()


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from ..training.inference import predict

    return predict(model, x, device=torch.device("cpu"))


def _one_seed(proposal: Any, parts: dict[str, Any], labels: tuple[str, ...], embedding_shape: Any, gains: Any,
              dir_p: float, settings: Any, on_event: Any) -> dict[str, Any]:
    import numpy as np

    from .._progress import log
    from ..export.devices import devices_to_fit, finetune_device
    from ..training.metrics import score

    test, test_table = parts["test"]
    out: dict[str, Any] = {"seed": proposal.train.seed}
    models, arms = {}, {}
    for name, p in (("no_dir", 0.0), ("dir", dir_p)):
        log(on_event, f"seed {proposal.train.seed}: training the student, dir_p {p}")
        arms[name] = type(proposal)(student=proposal.student, distill=proposal.distill,
                                    train=proposal.train.replace(dir_p=p), params=proposal.params)
        models[name] = _train(arms[name], parts, embedding_shape, gains)
        s = score(_logits(models[name], test.x), test.y, test_table, labels)
        out[name] = {k: s[k] for k in ("macro_accuracy", "seen_macro_accuracy", "unseen_macro_accuracy")}
    general = models["no_dir"]
    routed = _logits(general, test.x)
    kept, skipped = devices_to_fit(parts["train"][1], settings, on_event)
    for dev in kept:
        log(on_event, f"seed {proposal.train.seed}: device model {dev}")
        tuned, _, _ = finetune_device(general, dev, arms["no_dir"], parts, settings, embedding_shape=embedding_shape,
                                      compute="cpu")  # the model without DIR, fine-tuned without DIR
        rows = np.flatnonzero(test_table["device"].astype(str).to_numpy() == dev)
        if len(rows):
            routed[torch.from_numpy(rows)] = _logits(tuned, test.x[rows])
    s = score(routed, test.y, test_table, labels)
    out["device_specific"] = {k: s[k] for k in ("macro_accuracy", "seen_macro_accuracy", "unseen_macro_accuracy")}
    out["device_models"], out["skipped_devices"] = kept, skipped
    return out


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": round(statistics.fmean(values), 4),
            "sd": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0}


def _run_paths(run_dir: Path) -> dict[str, Path]:
    from ..errors import NotFoundError
    from ..search.runfolder import read_run_record

    record = read_run_record(run_dir)
    if record is None or record.cache_dir is None:
        raise NotFoundError(f"{run_dir}: no run.json naming the run's feature cache")
    return {"run": run_dir, "cache": Path(record.cache_dir),
            "teacher_cache": Path(record.teacher_cache_dir) if record.teacher_cache_dir else None}


def _first_feasible(spec: Any, n_classes: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(1000):
        proposal = spec.sample(study.ask(), n_classes=n_classes, trial_seed=spec.search.seed)
        if spec.cost(proposal.student).passed:
            return proposal
    raise RuntimeError(f"{spec.source}: no feasible proposal in 1000 random draws")


def run(work_dir: str | os.PathLike[str] | None = None, demo_dir: str | os.PathLike[str] | None = None,
        quick: bool = False, seeds: int = 3, dir_p: float = 0.6, min_device_clips: int = 50,
        device_epochs: int | None = None, run_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None, space: str | os.PathLike[str] | None = None,
        on_event: Any = None) -> dict[str, Any]:
    """See the module docstring."""
    from ..data.cache import load_features
    from ..data.impulses import build_ir_bank
    from ..data.teacher_cache import load_teacher_targets
    from ..demo import load_summary
    from ..export.devices import DeviceSettings
    from ..export.inputs import split_tensors
    from ..search.runfolder import SEARCH_FILE, best_trial, load_trials, trial_proposal
    from ..search.space import load_space

    own = tempfile.TemporaryDirectory(prefix="asc-bench-devices-") if work_dir is None else None
    work = Path(own.name if own is not None else work_dir)
    started = time.perf_counter()
    try:
        if cache_dir is not None:
            paths = {"cache": Path(cache_dir), "teacher_cache": None}
        elif run_dir is not None:
            paths = _run_paths(Path(run_dir))
        else:
            paths = {k: Path(v) for k, v in load_summary(_demo(work, demo_dir, quick, on_event))["paths"].items()}
        spec = load_space(space if cache_dir is not None else paths["run"] / SEARCH_FILE)
        features = load_features(paths["cache"])
        targets = load_teacher_targets(features, paths.get("teacher_cache"))
        parts = split_tensors(features, spec.split, targets)
        labels = tuple(features.labels)
        if cache_dir is not None:
            row, best = {"trial_id": -1}, _first_feasible(spec, len(labels))
        else:
            row = best_trial(load_trials(paths["run"]), spec.budget)
            best = trial_proposal(row)
        bank = build_ir_bank(features.profile)
        settings = DeviceSettings(min_clips=min_device_clips, epochs=device_epochs)
        per_seed = []
        for k in range(seeds):
            proposal = type(best)(student=best.student, distill=best.distill,
                                  train=best.train.replace(device="cpu", seed=best.train.seed + k), params=best.params)
            per_seed.append(_one_seed(proposal, parts, labels, targets.embedding_shape, bank.log_gains, dir_p,
                                      settings, on_event))
    finally:
        if own is not None:
            own.cleanup()

    def col(arm: str, key: str) -> dict[str, float]:
        return _mean_sd([float(s[arm][key]) for s in per_seed])

    summary = {
        "seen_general": col("no_dir", "seen_macro_accuracy"),
        "seen_device_specific": col("device_specific", "seen_macro_accuracy"),
        "unseen_without_dir": col("no_dir", "unseen_macro_accuracy"),
        "unseen_with_dir": col("dir", "unseen_macro_accuracy"),
        "all_without_dir": col("no_dir", "macro_accuracy"),
        "all_with_dir": col("dir", "macro_accuracy"),
    }
    return {"benchmark": "devices", "demo_dir": str(demo_dir) if demo_dir is not None else None,
            "run_dir": str(run_dir) if run_dir is not None else None,
            "trial_id": int(row["trial_id"]), "student": best.student.to_dict(), "dir_p": dir_p, "dir_bank": bank.to_record(),
            "min_device_clips": min_device_clips, "device_epochs": device_epochs, "seeds": seeds,
            "split_sizes": {k: len(v[0]) for k, v in parts.items()}, "summary": summary, "per_seed": per_seed,
            "scored": "float32 models (torch) on the demo's test split", "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asc_search.bench.devices", description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a finished search run folder (its caches from run.json)")
    p.add_argument("--demo-dir", default=None, help="a finished demo folder (default: run the demo first)")
    p.add_argument("--cache", default=None, help="a feature cache (with CACHE-teacher beside it), instead of a run")
    p.add_argument("--space", default=None, help="with --cache: the search file whose first feasible random "
                   "proposal is measured")
    p.add_argument("--work-dir", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--dir-p", type=float, default=0.6)
    p.add_argument("--min-device-clips", type=int, default=50)
    p.add_argument("--device-epochs", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="a small demo when none is given")
    a = p.parse_args(argv)
    print(json.dumps(run(a.work_dir, a.demo_dir, a.quick, a.seeds, a.dir_p, a.min_device_clips, a.device_epochs,
                         a.run, a.cache, a.space), indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
