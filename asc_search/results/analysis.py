"""A search run's results: the trials table, the leaderboard, the Pareto front and the plots.

A run lives in ``RESULTS_DIR/NAME/`` (written by :mod:`asc_search.search`)::

    trials.parquet   one row per proposal: trained (completed / early_stopped / failed) or rejected_budget
    study.db         the Optuna study (SQLite)
    search.yaml      the search file as run (its ``budget:`` section is re-read here)
    run.json         what produced the run
    <ray experiment> Tune's experiment folder with the per-trial checkpoints

Runs are named either by a path to their folder or by their name under a results folder (``./results`` unless
told otherwise). Nothing here prints; the CLI (:mod:`asc_search.cli.results`) renders what these functions return.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path, jsonable
from ..config import Budget
from ..errors import ConfigError, DataError, NotFoundError

__all__ = [
    "STATUSES",
    "TRAINED_STATUSES",
    "REQUIRED_COLUMNS",
    "DEFAULT_RESULTS_DIR",
    "TRIALS_FILE",
    "STUDY_FILE",
    "SEARCH_FILE",
    "list_runs",
    "resolve_run",
    "load_trials",
    "param_columns",
    "distill_columns",
    "strip_prefix",
    "status_counts",
    "leaderboard",
    "pareto_front",
    "pareto_mask",
    "load_budget",
    "best_trial",
    "RunResults",
    "analyse_run",
    "plot_accuracy_over_trials",
    "plot_pareto_front",
    "plot_budget_plane",
    "make_plots",
    "study_storage_url",
    "study_names",
    "dashboard_server",
]

#: Every status a proposal can end in, in display order.
STATUSES: tuple[str, ...] = ("completed", "early_stopped", "failed", "rejected_budget")
#: Statuses of proposals that became Ray trials (and cost worker time).
TRAINED_STATUSES: tuple[str, ...] = ("completed", "early_stopped", "failed")
#: Columns ``trials.parquet`` must hold (the search writes more: every proposed parameter).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "trial_id",
    "status",
    "params",
    "param_bytes",
    "macs",
    "val_macro_accuracy",
    "val_log_loss",
    "epochs",
    "duration_s",
)
#: Where runs land when no ``--results-dir`` is given (relative to the working directory).
DEFAULT_RESULTS_DIR = Path("results")
TRIALS_FILE = "trials.parquet"
STUDY_FILE = "study.db"
SEARCH_FILE = "search.yaml"

# Columns the search writes that are not proposed parameters (anything else that is not a parameter is
# recognised by one of these names; parameters may also carry a "p_" / "param_" / "config/" prefix).
_KNOWN_NON_PARAMS = frozenset(
    REQUIRED_COLUMNS
    + (
        "number",
        "trial_number",
        "optuna_number",
        "optuna_trial",
        "ray_trial_id",
        "config",
        "proposal",
        "constraints",
        "param_dtype",
        "error",
        "message",
        "reason",
        "checkpoint",
        "checkpoint_path",
        "best_checkpoint",
        "started_at",
        "finished_at",
        "start_time",
        "end_time",
        "timestamp",
        "best_epoch",
        "train_loss",
        "node",
        "node_ip",
        "over_budget",
        "budget_ok",
        "rejected",
    )
)
_PARAM_PREFIXES = ("p_", "param_", "params_", "config/", "config.", "param.", "params.")
#: Proposed parameters that are distillation weights (shown in the leaderboard), matched on the stripped name.
_DISTILL_KEYS = ("kd_weight", "temperature", "emb_weight", "emb_loss", "embed_block", "emb_block")
#: Column that orders proposals in time, first one present wins; else the table's row order.
_ORDER_COLUMNS = ("number", "trial_number", "optuna_number", "started_at", "start_time")


# ------------------------------------------------------------------------------------------------ locating runs


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / TRIALS_FILE).exists() or (path / STUDY_FILE).exists())


def list_runs(results_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the runs under ``results_dir`` (folders holding a trials table or a study), sorted."""
    root = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _is_run_dir(p))


