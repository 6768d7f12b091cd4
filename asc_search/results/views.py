"""The run's own views inside its Optuna study, where optuna-dashboard shows them.

:func:`publish_views` writes, into the study of a run folder:

* the **study note** (Markdown, ``optuna_dashboard.save_note``): the proposal counts and budget, the leaderboard
  (with the distillation weights, and the margin over the best reference when the run has references), the Pareto
  front, the parameter importance over trained trials only, the plots inline, and how to read the dashboard;
* the **plots** of ``asc-search results`` (accuracy over trials, Pareto front, budget plane) as study
  **artefacts**: files in ``RUN/artifacts/`` (an Optuna ``FileSystemArtifactStore``, which ``asc-search dashboard``
  serves), listed in the study like ``optuna.artifacts.upload_artifact`` lists them, under an id fixed per run and
  plot, so that publishing again replaces a plot instead of piling up copies, and the note's image links stay valid.

The search driver publishes as trials end (:class:`ViewsPublisher`: the note at most every 15 s, the plots at most
every 2 minutes) and at its end; the note is rewritten each time (remarks of your own belong in trial notes).
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .._io import atomic_path, now_utc
from .._progress import OnEvent, warn
from ..search.runfolder import (
    ARTIFACTS_DIR,
    PLOTS_DIR,
    Status,
    is_running,
    load_trials,
    resolve_run,
    study_name,
    study_url,
)
from .plots import PLOT_FILES, make_plots
from .tables import RunResults, run_results, strip_prefix

__all__ = ["ARTIFACT_PREFIX", "PublishedViews", "ViewsPublisher", "artifact_store", "artifact_id", "publish_views",
           "render_note"]

#: The study system-attribute prefix under which Optuna (and optuna-dashboard) list a study's artefacts.
ARTIFACT_PREFIX = "artifacts:"
_TOP_IMPORTANCES = 8
_PLOT_TITLES = {"accuracy_over_trials": "Accuracy over trials", "pareto_front": "Pareto front",
                "budget_plane": "Budget plane: trained vs rejected proposals"}


@dataclass
class PublishedViews:
    """What :func:`publish_views` wrote: the note's length and each plot's artifact id."""

    study_id: int
    note_chars: int
    artifacts: dict[str, str] = field(default_factory=dict)  # plot name -> artifact id


def artifact_store(run_dir: str | os.PathLike[str], create: bool = False) -> Any:
    """The run's ``FileSystemArtifactStore`` (``RUN/artifacts/``); None when it does not exist and ``create`` is
    False."""
    from optuna.artifacts import FileSystemArtifactStore

    path = Path(run_dir) / ARTIFACTS_DIR
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path)) if path.is_dir() else None


def artifact_id(study: str, plot: str) -> str:
    """The fixed artifact id of one plot of one study (a UUID, as the dashboard's artefact routes expect)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"asc-search:{study}:{plot}"))


def _upload(storage: Any, study_id: int, store_dir: Path, aid: str, path: Path) -> None:
    """Put ``path`` in the store under ``aid`` (replaced atomically: a reader never sees half a PNG) and list it in
    the study with the metadata ``optuna.artifacts.upload_artifact`` writes."""
    import shutil

    with atomic_path(store_dir / aid) as tmp:  # FileSystemArtifactStore keeps artifact ``aid`` in the file ``aid``
        shutil.copyfile(path, tmp)
    meta = {"artifact_id": aid, "filename": path.name, "mimetype": "image/png", "encoding": None}
    storage.set_study_system_attr(study_id, ARTIFACT_PREFIX + aid, json.dumps(meta))


def _cell(value: Any, kind: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "-"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "acc":
        return f"{float(value):.4f}"
    return f"{value:.3g}" if isinstance(value, float) else str(value).replace("|", "/")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows]]


