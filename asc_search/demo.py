"""The whole method end to end on built-in synthetic data, in one call (``asc-search demo``).

    synth -> features (quick profile) -> teacher train -> embed -> search (search_spaces/quick.yaml) -> export

Each step is the public function of its own module (nothing re-implemented here):
:func:`asc_search.data.synth.synthesize`, :func:`asc_search.data.features.build_feature_cache`,
:func:`asc_search.teacher.train_teacher`, :func:`asc_search.teacher.embed_features`,
:func:`asc_search.search.driver.run_search` and :func:`asc_search.export.export.export_run`. The output folder
holds::

    OUT/data/                 the synthetic TAU-layout data set
    OUT/cache/                the quick-profile feature cache
    OUT/cache-teacher/        the teacher cache
    OUT/teacher/              the trained teacher
    OUT/results/demo/         the search run (trials.parquet, study.db, search.yaml, run.json, Ray experiment)
    OUT/export/               the exported best student (student.yaml, .safetensors, .onnx, report.md)
    OUT/demo.json             the summary below, written last (its presence marks a finished demo)

Nothing here prints: ``on_event`` (:mod:`asc_search._progress`) receives each step and the steps' own events
(the CLI renders them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._progress import OnEvent, emit
from .errors import ConfigError
from .search.runfolder import PLOTS_DIR

__all__ = ["DemoSettings", "DemoSummary", "run_demo", "DEFAULT_SPACE", "SUMMARY_FILE"]

#: The search space the demo runs (shipped in the repository's search_spaces/).
DEFAULT_SPACE = Path("quick.yaml")  # resolved by asc_search.search.space.resolve_space to the built-in file
SUMMARY_FILE = "demo.json"
RUN_NAME = "demo"


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo. The defaults finish in under 10 minutes on 2 CPU cores (measured: 108 s on an idle 2-core
    machine; teacher 0.71 and best student 0.72 test macro accuracy)."""

    clips: int = 3000  # synthetic clips in all: ~1,770 train, ~480 validation (whole locations), 750 test
    seed: int = 0  # seeds the data, the validation split, the teacher and the search (search.seed, split.seed)
    teacher_epochs: int = 12  # teacher training epochs
    num_samples: int | None = None  # trained search trials (None: the search file's num_samples)
    student_epochs: int | None = None  # epochs per trial, exactly (None: the search file's, min_steps included)
    space: Path = DEFAULT_SPACE  # the search file
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"

    def __post_init__(self) -> None:
        for key in ("clips", "teacher_epochs"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"demo {key} must be a positive integer, got {value!r}")
        for key in ("num_samples", "student_epochs"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ConfigError(f"demo {key} must be a positive integer, got {value!r}")


@dataclass
class DemoSummary:
    """What the demo produced: the figures and where every file is."""

    out_dir: Path
    paths: dict[str, Path]
    teacher: dict[str, Any]  # params, macs, test macro accuracy, ...
    student: dict[str, Any]  # trial id, params, bytes, MACs, validation + test macro accuracy
    proposals: dict[str, int]  # status counts of the search
    budget: dict[str, Any]
    timings_s: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "paths": {k: str(v) for k, v in self.paths.items()},
            "teacher": self.teacher,
            "student": self.student,
            "proposals": self.proposals,
            "budget": self.budget,
            "timings_s": self.timings_s,
            "settings": self.settings,
        }


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not force:
            raise ConfigError(f"demo folder {out} already exists and is not empty; replace it with force, or choose "
                              "another out_dir", params=("force", "out_dir"))
        if out.is_dir() and not (out / SUMMARY_FILE).exists() and not (out / "data").exists():
            raise ConfigError(f"{out} does not look like a demo folder (no {SUMMARY_FILE}, no data/); refusing to "
                              "delete it even with force", params=("force",))
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _space_for(settings: DemoSettings, out: Path) -> Path:
    """The search file the demo runs: the given one, or (written to OUT/search_space.yaml) a copy with the demo's
    seed as ``search.seed`` and ``split.seed`` and, when asked, its ``train.epochs`` replaced."""
    import yaml

    from .search.space import load_space, resolve_space

    source = resolve_space(settings.space)
    spec = load_space(source)  # validate before rewriting
    changes: dict[tuple[str, str], Any] = {}
    if spec.search.seed != settings.seed:
        changes[("search", "seed")] = settings.seed
    if spec.split.seed != settings.seed:
        changes[("split", "seed")] = settings.seed
    if settings.student_epochs is not None:  # exactly that many epochs: no raise to train.min_steps
        changes[("train", "epochs")] = settings.student_epochs
        changes[("train", "min_steps")] = 0
    if not changes:
        return source
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    for (section, key), value in changes.items():
        raw.setdefault(section, {})
        raw[section] = dict(raw[section] or {})
        raw[section][key] = value
    path = out / "search_space.yaml"
    said = ", ".join(f"{section}.{key} = {value}" for (section, key), value in changes.items())
    path.write_text(f"# {source} with {said} (asc-search demo)\n" + yaml.safe_dump(raw, sort_keys=False),
                    encoding="utf-8")
    return path


