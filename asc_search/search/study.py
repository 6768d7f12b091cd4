"""The run's Optuna study: its storage (SQLite with write-ahead logging), the sampler a search file names, and
opening the study. Optuna only (no Ray): the run folder's readers use it too."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from .sampler import BoundedTPESampler
from .spec import SearchSpec

__all__ = ["CONFIG_KEY", "DASHBOARD_CONSTRAINTS_KEY", "make_sampler", "make_storage", "open_study", "load_study",
           "set_constraints", "set_trial_config", "trial_config"]

#: The trial system attribute optuna-dashboard (0.21) reads a trial's feasibility from: ONE list of constraint values
#: (> 0: violated). Optuna 5's ``Trial.set_constraint`` stores each constraint under its own key
#: (``constraints:<name>``) instead, so the dashboard never learns that an over-budget proposal is infeasible.
DASHBOARD_CONSTRAINTS_KEY = "constraints"
#: The trial system attribute holding a proposal's full config (JSON). Not a user attribute: optuna-dashboard shows
#: every user attribute as a column of its trial table, and a ~600-character JSON there makes each row many lines tall.
CONFIG_KEY = "asc_search:config"


def make_sampler(spec: SearchSpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by ``search.sampler``, seeded by ``search.seed``."""
    s = spec.search
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if s.sampler == "random":
            return optuna.samplers.RandomSampler(seed=s.seed)
        if s.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=s.seed, population_size=s.population_size)
        # multivariate + group handle the conditional (define-by-run) space; constant_liar keeps concurrent
        # workers from being handed the same region while their trials run.
        # BoundedTPESampler: Optuna's TPE reading a bounded view of the study, so that an ask does not grow with it
        return BoundedTPESampler(
            seed=s.seed,
            n_startup_trials=s.n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def make_storage(storage_url: str) -> optuna.storages.RDBStorage:
    """An RDBStorage; for SQLite with write-ahead logging and ``synchronous=NORMAL``.

    The searcher writes a decided proposal in one transaction (:mod:`.mirror`), a trained one's ending in a few;
    with SQLite's default rollback journal each commit waits for an fsync (~10 ms here).
    WAL + NORMAL is still safe when the process is killed (only an OS crash may lose the last commits), and readers
    (optuna-dashboard) never block the writer.
    """
    storage = optuna.storages.RDBStorage(storage_url)
    if storage_url.startswith("sqlite:"):
        import sqlalchemy

        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        sqlalchemy.event.listen(storage.engine, "connect", _pragmas)
        storage.engine.dispose()  # reconnect with the pragmas
    return storage


def open_study(spec: SearchSpec, storage_url: str, study_name: str, create: bool = True,
               storage: optuna.storages.RDBStorage | None = None) -> optuna.Study:
    """Create (or load) the run's study in ``storage_url`` (or in ``storage``, made by :func:`make_storage`) with the
    spec's directions and sampler; its objectives carry their names (``val_macro_accuracy``, ``macs``,
    ``param_bytes``: what optuna-dashboard shows)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage if storage is not None else make_storage(storage_url),
        study_name=study_name,
        directions=spec.search.directions,
        sampler=make_sampler(spec),
        load_if_exists=create,
    )
    if study.metric_names != list(spec.search.objectives):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(spec.search.objectives))
    return study


def set_constraints(trial: optuna.Trial, constraints: dict[str, float]) -> None:
    """Record a proposal's constraint values (> 0: over that limit) in both forms its readers need.

    ``trial.set_constraint`` (one ``constraints:<name>`` attribute each) is what Optuna 5's samplers and
    ``trial.constraints`` read by name; the same values as one list under :data:`DASHBOARD_CONSTRAINTS_KEY` is what
    optuna-dashboard reads. Optuna reads the list too (as constraints ``"0"``, ``"1"``, ...), so a sampler sees
    every value twice: feasibility (all <= 0) is unchanged, and the violation sum TPE and NSGA-II rank infeasible
    trials by is doubled for every trial alike, which keeps their order.
    """
    for name, value in constraints.items():
        trial.set_constraint(name, float(value))
    trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS_KEY,
                                        [float(v) for v in constraints.values()])


def load_study(storage_url: str, study_name: str) -> optuna.Study:
    """An existing study, for reading (no sampler needed)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=study_name, storage=storage_url)


def set_trial_config(trial: optuna.Trial, config_json: str) -> None:
    """Keep a proposal's full config (JSON) with its trial, under :data:`CONFIG_KEY`."""
    trial.storage.set_trial_system_attr(trial._trial_id, CONFIG_KEY, config_json)


def trial_config(trial: optuna.trial.FrozenTrial) -> str | None:
    """A trial's config JSON, or None (asked, never costed). Runs made before 0.x kept it as the user attribute
    ``config``: read there too."""
    return trial.system_attrs.get(CONFIG_KEY, trial.user_attrs.get("config"))
