"""Looking at a search run: its tables (leaderboard, Pareto front), its plots, its views inside its Optuna study
(note, artefacts, importance over trained trials) and the dashboard on that study.

The run folder itself (file names, the trials table, the best-trial rule, status counts) belongs to
:mod:`asc_search.search.runfolder`; this package reads it and never imports the search driver (nor Ray).
"""

from .analysis import analyse_run
from .dashboard import dashboard_app, dashboard_server, study_names
from .importance import feasible_complete_trials, trained_importances
from .plots import PLOT_FILES, make_plots, plot_accuracy_over_trials, plot_budget_plane, plot_pareto_front
from .tables import RunResults, distill_columns, leaderboard, pareto_front, pareto_mask, run_results, strip_prefix
from .views import PublishedViews, ViewsPublisher, artifact_id, artifact_store, publish_views, render_note

__all__ = [
    "RunResults",
    "analyse_run",
    "run_results",
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
    "dashboard_app",
    "dashboard_server",
    "feasible_complete_trials",
    "trained_importances",
    "PublishedViews",
    "ViewsPublisher",
    "artifact_id",
    "artifact_store",
    "publish_views",
    "render_note",
]