def run_demo(
    out_dir: str | os.PathLike[str] = Path("results") / "demo",
    settings: DemoSettings | None = None,
    *,
    force: bool = False,
    on_event: OnEvent | None = None,
) -> DemoSummary:
    """Run the demo into ``out_dir``; see the module docstring. An existing non-empty folder needs ``force``.

    ``on_event`` gets a ``step`` event as each step starts (``n``, ``of``, ``name``, ``text``), the steps' own
    events (``progress`` of synth, features and embed; ``epoch`` of the teacher; the search's trial events; the
    export's ``log`` lines)."""
    from .data.features import build_feature_cache
    from .data.synth import synthesize
    from .export.export import export_run
    from .results.views import ViewsPublisher
    from .search.driver import run_search
    from .search.space import load_space
    from .teacher import embed_features, train_teacher

    settings = settings or DemoSettings()
    out = Path(out_dir).resolve()
    _prepare_out(out, force)
    paths = {name: out / name for name in ("data", "cache", "teacher", "results", "export")}
    steps = _Steps(on_event)

    with steps.run("synth", f"synthesising {settings.clips} clips (TAU layout) -> {paths['data']}"):
        synthesize(paths["data"], n_clips=settings.clips, seed=settings.seed, on_event=on_event)
    with steps.run("features", f"log-mel features, quick profile -> {paths['cache']}"):
        build_feature_cache(paths["data"], paths["cache"], profile="quick", on_event=on_event)
    with steps.run("teacher", f"training the teacher ({settings.teacher_epochs} epochs) -> {paths['teacher']}"):
        # The teacher learns on the same train part the search trains on: it never sees the validation locations
        # the search selects with, so distilled students gain no peek at validation through the teacher.
        space = _space_for(settings, out)
        teacher_run = train_teacher(
            paths["cache"], paths["teacher"], epochs=settings.teacher_epochs, seed=settings.seed,
            device=settings.device, split=load_space(space).split, on_event=on_event,
        )
    with steps.run("embed", "teacher embeddings + logits for every clip -> cache-teacher"):
        paths["teacher_cache"] = Path(embed_features(paths["cache"], [paths["teacher"]], device=settings.device,
                                                     on_event=on_event))
    with steps.run("search", f"budgeted search ({Path(settings.space).name}) on local Ray -> {paths['results']}"):
        searched = run_search(paths["cache"], space, name=RUN_NAME, results_dir=paths["results"],
                              teacher_cache=paths["teacher_cache"], num_samples=settings.num_samples,
                              on_event=on_event, views=ViewsPublisher)
        paths["run"] = Path(searched.run_dir)
    with steps.run("export", f"exporting the best student -> {paths['export']}"):
        exported = export_run(paths["run"], paths["export"], device=settings.device, on_event=on_event)
    return _summarise(out, paths, settings, teacher_run, exported, steps)


class _Steps:
    """Announces each step (a ``step`` event) and times it."""

    OF = 6

    def __init__(self, on_event: OnEvent | None) -> None:
        self.on_event = on_event
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def run(self, name: str, text: str) -> Iterator[None]:
        n = len(self.timings) + 1
        emit(self.on_event, "step", n=n, of=self.OF, name=name, text=text)
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0


def _summarise(out: Path, paths: dict[str, Path], settings: DemoSettings, teacher_run: Any, exported: Any,
               steps: _Steps) -> DemoSummary:
    """Look at the run (writes its plots), gather the figures, write demo.json last."""
    from ._io import write_json_atomic
    from .results.analysis import analyse_run

    res = analyse_run(paths["run"], top=5)
    paths["plots"] = res.run_dir / PLOTS_DIR
    timings = {**steps.timings, "total": time.perf_counter() - steps.started}
    tmeta = teacher_run.meta
    teacher = {
        "preset": tmeta.get("preset"),
        "params": tmeta.get("complexity", {}).get("params"),
        "macs": tmeta.get("complexity", {}).get("macs"),
        "val_macro_accuracy": tmeta.get("metrics", {}).get("val_macro_accuracy"),
        "test_macro_accuracy": tmeta.get("metrics", {}).get("test_macro_accuracy"),
    }
    comp = exported.complexity
    student = {
        "trial_id": exported.trial_id,
        "params": comp.get("params"),
        "param_bytes": comp.get("param_bytes"),
        "param_dtype": comp.get("param_dtype"),
        "macs": comp.get("macs"),
        "val_macro_accuracy": exported.record["metrics"]["validation"].get("val_macro_accuracy"),
        "test_macro_accuracy": exported.metrics.get("macro_accuracy"),
        "test_log_loss": exported.metrics.get("log_loss"),
        "seen_macro_accuracy": exported.extra.get("seen_macro_accuracy"),
        "unseen_macro_accuracy": exported.extra.get("unseen_macro_accuracy"),
        "deployed_precision": exported.deployed.get("precision"),  # the test figures above are this graph's
        "deployed_weights_bytes": exported.deployed.get("weights_bytes"),  # measured from student.onnx
        "test_macro_accuracy_fp32": exported.metrics_fp32.get("macro_accuracy"),
        "against_reference": (exported.record.get("against_reference") or {}).get("text"),
        "warnings": list(exported.record.get("warnings") or []),
    }
    summary = DemoSummary(
        out_dir=out,
        paths=paths,
        teacher=teacher,
        student=student,
        proposals=dict(res.counts),
        budget=res.budget.to_dict() if res.budget else {},
        timings_s={k: round(v, 2) for k, v in timings.items()},
        settings={k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()},
    )
    write_json_atomic(out / SUMMARY_FILE, summary.to_dict())
    return summary


def load_summary(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``demo.json`` of a finished demo."""
    path = Path(out_dir) / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8"))