def _reference_lines(res: RunResults) -> list[str]:
    """The winner against the best reference (:func:`~asc_search.search.runfolder.reference_margin`), when the run
    has a completed reference."""
    m = res.margin
    if m is None:
        return []
    best = res.board[res.board["rank"] > 0].iloc[0]
    if int(best["trial_id"]) == int(m["trial_id"]):
        return [f"The best trial is reference `{m['reference']}`: the search found nothing better on validation.", ""]
    what = "validation macro accuracy" + (" (deployed)" if m.get("score") == "val_macro_accuracy_deployed" else "")
    return [f"Best trial {best['trial_id']}: **{m['points']:+.1f} points** {what} over reference `{m['reference']}`.",
            ""]


def _leaderboard_lines(res: RunResults, board: pd.DataFrame) -> list[str]:
    extra = ["kind"] if "kind" in board.columns else []  # references, when the run has them
    header = ["rank", "trial", *extra, "params", "bytes", "MACs", "val macro acc", "val log loss", "epochs",
              *[strip_prefix(c) for c in res.distill]]
    rows = [[str(r["rank"]), str(r["trial_id"]), *[_cell(r.get("reference") or r[c]) for c in extra],
             _cell(r["params"], "int"), _cell(r["param_bytes"], "int"), _cell(r["macs"], "int"),
             _cell(r["val_macro_accuracy"], "acc"), _cell(r["val_log_loss"], "acc"), _cell(r["epochs"], "int"),
             *[_cell(r[c]) for c in res.distill]] for _, r in board.iterrows()]
    front = [[str(r["trial_id"]), _cell(r["val_macro_accuracy"], "acc"), _cell(r["macs"], "int"),
              _cell(r["param_bytes"], "int"), _cell(r["params"], "int")] for _, r in res.front.iterrows()]
    return [f"### Leaderboard: top {len(board)} of {res.counts.get(Status.COMPLETED, 0)} completed trials "
            "(validation split)", "", *_table(header, rows), "",
            f"### Pareto front ({len(front)}): accuracy max, MACs and bytes min", "",
            *_table(["trial", "val macro acc", "MACs", "bytes", "params"], front), ""]


def render_note(res: RunResults, state: str, importances: list[dict[str, Any]], images: dict[str, str]) -> str:
    """The study note's Markdown (see the module docstring); ``images``: plot name -> URL path of its artefact."""
    counts, budget = res.counts, res.budget
    shown = ", ".join(f"{k} {v}" for k, v in counts.items() if k not in ("trained", "total") and v)
    summary = (f"Proposals: {shown or 'none yet'} (total {counts.get('total', 0)}). Search {state}; views updated "
               f"{now_utc()}.")
    if budget is not None:
        summary += (f" Budget: {budget.max_param_bytes:,} bytes of parameters at {budget.param_dtype}, "
                    f"{budget.max_macs:,} MACs.")
    lines = [f"## Run `{res.name}`: {counts.get('trained', 0)} trained trials, {counts.get(Status.REJECTED, 0)} "
             "proposals rejected before training", "", summary, "",
             "**Reading this dashboard.** Every proposal is a trial. A proposal over the budget was never trained: "
             "its user attribute `status` is `rejected_budget`, its constraints are positive and its score 0 is a "
             "placeholder; the dashboard draws it grey as *infeasible* (History, plots) and never calls it best. "
             "`status` also tells `completed` (trained for all epochs), `early_stopped` (stopped by ASHA; Optuna: "
             "Pruned) and `failed` trials apart. The Hyperparameter Importance panel of `asc-search dashboard` and "
             "the table below count trained trials only.", ""]
    board = res.board[res.board["rank"] > 0]
    if board.empty:
        lines += ["No trial has been trained to the end yet.", ""]
    else:
        lines += _reference_lines(res) + _leaderboard_lines(res, board)
    if importances:
        n = counts.get(Status.COMPLETED, 0)
        lines += [f"### Parameter importance over the {n} completed trials (PED-ANOVA; the top {_TOP_IMPORTANCES})",
                  "", *_table(["parameter", "importance"],
                              [[i["name"], f"{i['importance']:.3f}"] for i in importances[:_TOP_IMPORTANCES]]),
                  "" if n >= 10 else "Few trials: a rough guide only.", ""]
    for name, url in images.items():
        lines += [f"### {_PLOT_TITLES.get(name, name)}", "", f"![{name}]({url})", ""]
    return "\n".join(lines)


