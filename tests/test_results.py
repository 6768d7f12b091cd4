"""asc_search.results and `asc-search results`: run lookup, leaderboard, Pareto front, plots, bad runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from asc_search.cli import main
from asc_search.errors import DataError, NotFoundError
from asc_search.results import analysis as R


def test_pareto_mask_hand_computed():
    # (accuracy max, macs min, bytes min)
    pts = np.array(
        [
            [0.60, 10, 100],  # front: best accuracy
            [0.50, 5, 100],  # front: fewest MACs
            [0.50, 10, 50],  # front: fewest bytes
            [0.55, 12, 120],  # dominated by row 0
            [0.50, 5, 100],  # duplicate of a front point: kept
            [0.40, 5, 50],  # front: fewest MACs AND bytes together
            [0.40, 6, 60],  # dominated by row 5
        ]
    )
    mask = R.pareto_mask(pts, (True, False, False))
    assert mask.tolist() == [True, True, True, False, True, True, False]


def test_leaderboard_front_and_counts(fake_run):
    run = fake_run(n=60)
    res = R.analyse_run("run1", results_dir=run.parent, top=5, plots=False)
    table = pd.read_parquet(run / "trials.parquet")
    assert res.counts["total"] == 60
    assert sum(res.counts[s] for s in R.STATUSES) == 60
    assert res.counts["rejected_budget"] == int((table["status"] == "rejected_budget").sum()) > 0
    # ranked: completed only, accuracy descending, ranks 1..K
    assert len(res.board) == 5 and res.board["rank"].tolist() == [1, 2, 3, 4, 5]
    assert set(res.board["status"]) == {"completed"}
    assert res.board["val_macro_accuracy"].is_monotonic_decreasing
    best_completed = table[table["status"] == "completed"]["val_macro_accuracy"].max()
    assert res.board["val_macro_accuracy"].iloc[0] == best_completed
    # the front: every completed trial off the front is dominated by one on it
    done = table[table["status"] == "completed"]
    front_ids = set(res.front["trial_id"])
    assert res.board["trial_id"].iloc[0] in front_ids  # the most accurate is never dominated
    for _, row in done[~done["trial_id"].isin(front_ids)].iterrows():
        dominated = (
            (res.front["val_macro_accuracy"] >= row["val_macro_accuracy"])
            & (res.front["macs"] <= row["macs"])
            & (res.front["param_bytes"] <= row["param_bytes"])
        )
        assert dominated.any(), row["trial_id"]
    assert res.distill == ["p_kd_weight", "p_temperature", "p_emb_weight", "p_emb_loss"]
    assert res.budget is not None and res.budget.max_macs == 30_000_000


def test_plots_are_written_as_png(fake_run, tmp_path):
    run = fake_run(n=40)
    res = R.analyse_run(run, plots_dir=tmp_path / "plots")
    assert set(res.plots) == {"accuracy_over_trials", "pareto_front", "budget_plane"}
    for path in res.plots.values():
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not [p for p in (tmp_path / "plots").iterdir() if p.name.startswith(".")]  # no temp files left


def test_best_trial_respects_budget_and_named_trial(fake_run):
    run = fake_run(n=50)
    table = R.load_trials(run)
    best = R.best_trial(table, budget=R.load_budget(run))
    assert best["trial_id"] == R.leaderboard(table)["trial_id"].iloc[0]
    # a tighter budget excludes the best one
    from asc_search.config import Budget

    tight = Budget(max_param_bytes=int(best["param_bytes"]) - 1, param_dtype="int8", max_macs=30_000_000)
    other = R.best_trial(table, budget=tight)
    assert other["param_bytes"] < best["param_bytes"]
    stopped = table[table["status"] == "early_stopped"]["trial_id"].iloc[0]
    assert R.best_trial(table, trial_id=stopped)["trial_id"] == stopped
    with pytest.raises(NotFoundError, match="no trial 'nope'"):
        R.best_trial(table, trial_id="nope")
    rejected = table[table["status"] == "rejected_budget"]["trial_id"].iloc[0]
    with pytest.raises(NotFoundError, match="rejected_budget"):
        R.best_trial(table, trial_id=rejected)


def test_cli_results_json(fake_run, capsys):
    run = fake_run(n=30)
    assert main(["results", "run1", "--results-dir", str(run.parent), "--top", "3", "--json", "--no-plots"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == "run1" and len(out["leaderboard"]) == 3
    assert out["leaderboard"][0]["rank"] == 1
    assert out["status_counts"]["total"] == 30
    assert all(isinstance(r["macs"], int) for r in out["pareto_front"])


def test_cli_results_tables(fake_run, capsys):
    run = fake_run(n=30)
    assert main(["results", str(run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "Leaderboard" in out and "Pareto front" in out and "kd_weight" in out


def test_missing_run_lists_existing(fake_run, capsys):
    run = fake_run(name="alpha", n=10)
    fake_run(name="beta", n=10)
    with pytest.raises(NotFoundError, match=r"no search run named 'gamma'.*alpha, beta"):
        R.resolve_run("gamma", results_dir=run.parent)
    assert main(["results", "gamma", "--results-dir", str(run.parent)]) == 2
    err = capsys.readouterr().err
    assert "asc-search results: error: no search run named 'gamma'" in err and "alpha, beta" in err
    assert "Traceback" not in err


def test_run_without_completed_trial(fake_run, capsys):
    run = fake_run(name="stopped", n=20, completed=False)
    assert main(["results", str(run)]) == 2
    err = capsys.readouterr().err
    assert "has no completed trial" in err and "early_stopped=" in err
    assert not (run / "plots").exists()


def test_broken_trials_table(tmp_path, capsys):
    run = tmp_path / "bad"
    run.mkdir()
    (run / "trials.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet table"):
        R.load_trials(run)
    pd.DataFrame({"trial_id": ["a"], "status": ["completed"]}).to_parquet(run / "trials.parquet")
    assert main(["results", str(run)]) == 2
    assert "lacks column(s) ['params'" in capsys.readouterr().err


@pytest.mark.slow
def test_real_run_and_live_table_from_the_study(tiny_search_run, tmp_path):
    import shutil

    res = R.analyse_run(tiny_search_run, plots_dir=tmp_path / "plots")
    table = pd.read_parquet(tiny_search_run / "trials.parquet")
    assert res.counts["total"] == len(table) and res.counts["rejected_budget"] > 0
    assert res.counts["completed"] + res.counts["early_stopped"] + res.counts["failed"] == 2
    assert "p_kd_weight" in res.distill and "config" not in res.params
    # while a search runs (or before it wrote trials.parquet) the table is rebuilt from study.db
    live = tmp_path / "live"
    shutil.copytree(tiny_search_run, live, ignore=shutil.ignore_patterns("ray"))
    (live / "trials.parquet").unlink()
    rebuilt = R.load_trials(live)
    assert rebuilt[["trial_id", "status"]].equals(R.load_trials(tiny_search_run)[["trial_id", "status"]])


def test_leaderboard_all_lists_stopped_trials_unranked(fake_run):
    run = fake_run(n=60)
    table = R.load_trials(run)
    board = R.leaderboard(table, top=3, include_stopped=True)
    n_stopped = int(table["status"].isin(["early_stopped", "failed"]).sum())
    assert board["rank"].tolist() == [1, 2, 3] + [0] * n_stopped
    assert set(board["status"].iloc[3:]) <= {"early_stopped", "failed"}
    assert "rejected_budget" not in set(board["status"])
    stopped = board[board["status"] == "early_stopped"]["val_macro_accuracy"]
    assert stopped.is_monotonic_decreasing
