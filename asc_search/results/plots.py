"""The PNG plots of a search run (accuracy over trials, the Pareto front, the budget plane), drawn with matplotlib
figures that never touch pyplot's global state, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path
from ..config import Budget
from ..search.runfolder import Status, ranked_trials
from .tables import pareto_front

__all__ = ["PLOT_FILES", "n_classes_of", "accuracy_over_trials_figure", "budget_plane_figure",
           "plot_accuracy_over_trials", "plot_pareto_front", "plot_budget_plane", "make_plots"]

#: The plots :func:`make_plots` writes: name -> file name.
PLOT_FILES = {"accuracy_over_trials": "accuracy_over_trials.png", "pareto_front": "pareto_front.png",
              "budget_plane": "budget_plane.png"}

_STATUS_STYLE = {
    Status.COMPLETED: dict(color="#1f77b4", marker="o", label="completed"),
    Status.EARLY_STOPPED: dict(color="#ff7f0e", marker="v", label="early stopped (ASHA)"),
    Status.FAILED: dict(color="#7f7f7f", marker="s", label="failed"),
    Status.REJECTED: dict(color="#d62728", marker="x", label="rejected (over budget)"),
}
def _figure(**kwargs: Any):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # A Figure without pyplot: no global state, nothing left open between calls.
    return Figure(**kwargs)


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    return path


def n_classes_of(table: pd.DataFrame) -> int | None:
    """The number of classes the run's students have (from a trial's ``config``); None when no row says."""
    import json

    for raw in table.get("config", pd.Series(dtype=object)).dropna():
        try:
            return int(json.loads(raw)["student"]["n_classes"])
        except (TypeError, ValueError, KeyError):
            continue
    return None


def accuracy_over_trials_figure(table: pd.DataFrame, n_classes: int | None = None) -> Any:
    """The figure of :func:`plot_accuracy_over_trials`: the x axis is ``trial_id`` (the Optuna trial number, as in
    the tables and ``export --trial``), the chance level ``1 / n_classes`` a dashed line."""
    fig = _figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    order = table["trial_id"].to_numpy(dtype=float)
    scored = table["val_macro_accuracy"].notna().to_numpy()
    for status in (Status.EARLY_STOPPED, Status.FAILED, Status.COMPLETED):
        sel = (table["status"] == status).to_numpy() & scored
        if sel.any():
            style = _STATUS_STYLE[status]
            ax.scatter(order[sel], table["val_macro_accuracy"].to_numpy()[sel], s=28, alpha=0.85, zorder=3, **style)
    done = (table["status"] == Status.COMPLETED).to_numpy() & scored
    if done.any():
        acc = np.where(done, table["val_macro_accuracy"].to_numpy(dtype=float), -np.inf)
        best = np.maximum.accumulate(acc)
        start = int(np.argmax(done))
        ax.step(order[start:], best[start:], where="post", color="#2ca02c", lw=2, label="best so far", zorder=2)
    rejected = (table["status"] == Status.REJECTED).to_numpy()
    if rejected.any():
        ax.scatter(order[rejected], np.zeros(rejected.sum()), marker="|", s=60, color="#d62728", alpha=0.6,
                   label="rejected (over budget, not trained)", zorder=1)
    n_classes = n_classes or n_classes_of(table)
    if n_classes:
        ax.axhline(1.0 / n_classes, color="#7f7f7f", ls="--", lw=1, label=f"chance (1/{n_classes})", zorder=0)
    ax.set_xlabel("trial_id (proposal order)")
    ax.set_ylabel("validation macro accuracy")
    ax.set_ylim(bottom=0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"Accuracy over trials ({int(done.sum())} completed, {int(rejected.sum())} rejected)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)  # outside: never hides points
    return fig


def plot_accuracy_over_trials(table: pd.DataFrame, path: str | os.PathLike[str], n_classes: int | None = None) -> Path:
    """Validation macro accuracy of every trained trial by trial_id, with the best so far (completed) and chance."""
    return _save(accuracy_over_trials_figure(table, n_classes), Path(path))


def plot_pareto_front(table: pd.DataFrame, path: str | os.PathLike[str], front: pd.DataFrame | None = None) -> Path:
    """Accuracy against MACs and against parameter bytes for completed trials, the Pareto front marked."""
    front = pareto_front(table) if front is None else front
    done = ranked_trials(table)
    fig = _figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, col, label in ((axes[0], "macs", "MACs per clip (millions)"), (axes[1], "param_bytes", "parameter memory (kB)")):
        scale = 1e6 if col == "macs" else 1e3
        ax.scatter(done[col] / scale, done["val_macro_accuracy"], s=26, color="#9ecae1", label="completed trial", zorder=2)
        if not front.empty:
            ax.scatter(front[col] / scale, front["val_macro_accuracy"], s=46, color="#d62728", edgecolor="black",
                       label="Pareto front (acc, MACs, bytes)", zorder=3)
            # The 2-D envelope of the front on this plane (the 3-D front's points are all marked above).
            pts = front.sort_values(col)
            env_x, env_y, best = [], [], -np.inf
            for x, y in zip(pts[col] / scale, pts["val_macro_accuracy"]):
                if y > best:
                    env_x.append(x)
                    env_y.append(y)
                    best = y
            ax.step(env_x, env_y, where="post", color="#d62728", lw=1.2, alpha=0.7, zorder=1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation macro accuracy")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"Pareto front: {len(front)} of {len(done)} completed trials are not dominated")
    return _save(fig, Path(path))


def budget_plane_figure(table: pd.DataFrame, budget: Budget | None = None) -> Any:
    """The figure of :func:`plot_budget_plane`. On linear axes both start at zero, and so does the "within budget"
    box (0 to each limit); on log axes (proposals spanning more than 30x) the box starts at the axes' lower ends."""
    fig = _figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    costed = table.dropna(subset=["param_bytes", "macs"])
    for status in (Status.REJECTED, Status.FAILED, Status.EARLY_STOPPED, Status.COMPLETED):
        sel = costed[costed["status"] == status]
        if not sel.empty:
            style = dict(_STATUS_STYLE[status])
            style["label"] = f"{style['label']} ({len(sel)})"
            ax.scatter(sel["param_bytes"] / 1e3, sel["macs"] / 1e6, s=26, alpha=0.8, zorder=3, **style)
    if budget is not None:
        ax.axvline(budget.max_param_bytes / 1e3, color="black", ls="--", lw=1.2,
                   label=f"budget: {budget.max_param_bytes / 1e3:g} kB ({budget.param_dtype})")
        ax.axhline(budget.max_macs / 1e6, color="black", ls=":", lw=1.2, label=f"budget: {budget.max_macs / 1e6:g} M MACs")
    values = costed[["param_bytes", "macs"]].to_numpy(dtype=float)
    log = bool(len(values) and (values > 0).all() and (values.max(axis=0) / values.min(axis=0)).max() > 30)
    if budget is not None:
        lo_x = lo_y = 0.0
        if log:
            lo_x = min(values[:, 0].min() / 1e3, budget.max_param_bytes / 1e3) * 0.8
            lo_y = min(values[:, 1].min() / 1e6, budget.max_macs / 1e6) * 0.8
        ax.fill_between([lo_x, budget.max_param_bytes / 1e3], lo_y, budget.max_macs / 1e6, color="#2ca02c",
                        alpha=0.08, label="within budget", zorder=0)
    if not log:
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
    else:  # rejected proposals often sit orders of magnitude out: log axes keep both readable
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("parameter memory (kB)" + (f", {budget.param_dtype}" if budget else ""))
    ax.set_ylabel("MACs per clip (millions)")
    ax.set_title("Proposals in the budget plane: trained vs rejected before training")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)
    return fig


def plot_budget_plane(table: pd.DataFrame, path: str | os.PathLike[str], budget: Budget | None = None) -> Path:
    """Every costed proposal in the (parameter bytes, MACs) plane: trained ones and rejected ones, budget lines."""
    return _save(budget_plane_figure(table, budget), Path(path))


def make_plots(table: pd.DataFrame, out_dir: str | os.PathLike[str], budget: Budget | None = None) -> dict[str, Path]:
    """Write the three PNG plots (:data:`PLOT_FILES`) into ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    return {
        "accuracy_over_trials": plot_accuracy_over_trials(table, out / PLOT_FILES["accuracy_over_trials"]),
        "pareto_front": plot_pareto_front(table, out / PLOT_FILES["pareto_front"], front=pareto_front(table)),
        "budget_plane": plot_budget_plane(table, out / PLOT_FILES["budget_plane"], budget=budget),
    }
