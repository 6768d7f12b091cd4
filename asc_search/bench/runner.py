"""``asc-search bench``: every area's figures side by side in one run, plus an accuracy table on the built-in data.

1. **Per-area benchmarks**: ``asc_search.bench.{features,complexity,teacher,search,deploy}`` each expose ``run(...)
   -> dict`` (their own module docstrings say what they measure). They are called one after the other, never
   concurrently (timings on 2 cores would disturb each other); a module that is missing or fails is reported as
   such, the others still run. ``quick=True`` passes each module small sizes (its ``quick`` flag when it has one).
2. **Accuracy table** on the built-in synthetic data, all scored once on the same test split:
   the teacher; the DCASE 2024 baseline architecture trained without KD; the same trained with KD from the same
   teacher (CP-JKU's DCASE 2023 recipe: loss = 0.02 CE + 0.98 KD at temperature 2, unless told otherwise); and
   the best searched student (the demo's export, scored as deployed: its graph at the budget's precision, run by
   onnxruntime). The baselines use the best student's training recipe
   (learning rate, weight decay, batch size, epochs) on the same train part, choosing their epoch on the same
   validation part. Each row: params, parameter bytes (at the budget's dtype), MACs, within budget, test macro
   accuracy, test log loss. The inputs come from a finished demo folder (``asc-search demo``); when none is given,
   the demo is run first into the work folder.

Nothing here prints; ``on_event`` (:mod:`asc_search._progress`) receives progress.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from .._progress import OnEvent, log
from ..errors import ConfigError, NotFoundError

__all__ = ["AREAS", "QUICK_OVERRIDES", "run_area", "accuracy_table", "run_bench", "flatten"]

AREAS: tuple[str, ...] = ("features", "complexity", "teacher", "search", "deploy")
#: Small sizes for ``--quick``, per area, passed only where the module's run() takes that argument.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "features": {"quick": True, "n_clips": 200},
    "complexity": {"quick": True, "n_candidates": 10},
    "teacher": {"quick": True, "quick_clips": 128, "dcase_clips": 16},
    "search": {"quick": True, "clips": 256, "trials": 2, "dcase_clips": 32},
    "deploy": {"quick": True, "qat_epochs": 1, "dcase_val_clips": 64, "fast_graphs": True},
}
#: The KD recipe the "with KD" baseline uses (CP-JKU's DCASE 2023 winner: 0.02 CE + 0.98 KD, T = 2).
BASELINE_KD = {"kd_weight": 0.98, "temperature": 2.0}

# ------------------------------------------------------------------------------------------------ per area


def run_area(name: str, quick: bool = False, work_dir: Path | None = None,
             demo_dir: Path | None = None) -> dict[str, Any]:
    """Run ``asc_search.bench.<name>.run`` with the arguments its signature takes (``demo_dir``: a finished demo,
    for the areas that measure one).

    Returns ``{"area", "available", "seconds", "result" | "error", "arguments"}``; never raises for a module
    that is missing or fails (the bench goes on with the other areas).
    """
    out: dict[str, Any] = {"area": name, "available": False}
    try:
        module = importlib.import_module(f"asc_search.bench.{name}")
    except ImportError as exc:
        out["error"] = f"no benchmark module asc_search.bench.{name} ({exc})"
        return out
    run = getattr(module, "run", None)
    if not callable(run):
        out["error"] = f"asc_search.bench.{name} has no run() function"
        return out
    params = inspect.signature(run).parameters
    kwargs: dict[str, Any] = {}
    if quick:
        kwargs.update({k: v for k, v in QUICK_OVERRIDES.get(name, {}).items() if k in params})
    for key in ("work_dir", "workdir"):
        if key in params and work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            kwargs[key] = work_dir
    if "demo_dir" in params and demo_dir is not None:
        kwargs["demo_dir"] = demo_dir
    out.update(available=True, arguments={k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()})
    t0 = time.perf_counter()
    try:
        out["result"] = run(**kwargs)
    except Exception as exc:  # one area failing must not lose the others' figures
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def flatten(value: Any, prefix: str = "", limit: int = 400) -> list[tuple[str, Any]]:
    """(dotted key, scalar) rows of a nested result, for display. Lists of dicts are keyed by their ``name`` /
    ``profile`` / ``label`` entry when they have one, else by index."""
    rows: list[tuple[str, Any]] = []

    def walk(v: Any, key: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(v, dict):
            for k, sub in v.items():
                walk(sub, f"{key}.{k}" if key else str(k))
        elif isinstance(v, (list, tuple)) and v and all(isinstance(x, dict) for x in v):
            for i, sub in enumerate(v):
                tag = next((str(sub[t]) for t in ("name", "profile", "label", "model") if t in sub), str(i))
                walk(sub, f"{key}.{tag}")
        elif isinstance(v, (list, tuple)):
            text = ", ".join(str(x) for x in v[:8]) + (" ..." if len(v) > 8 else "")
            rows.append((key, f"[{text}]"))
        else:
            rows.append((key, v))

    walk(value, prefix)
    return rows


# ------------------------------------------------------------------------------------------------ accuracy table


def _score_model(model: Any, test: Any, table: Any, labels: tuple[str, ...], device: Any) -> dict[str, Any]:
    from ..training.loop import predict
    from ..training.metrics import score

    logits = predict(model.to(device), test.x, device=device)
    model.cpu()
    return score(logits, test.y, table, labels)


def _row(name: str, model: Any, input_shape: tuple[int, ...], budget: Any, metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    from ..complexity import check_budget, measure

    report = check_budget(measure(model, input_shape, dtype=budget.param_dtype), budget)
    c = report.complexity
    return {
        "model": name,
        "params": c.params,
        "param_bytes": c.param_bytes,
        "param_dtype": c.param_dtype,
        "macs": c.macs,
        "within_budget": report.passed,
        "test_macro_accuracy": metrics["macro_accuracy"],
        "test_log_loss": metrics["log_loss"],
        "test_unseen_macro_accuracy": metrics.get("unseen_macro_accuracy"),
        **extra,
    }


def _baseline_rows(recipe: Any, kd: dict[str, float], parts: dict[str, Any], embedding_shape: Any,
                   labels: tuple[str, ...], input_shape: tuple[int, ...], budget: Any, dev: Any,
                   on_event: OnEvent | None, dir_log_gains: Any = None) -> list[dict[str, Any]]:
    """The DCASE 2024 baseline architecture trained with ``recipe`` (device impulse responses from ``dir_log_gains``
    when it uses them), without KD and with ``kd``."""
    import torch

    from ..models.build import build_student_and_head
    from ..models.presets import get_preset
    from ..training.loop import fit
    from ..training.losses import DistillConfig

    (train, _), (val, _), (test, test_table) = parts["train"], parts["val"], parts["test"]
    base_cfg = dataclasses.replace(get_preset("dcase2024_baseline").config, n_classes=len(labels),
                                   in_channels=int(input_shape[1]))
    rows = []
    for name, distill in (
        ("DCASE 2024 baseline, no KD", DistillConfig()),
        (f"DCASE 2024 baseline, KD (w {kd['kd_weight']}, T {kd['temperature']})", DistillConfig(**kd)),
    ):
        log(on_event, f"training {name} ({recipe.epochs} epochs, lr {recipe.lr:.2g}, batch {recipe.batch_size})")
        torch.manual_seed(recipe.seed)
        model, head = build_student_and_head(base_cfg, distill, embedding_shape)
        result = fit(model, train, val, recipe, distill=distill, head=head, dir_log_gains=dir_log_gains)
        model.load_state_dict(result.best_state)
        rows.append(_row(name, model, input_shape, budget, _score_model(model, test, test_table, labels, dev),
                         kd=dataclasses.asdict(distill), best_epoch=result.best_epoch,
                         val_macro_accuracy=result.best_metrics.get("val_macro_accuracy")))
    return rows


def accuracy_table(
    demo_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    kd: dict[str, float] | None = None,
    seed: int = 0,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """The accuracy table from a finished demo folder (see the module docstring)."""
    from .._runtime import resolve_device
    from ..data.cache import load_features
    from ..data.teacher_cache import load_teacher_targets
    from ..demo import SUMMARY_FILE, load_summary
    from ..export.deployed import score_graph
    from ..export.inputs import split_tensors
    from ..export.load import load_export
    from ..search.runfolder import SEARCH_FILE, best_trial, load_trials, trial_proposal
    from ..search.space import load_space
    from ..teacher import load_teacher

    demo_dir = Path(demo_dir)
    if not (demo_dir / SUMMARY_FILE).is_file():
        raise NotFoundError(f"{demo_dir} holds no finished demo ({SUMMARY_FILE} missing); run `asc-search demo` first")
    paths = {k: Path(v) for k, v in load_summary(demo_dir)["paths"].items()}
    run_dir = paths["run"]
    spec = load_space(run_dir / SEARCH_FILE)
    budget = spec.budget
    features = load_features(paths["cache"])
    targets = load_teacher_targets(features, paths.get("teacher_cache"))
    parts = split_tensors(features, spec.split, targets)
    (train, _), (val, _), (test, test_table) = parts["train"], parts["val"], parts["test"]
    labels = tuple(features.labels)
    input_shape = features.input_shape
    dev = resolve_device(device)
    rows = []

    log(on_event, "scoring the teacher on the test split")
    teacher = load_teacher(paths["teacher"])
    rows.append(_row(f"teacher ({teacher.meta.get('preset')})", teacher.model, input_shape, budget,
                     _score_model(teacher.model, test, test_table, labels, dev), kd=None,
                     val_macro_accuracy=teacher.meta.get("metrics", {}).get("val_macro_accuracy")))

    best = best_trial(load_trials(run_dir), budget)
    if best is None:
        raise NotFoundError(f"the demo's run {run_dir} has no completed trial within budget")
    recipe = trial_proposal(best).train.replace(device=device, seed=seed)
    gains = None
    if recipe.dir_p > 0:  # the demo searched with device impulse responses: the built-in bank, as its run recorded
        from ..data.impulses import ir_bank_from_record
        from ..search.runfolder import read_run_record

        record = read_run_record(run_dir)
        gains = ir_bank_from_record(record.dir_bank if record is not None else None, features.profile).log_gains
    rows += _baseline_rows(recipe, dict(BASELINE_KD if kd is None else kd), parts, targets.embedding_shape, labels,
                           input_shape, budget, dev, on_event, gains)

    log(on_event, "scoring the best searched student (the demo's export: its deployed graph)")
    exported = load_export(paths["export"])
    scores = (_score_model(exported.model, test, test_table, labels, dev) if exported.legacy else
              score_graph(exported.deployed_path, test.x, test.y, test_table, labels))
    rows.append(_row(f"best searched student (trial {exported.record['provenance'].get('trial_id')})",
                     exported.model, input_shape, budget, scores, scored_as=f"{exported.precision} graph",
                     kd=exported.record.get("distillation"),
                     val_macro_accuracy=exported.record["metrics"]["validation"].get("val_macro_accuracy")))
    return {
        "demo_dir": str(demo_dir),
        "profile": features.profile.name,
        "input_shape": list(input_shape),
        "budget": budget.to_dict(),
        "split_sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "recipe": {k: getattr(recipe, k) for k in ("epochs", "lr", "weight_decay", "batch_size", "seed")},
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------------ the bench


def run_bench(
    *,
    quick: bool = False,
    areas: tuple[str, ...] = AREAS,
    accuracy: bool = True,
    demo_dir: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """Run the per-area benchmarks and the accuracy table; returns one JSON-ready dict."""
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise ConfigError(f"unknown bench area(s) {unknown}; valid areas: {', '.join(AREAS)}")
    own_tmp = None
    if work_dir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="asc-bench-")
        work = Path(own_tmp.name)
    else:
        work = Path(work_dir)
        work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    out: dict[str, Any] = {
        "quick": quick,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_1m_before": round(os.getloadavg()[0], 2),
        },
        "areas": {},
    }
    try:
        import torch

        out["machine"]["torch"] = torch.__version__
        out["machine"]["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        if demo_dir is None and (accuracy or "deploy" in areas):
            from ..demo import DemoSettings, run_demo

            settings = (DemoSettings(clips=800, teacher_epochs=4, num_samples=4, student_epochs=3, device=device)
                        if quick else DemoSettings(device=device))
            log(on_event, f"running the demo first ({settings.clips} clips) into {work / 'demo'}")
            run_demo(work / "demo", settings, force=True, on_event=on_event)
            demo_dir = work / "demo"
        for area in areas:
            log(on_event, f"benchmark: {area}")
            out["areas"][area] = run_area(area, quick=quick, work_dir=work / area,
                                          demo_dir=Path(demo_dir) if demo_dir is not None else None)
        if accuracy:
            out["accuracy"] = accuracy_table(demo_dir, device=device, on_event=on_event)
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()
    out["seconds"] = round(time.time() - started, 1)
    return out


def write_json(result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the bench result as JSON (temporary name, then rename)."""
    from .._io import write_json_atomic

    write_json_atomic(path, result)
    return Path(path)


def load_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
