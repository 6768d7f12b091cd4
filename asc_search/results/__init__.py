"""Looking at a search run: its tables (leaderboard, Pareto front), its plots and the dashboard on its study.

The run folder itself (file names, the trials table, the best-trial rule, status counts) belongs to
:mod:`asc_search.search.runfolder`; this package reads it and never imports the search driver (nor Ray).
"""

from .dashboard import dashboard_server, study_names
from .plots import PLOT_FILES, make_plots, plot_accuracy_over_trials, plot_budget_plane, plot_pareto_front
from .tables import RunResults, analyse_run, distill_columns, leaderboard, pareto_front, pareto_mask, strip_prefix

__all__ = [
    "RunResults",
    "analyse_run",
    "leaderboard",
    "pareto_front",
    "pareto_mask",
    "distill_columns",
    "strip_prefix",
    "PLOT_FILES",
    "make_plots",
    "plot_accuracy_over_trials",
    "plot_pareto_front",
    "plot_budget_plane",
    "study_names",
    "dashboard_server",
]
