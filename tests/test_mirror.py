"""The searcher's in-memory study and its SQLite copy (asc_search.search.mirror), and the bounded TPE
(asc_search.search.sampler): SQLite holds every decided trial exactly as the searcher decided it, a proposal costs one
transaction, and TPE's view of a long study stays bounded while it still finds the feasible region."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from test_searcher import TIGHT, _spec

from asc_search.search.sampler import BoundedTPESampler
from asc_search.search.searcher import BudgetedSearcher
from asc_search.search.space import parse_space
from asc_search.search.study import make_sampler

DONE = {"val_macro_accuracy": 0.5, "val_log_loss": 1.0, "epoch": 3, "epochs_planned": 3}


def _fields(t):
    return (t.number, t.state, t.values, t.params, t.distributions, t.user_attrs, t.system_attrs,
            t.intermediate_values, t.datetime_start, t.datetime_complete)


def test_sqlite_holds_every_decided_trial_as_the_searcher_decided_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    spec = _spec("tpe")
    spec = parse_space(TIGHT.replace("SAMPLER", "tpe").replace("OBJECTIVES", "[val_macro_accuracy]")
                       + "references:\n  - {name: small, student: {preset: dcase2024_baseline_quick, width: fit}}\n",
                       source="tight.yaml")
    optuna.create_study(study_name="m", storage=url).enqueue_trial(  # a reference arm, enqueued by the driver
        {}, user_attrs={"kind": "reference", "reference": "small"})
    s = BudgetedSearcher(spec, url, "m", n_classes=10, channel=None)
    configs = [s.suggest(f"r{i}") for i in range(4)]
    s.on_trial_result("r0", {"val_macro_accuracy": 0.4, "epoch": 1})
    s.on_trial_complete("r0", DONE)
    s.on_trial_complete("r1", {**DONE, "epoch": 1})  # stopped early: PRUNED
    memory = s.study.get_trials()
    disk = optuna.load_study(study_name="m", storage=url).get_trials()
    assert len(disk) == len(memory) > 4 and [_fields(t) for t in disk] == [_fields(t) for t in memory]
    states = {t.number: t.state for t in disk}
    assert states[configs[0]["trial_id"]] == TrialState.COMPLETE and states[configs[1]["trial_id"]] == TrialState.PRUNED
    assert states[configs[2]["trial_id"]] == TrialState.RUNNING  # handed to Tune: in SQLite before Tune hears of it
    assert disk[0].user_attrs["kind"] == "reference" and disk[0].state != TrialState.WAITING


def test_a_trial_another_process_added_to_the_sqlite_study_stops_the_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    s = BudgetedSearcher(_spec("random"), url, "x", n_classes=10, channel=None)
    s.suggest("a")
    n = len(s.study.get_trials(deepcopy=False))
    optuna.load_study(study_name="x", storage=url).ask()  # a second writer, which the run lock normally keeps out
    with pytest.raises(RuntimeError, match=f"trial {n} would not be trial {n} in .*another process added trials"):
        s.suggest("b")
    assert len(optuna.load_study(study_name="x", storage=url).trials) == n + 1  # nothing of ours half-written


def test_a_proposal_costs_one_transaction(tmp_path):
    s = BudgetedSearcher(_spec("random"), f"sqlite:///{tmp_path / 'study.db'}", "t", n_classes=10, channel=None)
    s.study  # noqa: B018 - opens (and creates) the study first
    commits = []
    sqlalchemy.event.listen(s.mirror._rdb.engine, "commit", lambda conn: commits.append(1))
    s.suggest("a")
    proposals = len(s.study.trials)
    assert proposals > 1 and len(commits) == proposals  # every rejected one and the accepted one: one commit each
    s.on_trial_complete("a", DONE)
    assert len(commits) == proposals + 1


def test_bounded_tpe_sees_at_most_the_best_and_the_recent(tmp_path):
    spec = _spec("tpe")
    s = BudgetedSearcher(spec, f"sqlite:///{tmp_path / 'study.db'}", "b", n_classes=10, channel=None)
    sampler = BoundedTPESampler(keep_best=25, keep_recent=20, seed=0, n_startup_trials=8, multivariate=True,
                                group=True, constant_liar=True)
    s.study.sampler = sampler
    seen = []
    real = sampler.bounded_trials

    def spy(study, trial):
        view = real(study, trial)
        seen.append((len(study.trials), view))
        return view

    sampler.bounded_trials = spy
    for i in range(30):
        s.suggest(f"r{i}")
        s.on_trial_complete(f"r{i}", {**DONE, "val_macro_accuracy": 0.3 + 0.01 * i})
    n, view = seen[-1]
    assert n > 60 and len(view) <= 25 + 20 + 1  # + the one RUNNING trial (constant liar)
    finished = [t for t in s.study.trials if t.state.is_finished()]
    best = sorted((t for t in finished if t.state == TrialState.COMPLETE and max(t.constraints.values()) <= 0),
                  key=lambda t: -t.value)[:25]
    assert {t.number for t in best} <= {t.number for t in view}  # TPE's good trials: exactly the study's best
    assert max(t.number for t in finished) in {t.number for t in view}  # and the most recent others
    # still learns where the budget is: far more feasible proposals late than random sampling draws
    late = [t for t in finished if t.number >= n // 2]
    assert sum(max(t.constraints.values()) <= 0 for t in late) / len(late) > 0.4


def test_bounded_tpe_is_optunas_tpe_on_a_small_study():
    spec = _spec("tpe")
    assert isinstance(make_sampler(spec), BoundedTPESampler)

    def draws(sampler):
        study = optuna.create_study(sampler=sampler)
        out = []
        for _ in range(15):
            trial = study.ask()
            out.append(trial.suggest_float("x", 0, 1))
            study.tell(trial, out[-1])
        return out

    kwargs = dict(seed=3, n_startup_trials=5, multivariate=True, group=True, constant_liar=True)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        assert draws(BoundedTPESampler(**kwargs)) == draws(optuna.samplers.TPESampler(**kwargs))
    with pytest.raises(ValueError, match="keep_best must be >= 25"):
        BoundedTPESampler(keep_best=10)


def _draws(sampler, n):
    """``n`` proposals of the driver benchmark's conditional space (4 parameter groups) told as the searcher tells them
    (constraints; a placeholder score when over budget), one trial kept RUNNING across each next ask (constant liar)."""
    from asc_search.bench.driver import SPACE
    from asc_search.bench.sampler_scaling import told_value

    spec = parse_space(SPACE, source="driver-bench.yaml")
    study = optuna.create_study(directions=spec.search.directions, sampler=sampler)
    pending, out = None, []
    for _ in range(n):
        trial = study.ask()
        value = told_value(spec, trial)
        out.append(dict(trial.params))
        if pending is not None:
            study.tell(*pending)
        pending = (trial, [value])
    return out


def test_bounded_tpe_draws_what_optunas_tpe_draws_on_a_conditional_space_with_constraints():
    """Below its bound the sampler is Optuna's TPE, draw for draw, with its once-per-proposal split and its converted
    parameters (4 parameter groups, infeasible trials, a RUNNING trial at every ask)."""
    import warnings

    kwargs = dict(seed=5, n_startup_trials=10, multivariate=True, group=True, constant_liar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ours = _draws(BoundedTPESampler(**kwargs), 60)
        assert ours == _draws(optuna.samplers.TPESampler(**kwargs), 60)
    assert len({tuple(sorted(p.items())) for p in ours}) == 60


def test_bounded_tpe_caches_change_no_draw_past_the_bound():
    """Past the bound (and past the size at which the converted parameters are dropped and made again), the caches
    draw exactly what Optuna's own split and conversion draw on the same bounded view."""
    import warnings

    class Uncached(BoundedTPESampler):
        _sample = optuna.samplers.TPESampler._sample
        _get_internal_repr = optuna.samplers.TPESampler._get_internal_repr

    kwargs = dict(keep_best=25, keep_recent=5, seed=2, n_startup_trials=10, multivariate=True, group=True,
                  constant_liar=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = BoundedTPESampler(**kwargs)
        ours = _draws(sampler, 230)
        assert ours == _draws(Uncached(**kwargs), 230)
    # every finished trial passed through the bounded view, so the converted rows were dropped at least once
    bound = 4 * (25 + 5) + 64
    assert sampler._n_finished > bound + 10 and max(len(rows) for rows in sampler._reprs.values()) <= bound
