"""asc_search.results.views and .importance: the run's own views written into its Optuna study (the note, the plot
artefacts) and parameter importance over trained trials only; the dashboard's importance route answered with it."""

from __future__ import annotations

import io
import json
import sys

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from asc_search.results.dashboard import dashboard_app
from asc_search.results.importance import feasible_complete_trials, trained_importances
from asc_search.results.plots import PLOT_FILES
from asc_search.results.tables import leaderboard
from asc_search.results.views import ViewsPublisher, artifact_id, artifact_store, publish_views
from asc_search.search.runfolder import load_trials
from asc_search.search.study import make_storage


def _note(run, name):
    from optuna_dashboard import get_note

    return get_note(optuna.load_study(study_name=name, storage=f"sqlite:///{run / 'study.db'}"))


def _artifacts(run, name):
    storage = optuna.storages.RDBStorage(f"sqlite:///{run / 'study.db'}")
    attrs = storage.get_study_system_attrs(storage.get_study_id_from_name(name))
    return [json.loads(v) for k, v in attrs.items() if k.startswith("artifacts:") and v != "null"]


def test_publish_writes_the_leaderboard_note_and_replaces_its_plot_artefacts(fake_run):
    run = fake_run(name="views", n=40, study=True)
    table = load_trials(run)
    first = publish_views(run)
    note = _note(run, "views")
    top = leaderboard(table, top=10)
    assert "### Leaderboard: top 10 of" in note and "kd_weight" in note and "emb_loss" in note
    for _, row in top.iterrows():  # every ranked row, in rank order, with its accuracy
        assert f"| {row['rank']} | {row['trial_id']} |" in note and f"{row['val_macro_accuracy']:.4f}" in note
    assert note.index(f"| 1 | {top['trial_id'][0]} |") < note.index(f"| 2 | {top['trial_id'][1]} |")
    assert f"rejected_budget {int((table['status'] == 'rejected_budget').sum())}" in note
    assert "Budget: 128,000 bytes of parameters at int8, 30,000,000 MACs" in note
    # the three plots: listed in the study (as optuna.artifacts lists them), stored, linked from the note
    metas = _artifacts(run, "views")
    assert sorted(m["filename"] for m in metas) == sorted(PLOT_FILES.values())
    store = artifact_store(run)
    for name, aid in first.artifacts.items():
        assert aid == artifact_id("views", name)
        assert store.open_reader(aid).read() == (run / "plots" / PLOT_FILES[name]).read_bytes()
        assert f"](/artifacts/{first.study_id}/{aid})" in note
    listed = optuna.artifacts.get_all_artifact_meta(
        optuna.load_study(study_name="views", storage=f"sqlite:///{run / 'study.db'}"))
    assert sorted(m.artifact_id for m in listed) == sorted(first.artifacts.values())
    # publishing again replaces the plots under the same ids: nothing piles up, nothing half-written is left
    (run / "plots" / PLOT_FILES["budget_plane"]).unlink()
    again = publish_views(run)
    assert again.artifacts == first.artifacts and len(_artifacts(run, "views")) == 3
    assert sorted(p.name for p in (run / "artifacts").iterdir()) == sorted(first.artifacts.values())


def test_the_note_names_the_margin_over_the_best_reference(fake_run):
    run = fake_run(name="refs", n=40, study=True)
    table = pd.read_parquet(run / "trials.parquet")
    ranked = table[table["status"] == "completed"].sort_values("val_macro_accuracy", ascending=False)
    ref_id = int(ranked["trial_id"].iloc[2])
    table["kind"] = "search"
    table.loc[table["trial_id"] == ref_id, ["kind", "reference"]] = ["reference", "baseline_ce"]
    table.to_parquet(run / "trials.parquet")
    publish_views(run, plots=False)
    margin = 100 * (ranked["val_macro_accuracy"].iloc[0] - ranked["val_macro_accuracy"].iloc[2])
    note = _note(run, "refs")
    assert f"**{margin:+.1f} points** validation macro accuracy over reference `baseline_ce`" in note
    assert f"| 3 | {ref_id} | baseline_ce |" in note


def _note_version(run, name):
    storage = optuna.storages.RDBStorage(f"sqlite:///{run / 'study.db'}")
    return storage.get_study_system_attrs(storage.get_study_id_from_name(name)).get("dashboard:note_ver", 0)