def resolve_run(run: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder of run ``run``: a path to a run folder, or a run name under ``results_dir``.

    A run that does not exist raises :class:`NotFoundError` listing the runs that do.
    """
    root = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    text = os.fspath(run)
    candidates = [Path(text)]
    if not Path(text).is_absolute():
        candidates.append(root / text)
    for candidate in candidates:
        if _is_run_dir(candidate):
            return candidate.resolve()
    existing = list_runs(root)
    where = f"under {root}" if root.is_dir() else f"({root} does not exist)"
    listing = ", ".join(existing) if existing else "none"
    for candidate in candidates:
        if candidate.is_dir():
            raise NotFoundError(
                f"{candidate} is not a search run: it holds neither {TRIALS_FILE} nor {STUDY_FILE}; "
                f"runs {where}: {listing}"
            )
    raise NotFoundError(f"no search run named {text!r} {where}; runs there: {listing}")


# ------------------------------------------------------------------------------------------------ trials table


def _running(run_dir: Path) -> bool:
    import json

    try:
        return json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("status") == "running"
    except (OSError, ValueError, AttributeError):
        return False


def load_trials(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The run's trials table: ``trials.parquet``, or, while the search still runs (or before it wrote the file),
    the same table rebuilt live from the Optuna study (:func:`asc_search.search.build_trials_table`).

    A missing, unreadable or incomplete table is an error naming the file.
    """
    run_dir = Path(run_dir)
    path = run_dir / TRIALS_FILE
    if (run_dir / STUDY_FILE).is_file() and (not path.exists() or _running(run_dir)):
        from ..search.driver import build_trials_table

        try:
            table = build_trials_table(run_dir)
        except Exception as exc:  # a study mid-write or of another layout: say so instead of a traceback
            raise DataError(f"{run_dir / STUDY_FILE}: cannot rebuild the trials table from the study ({exc})") from None
    elif not path.exists():
        raise NotFoundError(
            f"{path} does not exist: the search has not recorded any proposal yet (run or resume the search)"
        )
    else:
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several kinds for a corrupt file
            raise DataError(f"{path} is not a readable Parquet table ({type(exc).__name__}: {exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; expected at least {list(REQUIRED_COLUMNS)}")
    table = table.copy()
    table["trial_id"] = table["trial_id"].astype(str)
    table["status"] = table["status"].astype(str)
    for col in ("params", "param_bytes", "macs", "val_macro_accuracy", "val_log_loss", "epochs", "duration_s"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    order = next((c for c in _ORDER_COLUMNS if c in table.columns), None)
    if order is not None:
        table = table.sort_values(order, kind="stable")
    return table.reset_index(drop=True)


def strip_prefix(column: str) -> str:
    """A parameter column's name without the search's prefix (``p_kd_weight`` -> ``kd_weight``)."""
    for prefix in _PARAM_PREFIXES:
        if column.startswith(prefix) and len(column) > len(prefix):
            return column[len(prefix) :]
    return column


def param_columns(table: pd.DataFrame) -> list[str]:
    """Columns holding proposed parameters: prefixed ones, or any column the search writes that is not a result."""
    prefixed = [c for c in table.columns if any(c.startswith(p) for p in _PARAM_PREFIXES)]
    if prefixed:
        return prefixed
    return [c for c in table.columns if c not in _KNOWN_NON_PARAMS]


def distill_columns(table: pd.DataFrame) -> list[str]:
    """The parameter columns that are distillation settings (KD weight, temperature, embedding loss...)."""
    out = []
    for col in param_columns(table):
        name = strip_prefix(col)
        if any(name == key or name.endswith("." + key) or name.endswith("_" + key) for key in _DISTILL_KEYS):
            out.append(col)
    return out


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """Proposals per status, known statuses first (zeros included), then any other status seen."""
    counts = table["status"].value_counts()
    out = {s: int(counts.get(s, 0)) for s in STATUSES}
    for status, n in counts.items():
        if status not in out:
            out[str(status)] = int(n)
    out["total"] = int(len(table))
    return out


def _completed(table: pd.DataFrame) -> pd.DataFrame:
    done = table[(table["status"] == "completed") & table["val_macro_accuracy"].notna()]
    return done


def leaderboard(table: pd.DataFrame, top: int | None = None, include_stopped: bool = False) -> pd.DataFrame:
    """Completed trials ranked by validation macro accuracy (ties: lower log loss, then fewer MACs), ranks 1..K.

    Early-stopped trials are never ranked among them (their score is from fewer epochs); with
    ``include_stopped`` they follow the ranked ones (rank 0 = unranked), best first, then failed trials.
    """
    if top is not None and top <= 0:
        raise ConfigError(f"--top must be a positive integer, got {top}")
    keys = dict(by=["val_macro_accuracy", "val_log_loss", "macs"], ascending=[False, True, True], kind="stable",
                na_position="last")
    ranked = _completed(table).sort_values(**keys).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked = ranked.head(top) if top is not None else ranked
    if include_stopped:
        rest = [table[table["status"] == status].sort_values(**keys) for status in ("early_stopped", "failed")]
        rest = pd.concat(rest).reset_index(drop=True)
        rest.insert(0, "rank", 0)
        ranked = pd.concat([ranked, rest], ignore_index=True) if len(rest) else ranked
    return ranked


def pareto_mask(points: np.ndarray, maximise: tuple[bool, ...]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` [N, D]; ``maximise[d]`` gives each axis's direction.

    A row is dominated when another is at least as good on every axis and strictly better on one; duplicates of a
    non-dominated point are all kept.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != len(maximise):
        raise ValueError(f"points must be [N, {len(maximise)}], got {pts.shape}")
    signs = np.array([-1.0 if m else 1.0 for m in maximise])
    costs = pts * signs  # now every axis is minimised
    n = len(costs)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(costs <= costs[i], axis=1)
        better = np.any(costs < costs[i], axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    return mask


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """Completed trials not dominated on (validation macro accuracy: max, MACs: min, parameter bytes: min),
    sorted by MACs."""
    done = _completed(table).dropna(subset=["macs", "param_bytes"])
    if done.empty:
        return done.copy()
    pts = done[["val_macro_accuracy", "macs", "param_bytes"]].to_numpy(dtype=float)
    front = done[pareto_mask(pts, (True, False, False))]
    return front.sort_values(["macs", "param_bytes"], kind="stable").reset_index(drop=True)


def load_budget(run_dir: str | os.PathLike[str]) -> Budget | None:
    """The budget of the run's ``search.yaml`` (its ``budget:`` section); None when the run has no search file."""
    import yaml

    path = Path(run_dir) / SEARCH_FILE
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    section = data.get("budget") if isinstance(data, dict) else None
    if section is None:
        return None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: budget must be a mapping with max_param_bytes, param_dtype, max_macs")
    known = {"max_param_bytes", "param_dtype", "max_macs"}
    try:
        return Budget(**{k: v for k, v in section.items() if k in known})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def best_trial(
    table: pd.DataFrame, budget: Budget | None = None, trial_id: str | int | None = None
) -> pd.Series:
    """The trial to export: ``trial_id`` when given (it must have been trained), else the completed trial with the
    best validation macro accuracy that is within ``budget`` (ties as in :func:`leaderboard`)."""
    if trial_id is not None:
        key = str(trial_id)
        rows = table[table["trial_id"] == key]
        if rows.empty:
            trained = table[table["status"].isin(TRAINED_STATUSES)]["trial_id"].tolist()
            shown = ", ".join(trained[:20]) + (" ..." if len(trained) > 20 else "")
            raise NotFoundError(f"no trial {key!r} in this run; trained trials: {shown or 'none'}")
        row = rows.iloc[0]
        if row["status"] not in ("completed", "early_stopped"):
            raise NotFoundError(
                f"trial {key!r} has status {row['status']!r}: only completed or early_stopped trials have weights"
            )
        return row
    board = leaderboard(table)
    if budget is not None and not board.empty:
        ok = (board["param_bytes"] <= budget.max_param_bytes) & (board["macs"] <= budget.max_macs)
        board = board[ok]
    if board.empty:
        counts = status_counts(table)
        shown = ", ".join(f"{k}={v}" for k, v in counts.items() if v)
        raise NotFoundError(
            "this run has no completed trial within budget to choose from "
            f"({shown or 'no proposals'}); run or resume the search, or name an early-stopped trial with --trial"
        )
    return board.iloc[0]


# ------------------------------------------------------------------------------------------------ one run


@dataclass
class RunResults:
    """Everything ``asc-search results`` shows about one run."""

    run_dir: Path
    trials: pd.DataFrame
    counts: dict[str, int]
    board: pd.DataFrame  # ranked completed trials (``top`` of them)
    front: pd.DataFrame  # Pareto front over (accuracy, MACs, bytes)
    budget: Budget | None
    params: list[str] = field(default_factory=list)  # proposed-parameter columns
    distill: list[str] = field(default_factory=list)  # of which distillation settings
    plots: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name

    def to_dict(self) -> dict[str, Any]:
        def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [jsonable(rec) for rec in frame.to_dict(orient="records")]

        return {
            "run": self.name,
            "run_dir": str(self.run_dir),
            "status_counts": dict(self.counts),
            "budget": self.budget.to_dict() if self.budget else None,
            "parameter_columns": list(self.params),
            "distillation_columns": list(self.distill),
            "leaderboard": rows(self.board),
            "pareto_front": rows(self.front),
            "plots": {k: str(v) for k, v in self.plots.items()},
        }


def analyse_run(
    run: str | os.PathLike[str],
    results_dir: str | os.PathLike[str] | None = None,
    top: int | None = None,
    plots_dir: str | os.PathLike[str] | None = None,
    plots: bool = True,
    include_stopped: bool = False,
) -> RunResults:
    """Load run ``run`` and compute its leaderboard and Pareto front; write the plots (to ``RUN/plots`` unless
    ``plots_dir``). A run with no completed trial raises :class:`NotFoundError` saying what it holds."""
    run_dir = resolve_run(run, results_dir)
    table = load_trials(run_dir)
    counts = status_counts(table)
    board = leaderboard(table, top=top, include_stopped=include_stopped)
    if not (board["rank"] > 0).any():
        shown = ", ".join(f"{k}={v}" for k, v in counts.items() if v and k != "total")
        raise NotFoundError(
            f"run {run_dir.name!r} ({run_dir}) has no completed trial yet ({shown or 'no proposals'}); "
            "run or resume the search first"
        )
    budget = load_budget(run_dir)
    result = RunResults(
        run_dir=run_dir,
        trials=table,
        counts=counts,
        board=board,
        front=pareto_front(table),
        budget=budget,
        params=param_columns(table),
        distill=distill_columns(table),
    )
    if plots:
        result.plots = make_plots(table, Path(plots_dir) if plots_dir else run_dir / "plots", budget=budget)
    return result


# ------------------------------------------------------------------------------------------------ plots

_STATUS_STYLE = {
    "completed": dict(color="#1f77b4", marker="o", label="completed"),
    "early_stopped": dict(color="#ff7f0e", marker="v", label="early stopped (ASHA)"),
    "failed": dict(color="#7f7f7f", marker="s", label="failed"),
    "rejected_budget": dict(color="#d62728", marker="x", label="rejected (over budget)"),
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


def plot_accuracy_over_trials(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Validation macro accuracy of every trained trial in proposal order, with the best so far (completed)."""
    fig = _figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    order = np.arange(1, len(table) + 1)
    scored = table["val_macro_accuracy"].notna().to_numpy()
    for status in ("early_stopped", "failed", "completed"):
        sel = (table["status"] == status).to_numpy() & scored
        if sel.any():
            style = _STATUS_STYLE[status]
            ax.scatter(order[sel], table["val_macro_accuracy"].to_numpy()[sel], s=28, alpha=0.85, zorder=3, **style)
    done = ((table["status"] == "completed").to_numpy() & scored)
    if done.any():
        acc = np.where(done, table["val_macro_accuracy"].to_numpy(dtype=float), -np.inf)
        best = np.maximum.accumulate(acc)
        start = int(np.argmax(done))
        ax.step(order[start:], best[start:], where="post", color="#2ca02c", lw=2, label="best so far", zorder=2)
    rejected = (table["status"] == "rejected_budget").to_numpy()
    if rejected.any():
        ax.scatter(order[rejected], np.zeros(rejected.sum()), marker="|", s=60, color="#d62728", alpha=0.6,
                   label="rejected (over budget, not trained)", zorder=1)
    ax.set_xlabel("proposal (in order)")
    ax.set_ylabel("validation macro accuracy")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Accuracy over trials ({int(done.sum())} completed, {int(rejected.sum())} rejected)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0)  # outside: never hides points
    return _save(fig, Path(path))


def plot_pareto_front(table: pd.DataFrame, path: str | os.PathLike[str], front: pd.DataFrame | None = None) -> Path:
    """Accuracy against MACs and against parameter bytes for completed trials, the Pareto front marked."""
    front = pareto_front(table) if front is None else front
    done = _completed(table)
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


def plot_budget_plane(table: pd.DataFrame, path: str | os.PathLike[str], budget: Budget | None = None) -> Path:
    """Every costed proposal in the (parameter bytes, MACs) plane: trained ones and rejected ones, budget lines."""
    fig = _figure(figsize=(7.5, 5))
    ax = fig.add_subplot()
    costed = table.dropna(subset=["param_bytes", "macs"])
    for status in ("rejected_budget", "failed", "early_stopped", "completed"):
        sel = costed[costed["status"] == status]
        if not sel.empty:
            style = dict(_STATUS_STYLE[status])
            style["label"] = f"{style['label']} ({len(sel)})"
            ax.scatter(sel["param_bytes"] / 1e3, sel["macs"] / 1e6, s=26, alpha=0.8, zorder=3, **style)
    if budget is not None:
        ax.axvline(budget.max_param_bytes / 1e3, color="black", ls="--", lw=1.2,
                   label=f"budget: {budget.max_param_bytes / 1e3:g} kB ({budget.param_dtype})")
        ax.axhline(budget.max_macs / 1e6, color="black", ls=":", lw=1.2, label=f"budget: {budget.max_macs / 1e6:g} M MACs")
        xs = np.concatenate([costed["param_bytes"].to_numpy() / 1e3, [budget.max_param_bytes / 1e3]])
        ys = np.concatenate([costed["macs"].to_numpy() / 1e6, [budget.max_macs / 1e6]])
        lo_x = min(xs.min(), budget.max_param_bytes / 1e3) * 0.8
        lo_y = min(ys.min(), budget.max_macs / 1e6) * 0.8
        ax.fill_between([lo_x, budget.max_param_bytes / 1e3], lo_y, budget.max_macs / 1e6, color="#2ca02c",
                        alpha=0.08, label="within budget", zorder=0)
    values = costed[["param_bytes", "macs"]].to_numpy(dtype=float)
    if len(values) and (values > 0).all():
        spread = values.max(axis=0) / values.min(axis=0)
        if spread.max() > 30:  # rejected proposals often sit orders of magnitude out: log axes keep both readable
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
    return _save(fig, Path(path))


def make_plots(table: pd.DataFrame, out_dir: str | os.PathLike[str], budget: Budget | None = None) -> dict[str, Path]:
    """Write the three PNG plots into ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    front = pareto_front(table)
    return {
        "accuracy_over_trials": plot_accuracy_over_trials(table, out / "accuracy_over_trials.png"),
        "pareto_front": plot_pareto_front(table, out / "pareto_front.png", front=front),
        "budget_plane": plot_budget_plane(table, out / "budget_plane.png", budget=budget),
    }


# ------------------------------------------------------------------------------------------------ dashboard


def study_storage_url(run_dir: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the run's Optuna study (``RUN/study.db``); a run without one is a NotFoundError."""
    path = Path(run_dir) / STUDY_FILE
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist: this run has no Optuna study to show")
    return f"sqlite:///{path.resolve()}"


def study_names(run_dir: str | os.PathLike[str]) -> list[str]:
    """Names of the Optuna studies stored in the run's ``study.db``."""
    import optuna

    url = study_storage_url(run_dir)
    try:
        summaries = optuna.get_all_study_summaries(storage=url, include_best_trial=False)
    except Exception as exc:  # SQLAlchemy / Optuna raise many kinds for a file that is not a study database
        raise DataError(f"{Path(run_dir) / STUDY_FILE} is not a readable Optuna study database ({exc})") from None
    return [s.study_name for s in summaries]


def dashboard_server(
    run: str | os.PathLike[str],
    results_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
):
    """A WSGI server (not yet serving) of optuna-dashboard on the run's study; ``port=0`` picks a free port.

    Returns ``(server, url, names)``: call ``server.serve_forever()`` to serve and ``server.shutdown()`` (from
    another thread) then ``server.server_close()`` to stop. A port in use is a ConfigError naming it.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    run_dir = resolve_run(run, results_dir)
    names = study_names(run_dir)
    if not names:
        raise NotFoundError(f"{run_dir / STUDY_FILE} holds no Optuna study yet: run or resume the search first")
    app = optuna_dashboard.wsgi(study_storage_url(run_dir))

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - library code never prints
            return

    class _ThreadingServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # the dashboard's page loads many files at once

    try:
        server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise ConfigError(f"cannot serve the dashboard on {host}:{port} ({exc.strerror or exc}); pick another --port") from None
    url = f"http://{host}:{server.server_port}/dashboard/"
    return server, url, names
