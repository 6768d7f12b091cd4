"""The run folder ``RESULTS_DIR/NAME/`` of a search, and the one place that names, reads and writes its parts::

    search.yaml      the search file as run                         SEARCH_FILE
    run.json         what produced the run (RunRecord)              RUN_FILE      record.py
    study.db         the Optuna study (SQLite)                      STUDY_FILE
    ray/             Tune's experiment: trial folders, checkpoints   RAY_DIR       checkpoints.py
    trials.parquet   one row per proposal                           TRIALS_FILE   trials.py
    plots/           the PNG plots of ``asc-search results``         PLOTS_DIR
    artifacts/       the study's artefacts for optuna-dashboard       ARTIFACTS_DIR

* :mod:`.layout`: the file names, the proposal statuses (:class:`Status`, :data:`TRAINED`) and the run's state
  (:class:`RunState`), finding a run by name or path;
* :mod:`.lock`: one driver per run (``.lock``, an flock held for the driver's life, taken before anything slow);
* :mod:`.record`: ``run.json`` (:class:`RunRecord`, its documented schema), the study name, the run's budget;
* :mod:`.checkpoints`: a trial checkpoint's files, writing one, finding a trial's newest one, reading its weights;
* :mod:`.trials`: the trials table (schema, built from the study with Optuna only, written, read), THE best-trial
  rule (:func:`best_trial`) and THE status count (:func:`status_counts`).

A trial's id everywhere is ``trial_id``, the Optuna trial number; ``ray_trial_id`` is only Tune's id of the Ray
trial that trained it. Nothing here imports Ray. The public names of the four modules are this package's
``__all__``: import them from ``asc_search.search.runfolder``.
"""

from .checkpoints import (
    BEST_FILE,
    RESUME_FILE,
    TRIAL_MARKER,
    Checkpoint,
    find_checkpoints,
    latest_checkpoint,
    load_best_weights,
    read_resume_state,
    trial_dirname,
    trial_errors,
    write_checkpoint,
)
from .layout import (
    ARTIFACTS_DIR,
    DEFAULT_RESULTS_DIR,
    PLOTS_DIR,
    RAY_DIR,
    RUN_FILE,
    SEARCH_FILE,
    STATUSES,
    STUDY_FILE,
    TRAINED,
    TRIALS_FILE,
    WITH_WEIGHTS,
    RunState,
    Status,
    is_run_dir,
    list_runs,
    resolve_run,
    study_url,
)
from .lock import LOCK_FILE, NAME_MAX, RunInUseError, RunLock, check_run_name, lock_run, locked_run, run_holder
from .record import RunRecord, is_running, read_run_record, run_budget, space_file_record, study_name, write_run_record
from .trials import (
    DEPLOYED_SCORE,
    PARAM_PREFIX,
    RANKING,
    REQUIRED_COLUMNS,
    TRIAL_COLUMNS,
    best_reference,
    best_trial,
    build_trials_table,
    load_trials,
    param_columns,
    rank,
    ranked_trials,
    reference_margin,
    score_column,
    select_trial,
    status_counts,
    trained_short,
    trial_proposal,
    within_budget,
    write_trials_table,
)

__all__ = [
    "DEFAULT_RESULTS_DIR",
    "SEARCH_FILE",
    "RUN_FILE",
    "STUDY_FILE",
    "RAY_DIR",
    "TRIALS_FILE",
    "PLOTS_DIR",
    "ARTIFACTS_DIR",
    "Status",
    "STATUSES",
    "TRAINED",
    "WITH_WEIGHTS",
    "RunState",
    "is_run_dir",
    "list_runs",
    "resolve_run",
    "study_url",
    "LOCK_FILE",
    "NAME_MAX",
    "check_run_name",
    "space_file_record",
    "RunInUseError",
    "RunLock",
    "lock_run",
    "locked_run",
    "run_holder",
    "RunRecord",
    "read_run_record",
    "write_run_record",
    "study_name",
    "run_budget",
    "is_running",
    "BEST_FILE",
    "RESUME_FILE",
    "TRIAL_MARKER",
    "Checkpoint",
    "trial_dirname",
    "write_checkpoint",
    "read_resume_state",
    "find_checkpoints",
    "latest_checkpoint",
    "trial_errors",
    "load_best_weights",
    "PARAM_PREFIX",
    "TRIAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "RANKING",
    "DEPLOYED_SCORE",
    "score_column",
    "within_budget",
    "build_trials_table",
    "write_trials_table",
    "load_trials",
    "trial_proposal",
    "param_columns",
    "rank",
    "ranked_trials",
    "best_trial",
    "best_reference",
    "reference_margin",
    "select_trial",
    "status_counts",
    "trained_short",
]
