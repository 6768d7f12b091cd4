"""``asc-search results``' library call: :func:`analyse_run` = a run's tables (:mod:`.tables`) and its plots
(:mod:`.plots`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import NotFoundError
from ..search.runfolder import PLOTS_DIR, load_trials, resolve_run
from .plots import make_plots
from .tables import RunResults, run_results

__all__ = ["analyse_run"]


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
    result = run_results(run_dir, load_trials(run_dir), top=top, include_stopped=include_stopped)
    if not (result.board["rank"] > 0).any():
        shown = ", ".join(f"{k}={v}" for k, v in result.counts.items() if v and k != "total")
        raise NotFoundError(
            f"run {run_dir.name!r} ({run_dir}) has no completed trial yet ({shown or 'no proposals'}); "
            "run or resume the search first"
        )
    if plots:
        result.plots = make_plots(result.trials, Path(plots_dir) if plots_dir else run_dir / PLOTS_DIR,
                                  budget=result.budget)
    return result
