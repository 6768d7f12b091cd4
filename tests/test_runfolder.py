"""asc_search.search.runfolder: THE best-trial rule, THE status count, run.json, checkpoint lookup, and the trials
table built from a study the searcher wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from asc_search.config import Budget
from asc_search.errors import DataError, NotFoundError
from asc_search.search.runfolder import (
    RUN_FILE,
    STATUSES,
    TRIAL_COLUMNS,
    RunRecord,
    RunState,
    Status,
    best_trial,
    build_trials_table,
    find_checkpoints,
    latest_checkpoint,
    load_best_weights,
    load_trials,
    rank,
    ranked_trials,
    read_run_record,
    score_column,
    select_trial,
    status_counts,
    trial_dirname,
    within_budget,
    write_checkpoint,
    write_run_record,
    write_trials_table,
)
from asc_search.training.loop import FitState

ROOT = Path(__file__).resolve().parents[1]


def _table(rows):
    cols = ["trial_id", "status", "val_macro_accuracy", "val_log_loss", "macs", "param_bytes"]
    return pd.DataFrame([dict(zip(cols, r)) for r in rows])


#            id  status            acc     loss   macs   bytes
TRIALS = [
    (0, "completed", 0.80, 0.50, 100, 900),  # A
    (1, "completed", 0.80, 0.40, 200, 900),  # B: ties A on accuracy, lower log loss
    (2, "completed", 0.80, 0.40, 150, 900),  # C: ties B on both, fewer MACs -> best within budget
    (3, "early_stopped", 0.95, 0.10, 50, 900),  # a low-fidelity score: never ranked
    (4, "completed", 0.90, 0.60, 5000, 900),  # the most accurate, but over the budget below
    (5, "rejected_budget", math.nan, math.nan, 90000, 9999),
    (6, "failed", math.nan, math.nan, 120, 900),
    (7, "completed", math.nan, math.nan, 100, 900),  # no score: not ranked
]
BUDGET = Budget(max_param_bytes=1000, param_dtype="int8", max_macs=1000)


def test_the_best_trial_rule():
    table = _table(TRIALS)
    assert ranked_trials(table)["trial_id"].tolist() == [4, 2, 1, 0]
    assert best_trial(table)["trial_id"] == 4
    assert best_trial(table, BUDGET)["trial_id"] == 2  # over budget is never chosen; ties: loss, then MACs
    assert best_trial(table[table["status"] != "completed"]) is None  # early-stopped/failed/rejected never best
    assert best_trial(table, Budget(max_param_bytes=1000, param_dtype="int8", max_macs=10)) is None
    # rank() sorts any frame by the same rule (the leaderboard's unranked part uses it too)
    assert rank(table.iloc[[0, 1, 2]])["trial_id"].tolist() == [2, 1, 0]


def test_a_run_scored_as_deployed_ranks_by_the_deployed_score_and_bytes():
    table = _table(TRIALS)
    table["val_macro_accuracy_deployed"] = math.nan
    assert score_column(table) == "val_macro_accuracy"  # a float run: the column is there but empty
    done = table["status"] == "completed"
    table.loc[done, "val_macro_accuracy_deployed"] = [0.70, 0.75, 0.60, 0.85, math.nan]  # trials 0, 1, 2, 4, 7
    assert score_column(table) == "val_macro_accuracy_deployed"
    assert ranked_trials(table)["trial_id"].tolist() == [4, 1, 0, 2]
    assert best_trial(table, BUDGET)["trial_id"] == 1
    table["deployed_param_bytes"] = [900, 1001, 900, 900, 900, None, 900, 900]  # trial 1's int8 graph is too big
    assert best_trial(table, BUDGET)["trial_id"] == 0
    assert within_budget(table, BUDGET).tolist() == [True, False, True, True, False, False, True, True]


def test_select_trial_by_id_or_best():
    table = _table(TRIALS)
    assert select_trial(table, budget=BUDGET)["trial_id"] == 2
    assert select_trial(table, trial_id="3")["trial_id"] == 3  # early-stopped trials have weights
    assert select_trial(table, trial_id=4, budget=BUDGET)["trial_id"] == 4  # a named trial is taken as named
    with pytest.raises(NotFoundError, match="status 'rejected_budget'"):
        select_trial(table, trial_id=5)
    with pytest.raises(NotFoundError, match="status 'failed'"):
        select_trial(table, trial_id=6)
    with pytest.raises(NotFoundError, match=r"no trial 'nope' in this run; trained trials: 0, 1, 2, 3, 4, 6, 7"):
        select_trial(table, trial_id="nope")
    with pytest.raises(NotFoundError, match="no completed trial within budget") as info:
        select_trial(table, budget=Budget(max_param_bytes=1000, param_dtype="int8", max_macs=10))
    assert info.value.params == ("trial_id",)  # the CLI shows it as --trial


def test_status_counts():
    counts = status_counts(_table(TRIALS))
    assert counts == {"completed": 5, "early_stopped": 1, "failed": 1, "rejected_budget": 1, "running": 0,
                      "trained": 7, "total": 8}
    assert list(counts)[: len(STATUSES)] == [s.value for s in STATUSES]
    empty = status_counts(_table([]))
    assert empty["total"] == 0 and empty["trained"] == 0 and set(STATUSES) <= set(empty)
    odd = status_counts(_table([(0, "mystery", 0.5, 1.0, 1, 1)]))
    assert odd["mystery"] == 1 and odd["total"] == 1 and odd["trained"] == 0


def test_run_record_round_trip(tmp_path):
    assert read_run_record(tmp_path) is None
    record = RunRecord(name="r", study_name="r", cache_dir="/c", feature_fingerprint="abc", split={"seed": 1},
                       resumed_utc=["t1"], counts={"completed": 2})
    write_run_record(tmp_path, record)
    data = json.loads((tmp_path / RUN_FILE).read_text())
    assert data["status"] == "running" and data["teacher_cache_dir"] is None and "extra" not in data
    again = read_run_record(tmp_path)
    assert again == record
    # keys of a newer version are kept as they were and written back unchanged
    data["arms"] = [{"name": "reference"}]
    data["status"] = RunState.FINISHED.value
    (tmp_path / RUN_FILE).write_text(json.dumps(data))
    newer = read_run_record(tmp_path)
    assert newer.extra == {"arms": [{"name": "reference"}]} and newer.status == "finished"
    write_run_record(tmp_path, newer)
    assert json.loads((tmp_path / RUN_FILE).read_text()) == data
    (tmp_path / RUN_FILE).write_text("{not json")
    with pytest.raises(DataError, match="run.json is not valid JSON"):
        read_run_record(tmp_path)
    (tmp_path / RUN_FILE).write_text(json.dumps({"status": "running"}))
    with pytest.raises(DataError, match="not a run record"):
        read_run_record(tmp_path)


def _marker(run, folder, index, trial_id, ray_id, key="trial_id"):
    ckpt = run / "ray" / folder / f"checkpoint_{index:06d}"
    ckpt.mkdir(parents=True)
    (ckpt / "trial.json").write_text(json.dumps({key: trial_id, "ray_trial_id": ray_id, "epoch": index + 1}))
    return ckpt


def test_checkpoint_lookup_picks_the_newest_of_the_recorded_ray_trial(tmp_path):
    run = tmp_path / "run"
    _marker(run, trial_dirname(3, "a"), 9, 3, "a")
    newest = _marker(run, trial_dirname(3, "a"), 10, 3, "a")  # 10 > 9 as numbers, not as text
    other = _marker(run, trial_dirname(3, "b"), 12, 3, "b")  # an older Ray trial of the same proposal
    _marker(run, trial_dirname(4, "c"), 2, 4, "c", key="optuna_trial")  # a marker of an older run
    broken = run / "ray" / "trial_5_d" / "checkpoint_000001"
    broken.mkdir(parents=True)
    (broken / "trial.json").write_text("{")
    found = find_checkpoints(run)
    assert sorted(found) == [3, 4]
    assert latest_checkpoint(found[3], "a").path == str(newest.relative_to(run))
    assert latest_checkpoint(found[3], "b").path == str(other.relative_to(run))
    assert latest_checkpoint(found[3]).index == 12  # no Ray trial recorded: the highest number
    assert latest_checkpoint(found[4], "c").index == 2
    assert latest_checkpoint([]) is None


def test_checkpoint_write_then_load_best_weights(tmp_path):
    run = tmp_path / "run"
    folder = run / "ray" / trial_dirname(7, "x") / "checkpoint_000000"
    folder.mkdir(parents=True)
    weights = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
    state = FitState(epoch=3, model=weights, head=None, optimizer={"lr": 1e-3}, scheduler={}, scaler=None,
                     generator=torch.Generator().get_state(), numpy_rng={}, torch_rng=torch.get_rng_state(),
                     cuda_rng=None, history=[], best_state=weights, best_head=None,
                     best_metrics={"val_macro_accuracy": 0.5, "cm": [[1]]}, best_epoch=2, train_config={})
    write_checkpoint(folder, trial_id=7, ray_trial_id="x", epoch=3, state=state, student_config={"n_classes": 10})
    best = torch.load(folder / "best.pt", weights_only=True)  # plain values only
    assert best["best_metrics"] == {"val_macro_accuracy": 0.5} and best["student_config"] == {"n_classes": 10}
    assert find_checkpoints(run)[7][0].ray_trial_id == "x"
    loaded = load_best_weights(run, str(folder.relative_to(run)), 7)
    assert set(loaded) == {"w", "b"} and torch.equal(loaded["w"], weights["w"])
    with pytest.raises(NotFoundError, match="trial 7 has no checkpoint recorded.*retrain") as info:
        load_best_weights(run, None, 7)
    assert info.value.params == ("retrain",)
    with pytest.raises(NotFoundError, match="is gone"):
        load_best_weights(run, "ray/elsewhere", 7)
    (folder / "best.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="cannot be read"):
        load_best_weights(run, str(folder.relative_to(run)), 7)


# ------------------------------------------------------------------------------------------------ the trials table


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """A run folder whose study was written by the real searcher (no Tune): some rejected proposals, one completed,
    one early-stopped, one failed and one still running, plus a proposal asked but never costed."""
    from asc_search.search.searcher import BudgetedSearcher
    from asc_search.search.space import load_space

    run = tmp_path_factory.mktemp("runs") / "r"
    run.mkdir()
    space = (ROOT / "search_spaces" / "quick.yaml").read_text()
    (run / "search.yaml").write_text(space)
    spec = load_space(run / "search.yaml")
    write_run_record(run, RunRecord(name="r", study_name="r"))
    searcher = BudgetedSearcher(spec, f"sqlite:///{run / 'study.db'}", "r")
    for rid in "abcd":
        searcher.suggest(rid)
    searcher.on_trial_complete("a", {"val_macro_accuracy": 0.6, "val_log_loss": 1.1, "epoch": 10,
                                     "epochs_planned": 10, "time_total_s": 3.0})
    searcher.on_trial_complete("b", {"val_macro_accuracy": 0.4, "val_log_loss": 1.5, "epoch": 2,
                                     "epochs_planned": 10})
    searcher.on_trial_complete("c", None, error=True)
    searcher.study.ask()  # asked, never costed: not a proposal
    return run, spec, searcher


def test_trials_table_from_the_searchers_study(study_run):
    run, spec, searcher = study_run
    table = build_trials_table(run)
    study_trials = searcher.study.get_trials()
    costed = [t for t in study_trials if "status" in t.user_attrs]
    assert table["trial_id"].tolist() == [t.number for t in costed]  # the Optuna trial numbers, in order
    assert len(table) == len(study_trials) - 1
    by_ray = table.dropna(subset=["ray_trial_id"]).set_index("ray_trial_id")
    assert by_ray.loc["a", "status"] == "completed" and by_ray.loc["a", "epochs"] == 10
    assert by_ray.loc["b", "status"] == "early_stopped" and by_ray.loc["c", "status"] == "failed"
    assert by_ray.loc["d", "status"] == "running"
    assert by_ray.loc["a", "duration_s"] == 3.0 and by_ray.loc["a", "val_macro_accuracy"] == 0.6
    rejected = table[table["status"] == "rejected_budget"]
    assert len(rejected) and (rejected[["constraint_param_bytes", "constraint_macs"]].max(axis=1) > 0).all()
    assert (rejected["counter"] == "analytic").all() and (rejected["duration_s"] == rejected["cost_s"]).all()
    # the schema: every fixed column with its dtype, and exactly one p_<name> per searched parameter
    for col, dtype in TRIAL_COLUMNS.items():
        assert str(table[col].dtype) == dtype, col
    params = [c for c in table.columns if c.startswith("p_")]
    searched = {p.name for p in spec.params if p.searched and p.name != "blocks_per_stage"}
    assert {c[2:] for c in params if not c.startswith("p_blocks_s")} == searched
    assert {c for c in params if c.startswith("p_blocks_s")} <= {"p_blocks_s1", "p_blocks_s2", "p_blocks_s3"}
    # a conditional parameter a proposal did not draw holds the file's default (emb_weight 0.0), else null
    off = table[table["p_use_embedding"] == False]  # noqa: E712
    assert len(off) and (off["p_emb_weight"] == 0.0).all() and off["p_emb_loss"].isna().all()
    # the columns come in the documented order: trial_id, status, kind, reference, p_..., the rest
    assert list(table.columns[:4]) == ["trial_id", "status", "kind", "reference"] and table.columns[4].startswith("p_")
    assert list(table.columns[4 + len(params):]) == list(TRIAL_COLUMNS)[4:]
    assert (table["kind"] == "search").all() and table["reference"].isna().all()  # nothing enqueued: all sampled
    assert json.loads(table["config"].iloc[0])["student"]["n_classes"] == 10


def test_load_trials_live_while_running_then_from_the_file(study_run, tmp_path):
    import shutil

    run, _, _ = study_run
    copy = tmp_path / "r"
    shutil.copytree(run, copy)
    live = load_trials(copy)  # run.json says running and there is no trials.parquet: rebuilt from the study
    assert "running" in set(live["status"]) and live["trial_id"].dtype == np.int64
    write_trials_table(copy)
    record = read_run_record(copy)
    record.status = RunState.FINISHED.value
    write_run_record(copy, record)
    stored = load_trials(copy)
    assert stored[["trial_id", "status"]].equals(live[["trial_id", "status"]])
    pd.DataFrame({"trial_id": ["x"], "status": ["completed"], "params": [1], "param_bytes": [1], "macs": [1],
                  "val_macro_accuracy": [0.5], "val_log_loss": [1.0], "epochs": [1], "duration_s": [1.0]}
                 ).to_parquet(copy / "trials.parquet")
    with pytest.raises(DataError, match="trial_id must hold the Optuna trial numbers"):
        load_trials(copy)


def test_statuses_are_strings():
    assert Status.COMPLETED == "completed" and f"{Status.REJECTED}" == "rejected_budget"
    assert json.dumps({"s": Status.FAILED}) == '{"s": "failed"}'


@pytest.mark.slow
def test_real_run_and_live_table_from_the_study(tiny_search_run, tmp_path):
    import shutil

    table = load_trials(tiny_search_run)
    counts = status_counts(table)
    assert counts["total"] == len(table) and counts["rejected_budget"] > 0 and counts["trained"] == 2
    for _, row in table[table["status"].isin(["completed", "early_stopped"])].iterrows():
        ckpt = tiny_search_run / row["checkpoint_path"]
        marker = json.loads((ckpt / "trial.json").read_text())
        assert marker["trial_id"] == row["trial_id"] and marker["ray_trial_id"] == row["ray_trial_id"]
        assert ckpt.parent.name == trial_dirname(row["trial_id"], row["ray_trial_id"])
    # while a search runs (or before it wrote trials.parquet) the table is rebuilt from study.db
    live = tmp_path / "live"
    shutil.copytree(tiny_search_run, live, ignore=shutil.ignore_patterns("ray"))
    (live / "trials.parquet").unlink()
    rebuilt = load_trials(live)
    assert rebuilt[["trial_id", "status"]].equals(table[["trial_id", "status"]])
