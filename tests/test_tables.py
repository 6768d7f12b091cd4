"""asc_search.results.tables and `asc-search results`: leaderboard, Pareto front, the run's summary, bad runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from asc_search.cli import main
from asc_search.errors import DataError, NotFoundError
from asc_search.results.analysis import analyse_run
from asc_search.results.tables import leaderboard, pareto_mask
from asc_search.search.runfolder import STATUSES, load_trials, resolve_run


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
    mask = pareto_mask(pts, (True, False, False))
    assert mask.tolist() == [True, True, True, False, True, True, False]


def test_leaderboard_front_and_counts(fake_run):
    run = fake_run(n=60)
    res = analyse_run("run1", results_dir=run.parent, top=5, plots=False)
    table = pd.read_parquet(run / "trials.parquet")
    assert res.counts["total"] == 60
    assert sum(res.counts[s] for s in STATUSES) == 60
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
    # the parameter columns are exactly the p_<name> columns; the distillation ones are the distill section's
    assert res.params == ["p_base_channels", "p_kd_weight", "p_temperature", "p_emb_weight", "p_emb_loss"]
    assert res.distill == ["p_kd_weight", "p_temperature", "p_emb_weight", "p_emb_loss"]
    assert res.budget is not None and res.budget.max_macs == 30_000_000


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
    assert "rejected_budget=" in out and "running=" not in out  # no trial runs: not listed


def test_missing_run_lists_existing(fake_run, capsys):
    run = fake_run(name="alpha", n=10)
    fake_run(name="beta", n=10)
    with pytest.raises(NotFoundError, match=r"no search run named 'gamma'.*alpha, beta"):
        resolve_run("gamma", results_dir=run.parent)
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
        load_trials(run)
    pd.DataFrame({"trial_id": ["a"], "status": ["completed"]}).to_parquet(run / "trials.parquet")
    assert main(["results", str(run)]) == 2
    assert "lacks column(s) ['params'" in capsys.readouterr().err


def test_leaderboard_all_lists_stopped_trials_unranked(fake_run):
    run = fake_run(n=60)
    table = load_trials(run)
    board = leaderboard(table, top=3, include_stopped=True)
    n_stopped = int(table["status"].isin(["early_stopped", "failed"]).sum())
    assert board["rank"].tolist() == [1, 2, 3] + [0] * n_stopped
    assert set(board["status"].iloc[3:]) <= {"early_stopped", "failed"}
    assert "rejected_budget" not in set(board["status"])
    stopped = board[board["status"] == "early_stopped"]["val_macro_accuracy"]
    assert stopped.is_monotonic_decreasing


def test_results_never_import_the_search_driver_or_ray():
    import subprocess
    import sys

    code = ("import sys, asc_search.results, asc_search.results.tables, asc_search.search.runfolder; "
            "bad = [m for m in ('asc_search.search.driver', 'asc_search.search.searcher', 'ray') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