def publish_views(run: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None, *,
                  plots: bool = True, top: int = 10) -> PublishedViews:
    """Write the run's note and plot artefacts into its study (see the module docstring); safe while it runs."""
    import optuna
    from optuna_dashboard import save_note

    from .importance import trained_importances

    run_dir = resolve_run(run, results_dir)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(study_url(run_dir), skip_compatibility_check=True, skip_table_creation=True)
    study = optuna.load_study(study_name=study_name(run_dir), storage=storage)
    study_id = storage.get_study_id_from_name(study.study_name)
    res = run_results(run_dir, load_trials(run_dir), top=top)
    published = PublishedViews(study_id=study_id, note_chars=0)
    store_dir = run_dir / ARTIFACTS_DIR
    if plots and len(res.trials):
        store_dir.mkdir(exist_ok=True)
        for name, path in make_plots(res.trials, run_dir / PLOTS_DIR, budget=res.budget).items():
            aid = artifact_id(study.study_name, name)
            _upload(storage, study_id, store_dir, aid, Path(path))
            published.artifacts[name] = aid
    else:  # the note links the plots published before, if any
        published.artifacts = {name: aid for name in PLOT_FILES
                               if (store_dir / (aid := artifact_id(study.study_name, name))).is_file()}
    images = {name: f"/artifacts/{study_id}/{aid}" for name, aid in published.artifacts.items()}
    importances = trained_importances(study)[0]
    body = render_note(res, "running" if is_running(run_dir) else "ended", importances, images)
    save_note(study, body)
    storage.engine.dispose()
    published.note_chars = len(body)
    return published


class ViewsPublisher:
    """An ``on_event`` sink for a running search: passes every event on to ``on_event`` and, when a trial ends
    (completed, early-stopped or failed), publishes the run's views (:func:`publish_views`): the note at most every
    ``note_every_s`` seconds (~0.2 s each), the plots too at most every ``plots_every_s`` seconds (~1-2 s: matplotlib);
    the driver calls :meth:`publish` once more at the end. A failure to publish is a ``warning`` event, never an
    error: the views are a convenience, the search goes on."""

    ENDED = ("completed", "early_stopped", "failed")

    def __init__(self, run_dir: str | os.PathLike[str], on_event: OnEvent | None = None, note_every_s: float = 15.0,
                 plots_every_s: float = 120.0) -> None:
        self.run_dir, self.on_event = Path(run_dir), on_event
        self.note_every_s, self.plots_every_s = note_every_s, plots_every_s
        self._last_note = -math.inf  # the first trial to end shows up at once
        self._last_plots = time.monotonic()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(event, info)
        if event not in self.ENDED:
            return
        now = time.monotonic()
        if now - self._last_plots >= self.plots_every_s:
            self.publish(plots=True)
        elif now - self._last_note >= self.note_every_s:
            self.publish(plots=False)

    def publish(self, plots: bool = True) -> PublishedViews | None:
        """Publish now (``plots=False``: the note only, linking the plots published before)."""
        now = time.monotonic()
        self._last_note = now
        if plots:
            self._last_plots = now
        try:
            return publish_views(self.run_dir, plots=plots)
        except Exception as exc:  # noqa: BLE001 - never stop a search for its dashboard views
            warn(self.on_event, f"{self.run_dir}: could not update the run's views in its study for the dashboard "
                                f"({type(exc).__name__}: {str(exc)[:200]})")
            return None
