"""Reference arms (asc_search.search.references) and steps-based sizing, without Ray: the search file's schema and
defaults, the proposal a reference becomes (width fitted to the budget, the training-settings rule), the values
Optuna records for it, the searcher handing it out before any sampled proposal, ASHA never stopping it, and
train.min_steps / search.asha.unit."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from asc_search.complexity import cost_student
from asc_search.errors import ConfigError
from asc_search.search.references import (
    DEFAULT_REFERENCES,
    REFERENCE,
    enqueue_references,
    fit_width,
    plan_references,
    reference_proposal,
)
from asc_search.search.scheduler import ReferenceAwareASHA, make_scheduler, time_horizon
from asc_search.search.searcher import BudgetedSearcher
from asc_search.search.space import load_space, parse_space

ROOT = Path(__file__).resolve().parents[1]
QUICK = (ROOT / "search_spaces" / "quick.yaml").read_text()


def _quick(extra: str = "", **replace: str):
    text = QUICK
    for old, new in replace.items():
        text = text.replace(old, new)
    return parse_space(text + extra, source="q.yaml")


def test_defaults_when_absent_none_when_empty_and_custom_lists():
    assert _quick().references == DEFAULT_REFERENCES
    assert [r.name for r in DEFAULT_REFERENCES] == ["baseline_ce", "baseline_kd", "baseline_kd_emb"]
    assert _quick("references: []\n").references == ()
    spec = _quick("references:\n  - {name: mine, student: {base_channels: 8, n_blocks: [1, 1]}, "
                  "distill: {kd_weight: 0.5}, train: {lr: 0.004}}\n")
    (ref,) = spec.references
    assert ref.name == "mine" and ref.needs_teacher
    p = reference_proposal(spec, ref, n_classes=7)
    assert p.student.base_channels == 8 and p.student.n_blocks == (1, 1) and p.student.n_classes == 7
    assert p.distill.kd_weight == 0.5 and p.train.lr == 0.004


@pytest.mark.parametrize("entry, where, problem", [
    ("- {name: a, student: {preset: resnet}}", "references[0].student.preset", "must be one of dcase2024_baseline"),
    ("- {name: a}\n  - {name: a}", "references[1].name", "must be unique"),
    ("- {name: 'a b'}", "references[0].name", "letters, digits"),
    ("- {name: a, student: {width: -8}}", "references[0].student.width", "fit or a positive integer"),
    ("- {name: a, student: {width: fit, base_channels: 8}}", "references[0].student.width", "not both"),
    ("- {name: a, distill: {kd_weight: 1.5}}", "references[0].distill", "kd_weight must lie in [0, 1]"),
    ("- {name: a, train: {seed: 3}}", "references[0].train.seed", "set by the search itself"),
    ("- {name: a, train: {epocs: 3}}", "references[0].train", "epocs"),
    ("- {name: a, colour: red}", "references[0].colour", "unknown key"),
])
def test_bad_references_name_the_key(entry, where, problem):
    with pytest.raises(ConfigError) as exc:
        _quick(f"references:\n  {entry}\n")
    assert str(exc.value).startswith(f"q.yaml: {where}") and problem in str(exc.value), str(exc.value)


def test_width_fit_is_the_widest_baseline_within_the_budget():
    quick, dcase = load_space("quick"), load_space("dcase")
    # on the DCASE budget the fitted width is the baseline's own: 61,148 parameters (the organisers' figure)
    p = reference_proposal(dcase, DEFAULT_REFERENCES[0], n_classes=10)
    assert p.student.base_channels == 32 and dcase.cost(p.student).params == 61_148
    # on quick's budget: the widest multiple of 8 that fits, one step wider does not (baseline shape kept)
    p = reference_proposal(quick, DEFAULT_REFERENCES[0], n_classes=10)
    w = p.student.base_channels
    assert w == fit_width(quick, {}, 10) and w % 8 == 0
    assert (p.student.channels_multiplier, p.student.expansion_rate, p.student.n_blocks) == (1.8, 2.1, (3, 2, 1))
    assert cost_student(p.student, quick.input_shape, quick.budget).passed
    wider = p.student.__class__.from_dict({**p.student.to_dict(), "base_channels": w + 8})
    assert not cost_student(wider, quick.input_shape, quick.budget).passed


def test_training_settings_follow_the_rule():
    spec = load_space("quick")
    ce, kd, emb = (reference_proposal(spec, r, 10, trial_seed=5) for r in DEFAULT_REFERENCES)
    t = ce.train
    assert t.lr == pytest.approx(math.sqrt(1e-3 * 1e-2)) and t.weight_decay == pytest.approx(math.sqrt(1e-5 * 1e-2))
    assert t.batch_size == 32 and t.epochs == spec.max_epochs and t.seed == 5  # middle choice, max epochs
    assert t.min_steps == 250 and t.warmup_epochs == 0.5  # fixed values of the file
    assert (ce.distill.kd_weight, ce.distill.emb_weight) == (0.0, 0.0)
    assert (kd.distill.kd_weight, kd.distill.temperature, kd.distill.emb_weight) == (0.98, 2.0, 0.0)
    assert emb.distill.emb_weight == 1.0 and emb.student.embed_block == "b6"  # the last of 3 + 2 + 1 blocks
    # the values Optuna records: only those inside the space's distributions
    assert ce.params["base_channels"] == ce.student.base_channels and "blocks_s1" not in ce.params  # 3 > high 2
    assert ce.params["blocks_s2"] == 2 and ce.params["use_embedding"] is False and "emb_weight" not in ce.params
    assert emb.params["emb_weight"] == 1.0 and emb.params["embed_block"] == "last"
    assert "epochs" not in ce.params  # fixed in quick.yaml: not a searched parameter


def test_plan_reports_over_budget_and_teacherless_references():
    spec = _quick(**{"max_param_bytes: 24000": "max_param_bytes: 300"})
    plans = plan_references(spec, 10, has_teacher=False)
    assert [p.status for p in plans] == ["over_budget", "needs_teacher", "needs_teacher"]
    assert "does not fit the budget" in plans[0].message and "no teacher cache" in plans[1].message
    assert [p.status for p in plan_references(load_space("quick"), 10, has_teacher=True)] == ["planned"] * 3


def test_searcher_hands_out_enqueued_references_first(tmp_path):
    spec = _quick(**{"max_param_bytes: 24000": "max_param_bytes: 18000"})  # the fitted baseline: width 8
    plans = plan_references(spec, 10, has_teacher=True)
    s = BudgetedSearcher(spec, f"sqlite:///{tmp_path / 'study.db'}", "s", n_classes=10)
    assert enqueue_references(s.study, plans) == 3 and enqueue_references(s.study, plans) == 0  # idempotent
    configs = [s.suggest(f"r{i}") for i in range(5)]
    assert [c["kind"] for c in configs] == ["reference"] * 3 + ["search"] * 2
    trials = s.study.get_trials()
    for cfg, plan in zip(configs, plans):
        t = trials[cfg["trial_id"]]
        assert t.user_attrs["kind"] == REFERENCE and t.user_attrs["reference"] == plan.name
        assert t.params == plan.proposal.params  # recorded with their distributions: the sampler learns from them
        assert cfg["proposal"]["student"] == plan.proposal.student.to_dict()
        assert cfg["proposal"]["train"]["seed"] == spec.search.seed + t.number
    assert all(t.user_attrs["kind"] == "search" for t in trials[3:])


def test_an_over_budget_reference_is_rejected_and_not_counted(tmp_path):
    spec = _quick(**{"max_param_bytes: 24000": "max_param_bytes: 3000",
                     "max_consecutive_rejections: 300": "max_consecutive_rejections: 1000"})
    plans = plan_references(spec, 10, has_teacher=True)
    assert {p.status for p in plans} == {"over_budget"}
    s = BudgetedSearcher(spec, f"sqlite:///{tmp_path / 'study.db'}", "s", n_classes=10)
    enqueue_references(s.study, plans)
    cfg = s.suggest("a")
    assert cfg["kind"] == "search"
    refs = [t for t in s.study.get_trials() if t.user_attrs.get("kind") == REFERENCE]
    assert len(refs) == 3 and all(t.user_attrs["status"] == "rejected_budget" for t in refs)
    assert all(t.state == TrialState.COMPLETE and max(t.constraints.values()) > 0 for t in refs)
    sampled_rejections = sum(t.user_attrs["status"] == "rejected_budget" for t in s.study.get_trials()) - 3
    assert s.get_state()["consecutive_rejections"] == 0 and sampled_rejections >= 0


class _Trial:
    def __init__(self, trial_id, kind):
        self.trial_id, self.config = trial_id, {"kind": kind}


def test_asha_never_stops_a_reference():
    sched = ReferenceAwareASHA(time_attr="epoch", metric="val_macro_accuracy", mode="max", max_t=8, grace_period=1,
                               reduction_factor=2, stop_last_trials=False)
    trials = [_Trial(f"s{i}", "search") for i in range(3)] + [_Trial("ref", "reference"), _Trial("low", "search")]
    for t in trials:
        sched.on_trial_add(None, t)
    for t, acc in zip(trials[:3], (0.7, 0.8, 0.9)):
        assert sched.on_trial_result(None, t, {"epoch": 1, "val_macro_accuracy": acc}) == "CONTINUE"
    # the same low score stops a sampled trial, never a reference (whose score still enters the rung)
    assert sched.on_trial_result(None, trials[3], {"epoch": 1, "val_macro_accuracy": 0.1}) == "CONTINUE"
    assert sched.on_trial_result(None, trials[4], {"epoch": 1, "val_macro_accuracy": 0.1}) == "STOP"
    assert "ref" in sched._brackets[0]._rungs[-1][1]


def test_min_steps_raises_epochs_and_asha_can_count_steps():
    from asc_search.training import TensorData, fit
    from asc_search.training.config import TrainConfig, steps_per_epoch

    cfg = TrainConfig(epochs=2, batch_size=16, min_steps=20, seed=0, device="cpu", num_threads=1)
    assert steps_per_epoch(50, 16) == 3 and cfg.planned_epochs(50) == 7 and cfg.planned_epochs(1000) == 2
    x, y = torch.randn(50, 1, 8, 8), torch.randint(0, 3, (50,))
    seen = []
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    result = fit(net, TensorData(x, y), TensorData(x[:10], y[:10]), cfg, on_epoch=lambda e, m, s: seen.append(m))
    assert result.epochs_run == 7 and [m["steps"] for m in seen] == [3 * e for e in range(1, 8)]
    assert {m["epochs_planned"] for m in seen} == {7}
    spec = load_space("quick")  # unit: steps, grace 80, min_steps 250, batch 32 or 64, 10 epochs
    assert time_horizon(spec, 1767) == 10 * steps_per_epoch(1767, 32)
    assert time_horizon(spec, 200) == 84 * steps_per_epoch(200, 64)  # 250 steps at 3 a epoch
    sched = make_scheduler(spec, 200)
    assert sched._time_attr == "steps" and sched._brackets[0]._rungs[-1][0] == 80
    epochs = _quick(**{"unit: steps, grace_period: 80": "grace_period: 2"})
    assert make_scheduler(epochs, 200)._time_attr == "epoch"


class _Controller:
    """What a scheduler reads of a Tune run: every trial in Tune's order, and the live (not TERMINATED) ones."""

    def __init__(self) -> None:
        self.trials: list = []

    def get_trials(self) -> list:
        return self.trials

    def get_live_trials(self) -> set:
        return {t for t in self.trials if t.status != "TERMINATED"}


