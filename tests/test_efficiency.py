"""The search-efficiency bench's bookkeeping (asc_search.bench.efficiency): when a method first reaches random
search's final best, the summary over seeds, and the define-by-run space Ray's OptunaSearch is given (Tune
checkpoints that searcher by pickling it)."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from asc_search.bench.efficiency import _DefineByRun, reach, summarise_traces

ROOT = Path(__file__).resolve().parents[1]


def _trace(vals, wall=1.0):
    return [{"trial_epochs": i + 1, "wall_s": wall * (i + 1), "val": v} for i, v in enumerate(vals)]


def test_reach_is_the_first_point_at_the_target():
    trace = _trace([0.2, 0.5, 0.4, 0.6])
    assert reach(trace, 0.5) == {"trial_epochs": 2, "wall_s": 2.0}
    assert reach(trace, 0.61) is None and reach(trace, None) is None


def test_summary_counts_trial_epochs_to_random_searchs_best_per_seed():
    def run(vals, wall=1.0):
        t = _trace(vals, wall)
        return {"final_best": max(vals), "trial_epochs": len(vals), "wall_s": wall * len(vals), "trials": 2, "trace": t}

    traces = {"random_no_asha": {0: run([0.1, 0.3, 0.5]), 1: run([0.2, 0.4])},
              "default": {0: run([0.5, 0.6, 0.6], wall=2.0), 1: run([0.1, 0.3])}}
    out = summarise_traces(traces)
    d = out["default"]
    assert d["per_seed"][0]["reached"] == {"trial_epochs": 1, "wall_s": 2.0} and d["per_seed"][1]["reached"] is None
    assert d["reached"] == "1/2" and d["trial_epochs_to_target"]["mean"] == 1
    assert d["final_best"]["mean"] == pytest.approx(0.45)
    assert out["random_no_asha"]["reached"] == "2/2"  # random reaches its own best, at its last improvement
    assert out["random_no_asha"]["per_seed"][0]["reached"]["trial_epochs"] == 3


def test_the_optuna_search_space_survives_pickling_and_draws_the_same_proposals():
    space = _DefineByRun((ROOT / "search_spaces" / "quick.yaml").read_text(), n_classes=10, seed=3)
    again = pickle.loads(pickle.dumps(space))
    sampler = optuna.samplers.RandomSampler

    def draw(fn):
        study = optuna.create_study(sampler=sampler(seed=0))
        return [fn(study.ask())["proposal"] for _ in range(3)]

    first = draw(space)
    assert first == draw(again)  # same seed, same proposals, also after a round trip through pickle
    assert all(p["student"]["n_classes"] == 10 for p in first) and first[0]["train"]["seed"] == 3
