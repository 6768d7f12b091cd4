"""``asc-search bench``: every area's figures side by side in one run, plus an accuracy table on the built-in data.

1. **Per-area benchmarks**: ``asc_search.bench.{features,complexity,teacher,training,search,driver,deploy,
   efficiency}`` each expose ``run(...) -> dict`` (their own module docstrings say what they measure). They are called
   one after the other, never concurrently (timings on 2 cores would disturb each other); a module that is missing or fails is reported as
   such, the others still run. ``quick=True`` passes each module small sizes (its ``quick`` flag when it has one).
2. **Accuracy table** on the built-in synthetic data: ``asc-search compare`` (:func:`asc_search.compare.compare`, the
   same code path) on the demo's cache: the reference arms of the demo's search file (the DCASE 2024 baseline family
   width-fitted to the budget, trained with cross-entropy, with KD, with KD + embedding matching) and the best
   searched student (the demo's export, retrained with its recipe), each over ``seeds`` seeds (3; 2 with
   ``quick``): params, parameter bytes, MACs, within budget, validation / test / unseen-device macro accuracy as
   mean ± sd, paired differences; plus the teacher scored once. The inputs come from a finished demo folder
   (``asc-search demo``); when none is given, the demo is run first into the work folder.

Nothing here prints; ``on_event`` (:mod:`asc_search._progress`) receives progress.
"""

from __future__ import annotations

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

AREAS: tuple[str, ...] = ("features", "complexity", "teacher", "training", "search", "driver", "deploy", "efficiency")
#: Small sizes for ``--quick``, per area, passed only where the module's run() takes that argument.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "features": {"quick": True, "n_clips": 200},
    "complexity": {"quick": True, "n_candidates": 10},
    "teacher": {"quick": True, "quick_clips": 128, "dcase_clips": 16},
    "training": {"quick": True},
    "search": {"quick": True, "clips": 256, "trials": 2, "dcase_clips": 32},
    "driver": {"quick": True},
    "deploy": {"quick": True, "qat_epochs": 1, "dcase_val_clips": 64, "fast_graphs": True},
    "efficiency": {"quick": True},
}

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


def _teacher_row(teacher: Any, features: Any, split: Any, budget: Any, device: str) -> dict[str, Any]:
    """The teacher scored once on the test split (context for the table; it is not retrained over seeds)."""
    from .._runtime import resolve_device
    from ..complexity import check_budget, measure
    from ..export.inputs import split_tensors
    from ..training.loop import predict
    from ..training.metrics import score

    test, table = split_tensors(features, split, names=("test",))["test"]
    dev = resolve_device(device)
    metrics = score(predict(teacher.model.to(dev), test.x, device=dev), test.y, table, tuple(features.labels))
    teacher.model.cpu()
    report = check_budget(measure(teacher.model, features.input_shape, dtype=budget.param_dtype), budget)
    c = report.complexity
    return {"model": f"teacher ({teacher.meta.get('preset')})", "params": c.params, "param_bytes": c.param_bytes,
            "param_dtype": c.param_dtype, "macs": c.macs, "within_budget": report.passed,
            "val_macro_accuracy": teacher.meta.get("metrics", {}).get("val_macro_accuracy"),
            "test_macro_accuracy": metrics["macro_accuracy"], "test_log_loss": metrics["log_loss"],
            "test_unseen_macro_accuracy": metrics.get("unseen_macro_accuracy")}


def accuracy_table(
    demo_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    seeds: int = 3,
    threads: int | None = None,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """``asc-search compare`` (:func:`asc_search.compare.compare`) on a finished demo folder: its search file's
    references and its exported student, each trained with ``seeds`` seeds on the demo's cache; plus the teacher,
    scored once (see the module docstring)."""
    from ..compare import compare
    from ..data.cache import load_features
    from ..demo import SUMMARY_FILE, load_summary
    from ..search.runfolder import SEARCH_FILE
    from ..search.space import load_space
    from ..teacher import load_teacher

    demo_dir = Path(demo_dir)
    if not (demo_dir / SUMMARY_FILE).is_file():
        raise NotFoundError(f"{demo_dir} holds no finished demo ({SUMMARY_FILE} missing); run `asc-search demo` first")
    paths = {k: Path(v) for k, v in load_summary(demo_dir)["paths"].items()}
    space = paths["run"] / SEARCH_FILE
    result = compare(paths["cache"], teacher_cache=paths.get("teacher_cache"), space=space, seeds=seeds,
                     exports=[paths["export"]], device=device, threads=threads, on_event=on_event)
    log(on_event, "scoring the teacher on the test split")
    features = load_features(paths["cache"])
    spec = load_space(space)
    teacher = _teacher_row(load_teacher(paths["teacher"]), features, spec.split, spec.budget, device)
    return {**result, "demo_dir": str(demo_dir), "teacher": teacher}


# ------------------------------------------------------------------------------------------------ the bench


def run_bench(
    *,
    quick: bool = False,
    areas: tuple[str, ...] = AREAS,
    accuracy: bool = True,
    demo_dir: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    seeds: int = 3,
    threads: int | None = None,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    """Run the per-area benchmarks and the accuracy table (``seeds`` seeds per row, ``threads`` torch threads per
    run); returns one JSON-ready dict."""
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
            if demo_dir is None:
                from ..demo import DemoSettings, run_demo

                settings = (DemoSettings(clips=800, teacher_epochs=4, num_samples=4, student_epochs=3, device=device)
                            if quick else DemoSettings(device=device))
                log(on_event, f"accuracy table: running the demo first ({settings.clips} clips) into {work / 'demo'}")
                run_demo(work / "demo", settings, force=True, on_event=on_event)
                demo_dir = work / "demo"
            out["accuracy"] = accuracy_table(demo_dir, device=device, seeds=2 if quick else seeds, threads=threads,
                                             on_event=on_event)
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
