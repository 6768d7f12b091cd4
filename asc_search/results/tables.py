"""A search run's tables: the leaderboard, the Pareto front and :class:`RunResults` (what ``asc-search results``
shows, with the plots of :func:`asc_search.results.analysis.analyse_run`). The run is read through :mod:`asc_search.search.runfolder` (its trials table, its
budget, THE ranking rule); nothing here prints, the CLI renders what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import jsonable
from ..config import Budget
from ..errors import ConfigError
from ..search.runfolder import (
    PARAM_PREFIX,
    Status,
    best_trial,
    param_columns,
    rank,
    ranked_trials,
    read_run_record,
    reference_margin,
    run_budget,
    score_column,
    status_counts,
)

__all__ = [
    "strip_prefix",
    "distill_columns",
    "leaderboard",
    "pareto_mask",
    "pareto_front",
    "RunResults",
    "run_results",
]


def strip_prefix(column: str) -> str:
    """A parameter column's parameter name (``p_kd_weight`` -> ``kd_weight``)."""
    return column[len(PARAM_PREFIX):] if column.startswith(PARAM_PREFIX) else column


def distill_columns(table: pd.DataFrame) -> list[str]:
    """The parameter columns of the search file's ``distill:`` section (KD weight, temperature, embedding loss...)."""
    from ..search.space import section_keys

    distill = section_keys("distill")
    return [c for c in param_columns(table) if strip_prefix(c) in distill]


def leaderboard(table: pd.DataFrame, top: int | None = None, include_stopped: bool = False) -> pd.DataFrame:
    """Completed trials ranked by :data:`~asc_search.search.runfolder.RANKING`, ranks 1..K (``top`` of them).

    Early-stopped trials are never ranked among them (their score is from fewer epochs); with ``include_stopped``
    they follow the ranked ones (rank 0 = unranked), best first, then failed trials.
    """
    if top is not None and top <= 0:
        raise ConfigError(f"top must be a positive integer, got {top}", params=("top",))
    ranked = ranked_trials(table)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    ranked = ranked.head(top) if top is not None else ranked
    if include_stopped:
        rest = pd.concat([rank(table[table["status"] == s]) for s in (Status.EARLY_STOPPED, Status.FAILED)])
        rest = rest.reset_index(drop=True)
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
    costs = pts * np.array([-1.0 if m else 1.0 for m in maximise])  # now every axis is minimised
    mask = np.ones(len(costs), dtype=bool)
    for i in range(len(costs)):
        no_worse = np.all(costs <= costs[i], axis=1)
        better = np.any(costs < costs[i], axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    return mask


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """Completed trials not dominated on (validation macro accuracy: max, the deployed graph's in a run that scored
    it; MACs: min; parameter bytes: min), sorted by MACs."""
    done = ranked_trials(table).dropna(subset=["macs", "param_bytes"])
    if done.empty:
        return done.copy()
    pts = done[[score_column(done), "macs", "param_bytes"]].to_numpy(dtype=float)
    front = done[pareto_mask(pts, (True, False, False))]
    return front.sort_values(["macs", "param_bytes"], kind="stable").reset_index(drop=True)


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
    margin: dict[str, Any] | None = None  # the winner against the best reference (runfolder.reference_margin)
    warnings: list[str] = field(default_factory=list)  # run.json's warnings (asc_search.search.caveats)

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
            "against_reference": self.margin,
            "warnings": list(self.warnings),
        }


def run_results(run_dir: Path, table: pd.DataFrame, top: int | None = None,
                include_stopped: bool = False) -> RunResults:
    """The :class:`RunResults` of the run folder ``run_dir`` with trials table ``table`` (no plots), also when
    nothing is ranked yet (an empty leaderboard)."""
    budget = run_budget(run_dir)
    best = best_trial(table, budget)
    record = read_run_record(run_dir)
    return RunResults(run_dir=run_dir, trials=table, counts=status_counts(table),
                      board=leaderboard(table, top=top, include_stopped=include_stopped), front=pareto_front(table),
                      budget=budget, params=param_columns(table), distill=distill_columns(table),
                      margin=reference_margin(table, best, budget) if best is not None else None,
                      warnings=list(record.warnings) if record is not None else [])
