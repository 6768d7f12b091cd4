"""BudgetedSearcher driven directly (no Tune): rejection before training, constraint feedback the samplers really
read, PRUNED/FAIL/COMPLETE mapping, the consecutive-rejection cap, and save/restore with re-issue of lost proposals."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from asc_search.search.channels import register_sink, unregister_sink
from asc_search.search.searcher import BudgetedSearcher
from asc_search.search.space import parse_space

# Only base_channels 8 (with one stage of one block) fits: most proposals are over budget.
TIGHT = """
profile: quick
budget: {max_param_bytes: 1500, param_dtype: int8, max_macs: 400000}
student:
  base_channels: {type: int, low: 8, high: 64, step: 8}
  channels_multiplier: {type: float, low: 1.2, high: 2.4}
  expansion_rate: 1.5
  n_stages: {type: int, low: 1, high: 3}
  blocks_per_stage: {type: int, low: 1, high: 2}
distill:
  kd_weight: {type: float, low: 0.0, high: 1.0}
train:
  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
  epochs: 3
search:
  sampler: SAMPLER
  seed: 0
  num_samples: 4
  n_startup_trials: 8
  max_consecutive_rejections: 400
  objectives: OBJECTIVES
"""


def _spec(sampler="tpe", objectives="[val_macro_accuracy]", **replace):
    text = TIGHT.replace("SAMPLER", sampler).replace("OBJECTIVES", objectives)
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_space(text, source="tight.yaml")


def _searcher(tmp_path, spec, name="s"):
    return BudgetedSearcher(spec, f"sqlite:///{tmp_path / 'study.db'}", name, n_classes=10, channel=name)


def test_suggest_returns_only_feasible_and_records_rejections(tmp_path):
    spec = _spec("random")
    s = _searcher(tmp_path, spec)
    events = []
    register_sink("s", lambda e, i: events.append((e, i)))
    try:
        configs = [s.suggest(f"r{i}") for i in range(3)]
    finally:
        unregister_sink("s")
    study = s.study
    trials = study.get_trials()
    rejected = [t for t in trials if t.user_attrs["status"] == "rejected_budget"]
    running = [t for t in trials if t.user_attrs["status"] == "running"]
    assert len(running) == 3 and len(rejected) > 0
    for cfg, t in zip(configs, running):
        assert cfg["trial_id"] == t.number
        assert t.state == TrialState.RUNNING
        assert t.user_attrs["param_bytes"] <= 1500 and t.user_attrs["macs"] <= 400_000
        assert all(v <= 0 for v in t.constraints.values())
        assert t.system_attrs["constraints"] == [t.constraints["param_bytes"], t.constraints["macs"]]
        assert cfg["cost"]["param_bytes"] == t.user_attrs["param_bytes"]
    for t in rejected:
        assert t.state == TrialState.COMPLETE  # NSGA-II reads COMPLETE only; the constraint marks it infeasible
        assert max(t.constraints.values()) > 0
        # optuna-dashboard reads one list under "constraints": the same values, in the Cost's order
        assert t.system_attrs["constraints"] == [t.constraints["param_bytes"], t.constraints["macs"]]
        assert t.user_attrs["param_bytes"] > 1500 or t.user_attrs["macs"] > 400_000
        assert {"params", "param_bytes", "macs"} <= set(t.user_attrs) and "asc_search:config" in t.system_attrs
    # the constrained study never calls a rejected proposal its best
    kinds = [e for e, _ in events]
    assert kinds.count("rejected") == len(rejected) and kinds.count("started") == 3
    # every event names its proposal by trial_id, the Optuna trial number
    assert sorted(i["trial_id"] for _, i in events) == sorted(t.number for t in rejected + running)


def test_tpe_learns_the_feasible_region_from_rejections(tmp_path):
    """The sampler really consumes the constraints: TPE proposes feasible points far more often than random."""

    def feasible_rate(sampler):
        s = _searcher(tmp_path / sampler, _spec(sampler))
        (tmp_path / sampler).mkdir(exist_ok=True)
        for i in range(6):
            s.suggest(f"r{i}")
            s.on_trial_complete(f"r{i}", {"val_macro_accuracy": 0.5, "val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3})
        proposals = [t for t in s.study.get_trials() if t.user_attrs.get("status") != "running"]
        tail = proposals[len(proposals) // 2 :]
        return sum(max(t.constraints.values()) <= 0 for t in tail) / len(tail), s

    tpe, s_tpe = feasible_rate("tpe")
    rnd, _ = feasible_rate("random")
    assert tpe > rnd + 0.2, (tpe, rnd)
    # TPE's split puts every told over-budget trial among the infeasible ones
    from optuna.samplers._tpe.sampler import _get_infeasible_trial_score

    rejected = [t for t in s_tpe.study.get_trials() if t.user_attrs["status"] == "rejected_budget"]
    assert rejected and all(_get_infeasible_trial_score(t) > 0 for t in rejected)


def test_nsga2_multi_objective_rejections_are_constrained_complete(tmp_path):
    spec = _spec("nsga2", "[val_macro_accuracy, macs, param_bytes]")
    s = _searcher(tmp_path, spec)
    cfg = s.suggest("a")
    s.on_trial_complete("a", {"val_macro_accuracy": 0.4, "val_log_loss": 1.2, "epoch": 3, "epochs_planned": 3})
    study = s.study
    done = study.trials[cfg["trial_id"]]
    assert done.state == TrialState.COMPLETE
    assert done.values == [0.4, float(done.user_attrs["macs"]), float(done.user_attrs["param_bytes"])]
    # the Pareto front only ever holds feasible trials
    assert [t.number for t in study.best_trials] == [done.number]


def test_completion_states(tmp_path):
    s = _searcher(tmp_path, _spec("random"))
    for rid in "abcde":
        s.suggest(rid)
    for epoch in (1, 2):
        s.on_trial_result("a", {"val_macro_accuracy": 0.3 * epoch, "epoch": epoch, "epochs_planned": 3})
    s.on_trial_complete("a", {"val_macro_accuracy": 0.6, "val_log_loss": 1.1, "epoch": 2, "epochs_planned": 3})
    s.on_trial_complete("b", {"val_macro_accuracy": 0.7, "val_log_loss": 0.9, "epoch": 3, "epochs_planned": 3, "time_total_s": 4.5})
    s.on_trial_complete("c", None, error=True)
    s.on_trial_complete("d", {"val_macro_accuracy": 0.0, "epoch": 1, "epochs_planned": 3, "diverged": True})
    s.on_trial_complete("e", {"val_macro_accuracy": float("nan"), "epoch": 3, "epochs_planned": 3})
    s.on_trial_complete("b", {"val_macro_accuracy": 0.1, "epoch": 3, "epochs_planned": 3})  # twice: ignored
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in s.study.get_trials() if "ray_trial_id" in t.user_attrs}
    assert by_ray["a"].state == TrialState.PRUNED and by_ray["a"].user_attrs["status"] == "early_stopped"
    assert by_ray["a"].intermediate_values == {1: 0.3, 2: 0.6}
    assert by_ray["a"].user_attrs["epochs"] == 2
    assert by_ray["b"].state == TrialState.COMPLETE and by_ray["b"].value == 0.7
    assert by_ray["b"].user_attrs["duration_s"] == 4.5 and by_ray["b"].user_attrs["status"] == "completed"
    for rid in "cde":
        assert by_ray[rid].state == TrialState.FAIL and by_ray[rid].user_attrs["status"] == "failed"
    assert "diverged" in by_ray["d"].user_attrs["error"]
    assert s.study.best_trial.number == by_ray["b"].number


def test_a_retried_trial_counts_the_training_time_of_every_attempt(tmp_path):
    s = _searcher(tmp_path, _spec("random"))
    s.suggest("a")
    # Tune's time_total_s restarts with the retried attempt; train_time_s sums the epochs of all attempts
    s.on_trial_complete("a", {"val_macro_accuracy": 0.5, "val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3,
                              "time_total_s": 1.07, "train_time_s": 18.5})
    assert s.study.get_trials()[-1].user_attrs["duration_s"] == 18.5


def test_score_precision_deployed_tells_the_sampler_the_deployed_score(tmp_path):
    s = _searcher(tmp_path, _spec("random", **{"  objectives:": "  score_precision: deployed\n  objectives:"}))
    configs = {rid: s.suggest(rid) for rid in "abcd"}
    assert all(c["deploy"] == {"precision": "int8"} for c in configs.values())
    assert all(c["cost"]["deployed_param_bytes"] <= 1500 for c in configs.values())  # both byte figures fit
    done = {"val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3}
    s.on_trial_complete("a", {**done, "val_macro_accuracy": 0.6, "val_macro_accuracy_deployed": 0.55, "deploy_s": 1.5})
    s.on_trial_complete("b", {**done, "val_macro_accuracy": 0.7, "val_macro_accuracy_deployed": float("nan"),
                              "deploy_error": "int8 graph: onnxruntime could not quantise ..."})
    s.on_trial_complete("c", {"val_macro_accuracy": 0.4, "epoch": 1, "epochs_planned": 3})  # stopped by ASHA
    by_ray = {t.user_attrs["ray_trial_id"]: t for t in s.study.get_trials() if "ray_trial_id" in t.user_attrs}
    a, b, c = by_ray["a"], by_ray["b"], by_ray["c"]
    assert a.state == TrialState.COMPLETE and a.value == 0.55  # the deployed score, not the float one
    assert a.user_attrs["val_macro_accuracy"] == 0.6 and a.user_attrs["deploy_s"] == 1.5
    assert b.state == TrialState.FAIL and b.user_attrs["status"] == "failed"
    assert b.user_attrs["error"].startswith("int8 graph: onnxruntime could not quantise")
    assert c.state == TrialState.PRUNED and "val_macro_accuracy_deployed" not in c.user_attrs  # never scored
    assert a.user_attrs["deployed_param_bytes"] == configs["a"]["cost"]["deployed_param_bytes"]
    float_run = _searcher(tmp_path, _spec("random"), name="f")
    assert float_run.suggest("x")["deploy"] is None


def test_consecutive_rejection_cap_finishes_with_reason(tmp_path):
    # nothing fits 100 bytes
    spec = _spec(**{"max_param_bytes: 1500": "max_param_bytes: 100", "max_consecutive_rejections: 400": "max_consecutive_rejections: 5"})
    s = _searcher(tmp_path, spec)
    assert s.suggest("a") == Searcher.FINISHED
    assert s.suggest("b") == Searcher.FINISHED
    trials = s.study.get_trials()
    assert len(trials) == 5 and all(t.user_attrs["status"] == "rejected_budget" for t in trials)
    reason = s.study.user_attrs["stop_reason"]
    assert "5 proposals in a row were over the budget" in reason and "tight.yaml" in reason


def test_save_restore_reissues_proposals_tune_never_saw(tmp_path):
    spec = _spec()
    s = _searcher(tmp_path, spec)
    first = s.suggest("a")
    s.suggest("b")
    s.on_trial_complete("a", {"val_macro_accuracy": 0.5, "val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3})
    s.save(str(tmp_path / "state.pkl"))  # Tune's experiment checkpoint
    lost = s.suggest("c")  # asked after the checkpoint, then the driver dies
    # asked, never costed (a driver of an older version killed between ask and tell; today's asks stay in memory
    # until the proposal is decided)
    half = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}").ask()
    assert pickle.loads(pickle.dumps(s)).study_name == "s"  # picklable (Tune keeps it in tuner.pkl)

    fresh = _searcher(tmp_path, spec)
    fresh.restore(str(tmp_path / "state.pkl"))
    again = fresh.suggest("z")
    assert again["trial_id"] == lost["trial_id"] and again["proposal"] == lost["proposal"]
    assert fresh.study.trials[half.number].state == TrialState.FAIL
    assert fresh.study.trials[half.number].user_attrs["status"] == "discarded"
    fresh.on_trial_complete("b", {"val_macro_accuracy": 0.6, "val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3})
    fresh.on_trial_complete("z", {"val_macro_accuracy": 0.7, "val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3})
    fresh.on_trial_complete("a", {"val_macro_accuracy": 0.1, "epoch": 3, "epochs_planned": 3})  # already told: ignored
    study = fresh.study
    assert study.trials[first["trial_id"]].value == 0.5
    assert study.trials[lost["trial_id"]].user_attrs["ray_trial_id"] == "z"
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    # the next proposal is a new one
    assert fresh.suggest("y")["trial_id"] > lost["trial_id"]


def test_restore_refuses_another_search_file(tmp_path):
    s = _searcher(tmp_path, _spec())
    s.suggest("a")
    s.save(str(tmp_path / "state.pkl"))
    other = _searcher(tmp_path, _spec(**{"epochs: 3": "epochs: 4"}))
    with pytest.raises(Exception, match="another search file"):
        other.restore(str(tmp_path / "state.pkl"))


def test_a_retried_trial_is_reported(tmp_path):
    from types import SimpleNamespace

    from asc_search.search.channels import RetryReporter, register_sink, unregister_sink

    error = tmp_path / "error.txt"
    error.write_text("Traceback (most recent call last):\n  ...\nray.exceptions.NodeDiedError: node 1a2b died\n\n")
    events = []
    register_sink("chan", lambda e, i: events.append((e, i)))
    try:
        trial = SimpleNamespace(config={"trial_id": 7}, num_failures=1, last_result={"epoch": 3},
                                error_file=str(error))
        RetryReporter("chan", max_failures=2).on_trial_recover(0, [trial], trial)
    finally:
        unregister_sink("chan")
    assert events == [("retried", {"trial_id": 7, "attempt": 1, "max_failures": 2, "epoch": 3,
                                   "error": "ray.exceptions.NodeDiedError: node 1a2b died"})]
