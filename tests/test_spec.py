"""What a search file describes (asc_search.search.spec): define-by-run sampling honours conditions, proposals
round-trip, costing matches the complexity module, the spec survives pickling."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from asc_search.complexity import cost_student
from asc_search.errors import ConfigError
from asc_search.search.space import parse_space, with_num_samples
from asc_search.search.spec import Proposal

ROOT = Path(__file__).resolve().parents[1]
QUICK = (ROOT / "search_spaces" / "quick.yaml").read_text()


def _sample(spec, seed, n=30):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    out = []
    for i in range(n):
        trial = study.ask()
        out.append((trial, spec.sample(trial, trial_seed=i)))
        study.tell(trial, 0.0)
    return out


def test_define_by_run_conditions():
    spec = parse_space(QUICK, source="quick.yaml")
    seen_stages, seen_emb = set(), set()
    for trial, prop in _sample(spec, seed=1):
        n_stages = trial.params["n_stages"]
        seen_stages.add(n_stages)
        # one blocks_s<i> per existing stage, none beyond
        assert [k for k in trial.params if k.startswith("blocks_s")] == [f"blocks_s{i + 1}" for i in range(n_stages)]
        assert prop.student.n_blocks == tuple(trial.params[f"blocks_s{i + 1}"] for i in range(n_stages))
        # strides of blocks the proposal lacks are dropped
        assert set(prop.student.strides) <= set(prop.student.block_names)
        if trial.params["use_embedding"]:
            seen_emb.add(True)
            assert 0.1 <= prop.distill.emb_weight <= 3.0 and "emb_loss" in trial.params
            last = len(prop.student.block_names)
            want = {"last": f"b{last}", "penultimate": f"b{max(1, last - 1)}"}[trial.params["embed_block"]]
            assert prop.student.embed_block == want
        else:
            seen_emb.add(False)
            assert prop.distill.emb_weight == 0.0
            assert "emb_weight" not in trial.params and "emb_loss" not in trial.params
        assert prop.train.epochs == 10 and prop.train.warmup_epochs == 0.5 and prop.train.device == "cpu"
        assert prop.train.num_threads == 1
        assert 1e-3 <= prop.train.lr <= 1e-2 and prop.train.batch_size in (32, 64)
        assert prop.student.n_classes == 10
    assert seen_stages == {1, 2, 3} and seen_emb == {True, False}


def test_proposal_round_trip_and_seed():
    spec = parse_space(QUICK, source="quick.yaml")
    (_, prop), *_ = _sample(spec, seed=2, n=1)
    again = Proposal.from_dict(prop.to_dict())
    assert again.student == prop.student and again.distill == prop.distill and again.train == prop.train
    assert prop.train.seed == 0
    gpu = parse_space(QUICK.replace("gpus_per_trial: 0", "gpus_per_trial: 0.5"), source="g.yaml")
    (_, p2), *_ = _sample(gpu, seed=2, n=1)
    assert p2.train.device == "cuda"


def test_cost_matches_complexity_and_constraints():
    spec = parse_space(QUICK, source="quick.yaml")
    statuses = set()
    for _, prop in _sample(spec, seed=3, n=25):
        cost = spec.cost(prop.student)
        report = cost_student(prop.student, (1, 1, 40, 51), spec.budget)
        assert (cost.params, cost.param_bytes, cost.macs) == (
            report.complexity.params,
            report.complexity.param_bytes,
            report.complexity.macs,
        )
        assert cost.passed == report.passed
        assert cost.passed == all(v <= 0 for v in cost.constraints.values())
        assert cost.constraints["macs"] == pytest.approx(cost.macs / 2_000_000 - 1)
        statuses.add(cost.passed)
    assert statuses == {True, False}  # the quick space reaches over its budget


def test_a_proposal_must_fit_as_counted_and_as_deployed():
    """An int8 graph keeps its folded BatchNorm biases as int32: a student whose DCASE count fits the bytes but whose
    deployed graph does not is rejected, by the analytic counter, with the larger figure as its constraint."""
    from asc_search.complexity import student_cost_from_config

    spec = parse_space(QUICK, source="quick.yaml")
    (_, prop), *_ = [p for p in _sample(spec, seed=3, n=25) if spec.cost(p[1].student).passed]
    c = student_cost_from_config(prop.student, (1, 1, 40, 51))
    assert c.deployed_param_bytes > c.param_bytes  # int32 biases: 4 bytes per folded channel against 2 x 1 byte
    between = parse_space(QUICK.replace("max_param_bytes: 24000", f"max_param_bytes: {c.param_bytes}"), source="q.yaml")
    cost = between.cost(prop.student)
    assert (cost.param_bytes, cost.deployed_param_bytes) == (c.param_bytes, c.deployed_param_bytes)
    assert not cost.passed and cost.counter == "analytic"
    assert cost.constraints["param_bytes"] == pytest.approx(c.deployed_param_bytes / c.param_bytes - 1)
    fits = parse_space(QUICK.replace("max_param_bytes: 24000", f"max_param_bytes: {c.deployed_param_bytes}"),
                       source="q.yaml").cost(prop.student)
    assert fits.passed and fits.counter == "torchinfo" and fits.deployed_param_bytes == c.deployed_param_bytes


def test_score_precision_is_read_and_checked():
    assert parse_space(QUICK, source="q.yaml").search.score_precision == "float"
    deployed = parse_space(QUICK.replace("  max_failures: 1", "  max_failures: 1\n  score_precision: deployed"),
                           source="q.yaml")
    assert deployed.search.score_precision == "deployed"
    with pytest.raises(ConfigError, match=r"search.score_precision: must be one of 'float', 'deployed', got \"int8\""):
        parse_space(QUICK.replace("  max_failures: 1", "  max_failures: 1\n  score_precision: int8"), source="q.yaml")


def test_num_samples_override_is_recorded():
    spec = parse_space(QUICK, source="quick.yaml")
    more = with_num_samples(spec, 3)
    assert more.search.num_samples == 3 and "num_samples set to 3" in more.text
    assert more.sha256 != spec.sha256
    assert parse_space(more.text).search.num_samples == 3
    with pytest.raises(ConfigError, match="num_samples must be a positive integer"):
        with_num_samples(spec, 0)


def test_spec_survives_pickling():
    """Tune pickles the searcher (and its spec) into tuner.pkl; a restored spec must sample the same proposals."""
    import pickle

    spec = parse_space(QUICK, source="quick.yaml")
    again = pickle.loads(pickle.dumps(spec))
    a = [p.to_dict() for _, p in _sample(spec, seed=4, n=15)]
    b = [p.to_dict() for _, p in _sample(again, seed=4, n=15)]
    assert a == b
    assert any(p["distill"]["emb_weight"] == 0.0 for p in b)  # the conditional default, not a stray sentinel


def test_teacher_need_and_conditional_defaults():
    spec = parse_space(QUICK, source="quick.yaml")
    assert spec.needs_teacher  # kd_weight is searched
    assert spec.searched_defaults == {"emb_weight": 0.0}  # emb_loss and embed_block have no default:
    plain = parse_space(QUICK.replace("  kd_weight: {type: float, low: 0.0, high: 1.0}\n", "  kd_weight: 0.0\n")
                        .replace("choices: [true, false]}", "choices: [false]}"), source="p.yaml")
    assert plain.needs_teacher  # emb_weight is still searched (conditionally)
    none = parse_space("\n".join(line for line in QUICK.splitlines()
                                  if not line.startswith(("  kd_weight", "  emb_weight"))), source="n.yaml")
    assert not none.needs_teacher


def test_the_smallest_student_takes_every_low_end_and_nothing_in_the_space_is_cheaper():
    import optuna

    from asc_search.errors import BudgetError
    from asc_search.search.space import load_space

    spec = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "quick.yaml")
    small = spec.smallest_student(n_classes=10)
    lows = {p.name: p.low for p in spec.student if p.type in ("int", "float")}
    assert small.base_channels == lows["base_channels"] and small.n_blocks == (lows["blocks_per_stage"],) * lows["n_stages"]
    floor = spec.check_feasible(10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):  # no random proposal of the space costs less
        cost = spec.cost(spec.sample(study.ask(), n_classes=10).student)
        assert cost.params >= floor.params and cost.macs >= floor.macs
    tight = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, max_param_bytes=floor.param_bytes - 1))
    with pytest.raises(BudgetError, match="even the smallest student of this search space"):
        tight.check_feasible(10)