def test_schedulers_choose_from_live_trials_what_rays_fifo_scan_chooses():
    """LiveTrialsFIFO (and ASHA built on it) picks the trial Ray's FIFOScheduler picks (first PENDING in Tune's
    order, else first PAUSED, else none) through a run's changes of state, with a trial re-queued at the end (as
    Tune does after an error), while only looking at the live trials."""
    import random

    from ray.tune.schedulers import FIFOScheduler

    from asc_search.search.scheduler import LiveTrialsFIFO

    rng = random.Random(0)
    ray_fifo = FIFOScheduler()
    for sched in (LiveTrialsFIFO(), make_scheduler(load_space("quick"), 200)):
        assert isinstance(sched, LiveTrialsFIFO)
        run = _Controller()
        for step in range(300):
            if rng.random() < 0.3 or not run.trials:  # Tune adds a trial at the end of its list
                t = _Trial(f"t{step}", "search")
                t.status = "PENDING"
                run.trials.append(t)
                sched.on_trial_add(run, t)
            elif rng.random() < 0.1:  # Tune re-queues a trial after an error: to the end, added again
                t = rng.choice(run.trials)
                t.status = "PENDING"
                run.trials.remove(t)
                run.trials.append(t)
                sched.on_trial_add(run, t)
            else:
                rng.choice(run.trials).status = rng.choice(["RUNNING", "PAUSED", "TERMINATED", "PENDING"])
            assert sched.choose_trial_to_run(run) is ray_fifo.choose_trial_to_run(run)
        assert {t.status for t in run.trials} >= {"PENDING", "PAUSED", "TERMINATED"}
    # a waiting trial the scheduler never saw added: Ray's scan decides
    run = _Controller()
    a, b = _Trial("a", "search"), _Trial("b", "search")
    a.status, b.status = "PAUSED", "PENDING"
    run.trials = [a, b]
    sched = LiveTrialsFIFO()
    sched.on_trial_add(run, a)
    assert sched.choose_trial_to_run(run) is b
