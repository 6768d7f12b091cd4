"""The run's Optuna study (asc_search.search.study): persistent in SQLite with write-ahead logging, the sampler the
search file names, seeded."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from asc_search.search.searcher import BudgetedSearcher
from asc_search.search.space import parse_space
from asc_search.search.study import load_study, make_sampler, make_storage, open_study, trial_config

ROOT = Path(__file__).resolve().parents[1]
QUICK = (ROOT / "search_spaces" / "quick.yaml").read_text()


def _spec(sampler="tpe"):
    return parse_space(QUICK.replace("sampler: tpe", f"sampler: {sampler}"), source="quick.yaml")


def test_open_study_is_persistent(tmp_path):
    spec = _spec()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    s = BudgetedSearcher(spec, url, "p")
    s.suggest("a")
    again = optuna.load_study(study_name="p", storage=url)
    assert len(again.trials) == len(s.study.trials)
    assert open_study(spec, url, "p").directions == [optuna.study.StudyDirection.MAXIMIZE]
    assert json.loads(trial_config(again.trials[-1]))["student"]["n_classes"] == 10
    assert "config" not in again.trials[-1].user_attrs  # a system attribute: out of the dashboard's trial table
    assert load_study(url, "p").directions == [optuna.study.StudyDirection.MAXIMIZE]


def test_objectives_carry_their_names(tmp_path):
    """optuna-dashboard labels the objectives with the study's metric names (else "Objective 0")."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert load_study(url, open_study(_spec(), url, "one").study_name).metric_names == ["val_macro_accuracy"]
    pareto = parse_space(QUICK.replace("sampler: tpe", "sampler: nsga2").replace(
        "objectives: [val_macro_accuracy]", "objectives: [val_macro_accuracy, macs, param_bytes]"), source="p.yaml")
    assert open_study(pareto, url, "three").metric_names == ["val_macro_accuracy", "macs", "param_bytes"]
    assert load_study(url, "three").metric_names == ["val_macro_accuracy", "macs", "param_bytes"]


def test_sqlite_storage_uses_write_ahead_logging(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    with storage.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    assert mode == "wal" and sync == 1  # NORMAL


@pytest.mark.parametrize("name, cls", [("tpe", optuna.samplers.TPESampler), ("random", optuna.samplers.RandomSampler),
                                       ("nsga2", optuna.samplers.NSGAIISampler)])
def test_the_sampler_the_file_names_is_seeded(name, cls):
    spec = _spec(name)
    assert isinstance(make_sampler(spec), cls)

    def draws():
        study = optuna.create_study(sampler=make_sampler(spec), directions=spec.search.directions)
        return [study.ask().suggest_float("x", 0, 1) for _ in range(5)]

    assert draws() == draws()  # search.seed makes the proposals reproducible


def test_trial_config_of_runs_that_kept_it_as_a_user_attribute():
    old = optuna.trial.create_trial(value=0.5, user_attrs={"config": '{"student": {}}'})
    assert trial_config(old) == '{"student": {}}'
    new = optuna.trial.create_trial(value=0.5, system_attrs={"asc_search:config": '{"a": 1}'})
    assert trial_config(new) == '{"a": 1}' and trial_config(optuna.trial.create_trial(value=0.1)) is None