def test_publisher_passes_events_on_and_publishes_as_trials_end(fake_run):
    run = fake_run(name="pub", n=30, study=True)
    seen = []
    pub = ViewsPublisher(run, on_event=lambda e, i: seen.append(e), note_every_s=3600, plots_every_s=3600)
    pub("started", {"trial_id": 1})
    assert _note_version(run, "pub") == 0  # nothing ended yet
    pub("completed", {"trial_id": 1})  # the first trial to end: the note at once, the plots not yet
    assert _note_version(run, "pub") == 1 and "### Leaderboard" in _note(run, "pub")
    assert _artifacts(run, "pub") == [] and "/artifacts/" not in _note(run, "pub")
    pub("rejected", {"trial_id": 2})
    pub("early_stopped", {"trial_id": 3})  # within note_every_s: not again
    assert _note_version(run, "pub") == 1
    pub.publish()  # the end: note and plots
    assert _note_version(run, "pub") == 2 and len(_artifacts(run, "pub")) == 3
    pub.note_every_s = 0
    pub("failed", {"trial_id": 4})  # the note again, linking the plots already published
    assert _note_version(run, "pub") == 3 and _note(run, "pub").count("](/artifacts/") == 3
    assert seen == ["started", "completed", "rejected", "early_stopped", "failed"]
    (run / "study.db").unlink()  # a publish that fails is a warning, never an error
    warnings = []
    assert ViewsPublisher(run, on_event=lambda e, i: warnings.append((e, i))).publish() is None
    assert warnings and warnings[0][0] == "warning" and "could not update" in warnings[0][1]["message"]


def _study_with_rejections(path, name="imp", n=200):
    """`size` decides only whether a proposal is over budget (most are; placeholder score 0), `lr` the accuracy of
    the trained ones; `noise` nothing. Constraints stored as the searcher stores them."""
    import numpy as np
    from optuna.distributions import FloatDistribution

    rng = np.random.default_rng(3)
    study = optuna.create_study(study_name=name, storage=make_storage(f"sqlite:///{path}"), direction="maximize")
    dists = {k: FloatDistribution(0, 1) for k in ("size", "lr", "noise")}
    trials = []
    for size, lr, noise in rng.uniform(0, 1, (n, 3)):
        over = float(size - 0.25)
        trials.append(optuna.trial.create_trial(
            params={"size": size, "lr": lr, "noise": noise}, distributions=dists,
            value=0.0 if over > 0 else 0.4 + 0.5 * (1 - abs(lr - 0.3)), system_attrs={"constraints": [over]}))
    study.add_trials(trials)
    return study


def _get(app, path):
    from wsgiref.util import setup_testing_defaults

    environ = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.errors": sys.stderr, "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app(environ, lambda s, h, exc=None: status.append(s)))
    return status[0], json.loads(body)


def test_importance_counts_trained_trials_only(fake_run):
    run = fake_run(name="imp", n=5)
    study = _study_with_rejections(run / "study.db")
    trained = feasible_complete_trials(study)
    assert 0 < len(trained) < len(study.trials)
    assert all(t.state == TrialState.COMPLETE and t.value > 0 for t in trained)
    ours = trained_importances(study)[0]
    assert ours[0]["name"] == "lr" and ours[0]["distribution"] == "FloatDistribution"
    # over every COMPLETE trial (optuna-dashboard's own computation) the budget's parameter comes first
    with pytest.warns(UserWarning, match="low `target` values"):
        everything = optuna.importance.get_param_importances(
            study, target=lambda t: -t.value, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert max(everything, key=everything.get) == "size" and everything["size"] > 0.6, everything
    # the dashboard's importance route answers with the trained trials' importance; its other routes are its own
    app = dashboard_app(run)
    status, body = _get(app, f"/api/studies/{study._study_id}/param_importances")
    assert status.startswith("200") and body == {"param_importances": [ours]}
    status, body = _get(app, "/api/studies/999/param_importances")
    assert status.startswith("404")
    status, body = _get(app, f"/api/studies/{study._study_id}")
    assert status.startswith("200") and len(body["trials"]) == 200


def test_importance_of_too_few_trained_trials_is_empty():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert trained_importances(study) == [[]]
    multi = optuna.create_study(directions=["maximize", "minimize"])
    assert trained_importances(multi) == [[], []]


@pytest.mark.parametrize("objectives", [1, 3])
def test_importance_per_objective(objectives):
    study = optuna.create_study(directions=["maximize"] + ["minimize"] * (objectives - 1),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("a", 0, 1),) + (t.suggest_float("b", 0, 1),) * (objectives - 1),
                   n_trials=30)
    out = trained_importances(study)
    assert len(out) == objectives and out[0][0]["name"] == "a"
    if objectives > 1:
        assert out[1][0]["name"] == "b"
