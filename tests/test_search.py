"""The search end to end on real Ray (local and a local multi-node cluster), budget rejection, NaN trials, the
trials table, and that the test split never reaches a trial."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from asc_search.errors import ConfigError, NotFoundError
from asc_search.search.driver import run_search
from asc_search.search.runfolder import build_trials_table
from asc_search.search.space import load_space

ROOT = Path(__file__).resolve().parents[1]


def tiny_space(tmp_path, name="tiny.yaml", **changes):
    """search_spaces/quick.yaml cut down to a few short trials; ``changes``: {"section.key": value}."""
    raw = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    raw["train"]["epochs"] = 2
    raw["train"]["batch_size"] = 64
    raw["train"]["min_steps"] = 0
    raw["search"]["num_samples"] = 3
    raw["search"]["n_startup_trials"] = 3
    raw["search"]["asha"] = {"enabled": True, "grace_period": 2, "reduction_factor": 2}
    raw["references"] = []
    for key, value in changes.items():
        if key == "references":
            raw["references"] = value
            continue
        section, field = key.split(".", 1)
        raw[section][field] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _study(run_dir):
    return optuna.load_study(study_name=json.loads((run_dir / "run.json").read_text())["study_name"],
                             storage=f"sqlite:///{run_dir / 'study.db'}")


def _check_run(run_dir: Path, spec, n_trained: int) -> pd.DataFrame:
    table = pd.read_parquet(run_dir / "trials.parquet")
    for col in ("trial_id", "status", "params", "param_bytes", "macs", "val_macro_accuracy", "val_log_loss",
                "epochs", "duration_s", "config", "p_base_channels", "p_kd_weight", "p_n_stages"):
        assert col in table.columns, col
    assert set(table["status"]) <= {"completed", "early_stopped", "failed", "rejected_budget"}
    trained = table[table["status"] != "rejected_budget"]
    assert len(trained) == n_trained  # num_samples counts trained trials only
    # no trained trial is over budget (as counted nor as deployed); every rejected one is, and carries its figures
    limit = spec.budget.max_param_bytes
    assert (trained["param_bytes"] <= limit).all() and (trained["macs"] <= spec.budget.max_macs).all()
    assert (trained["deployed_param_bytes"] <= limit).all()
    rejected = table[table["status"] == "rejected_budget"]
    over = ((rejected["param_bytes"] > limit) | (rejected["deployed_param_bytes"] > limit)
            | (rejected["macs"] > spec.budget.max_macs))
    assert over.all() and rejected["epochs"].eq(0).all()
    assert table["trial_id"].is_unique and trained["ray_trial_id"].is_unique
    # the study holds the same proposals, with the constraints the sampler reads
    study = _study(run_dir)
    for t in study.get_trials():
        if t.user_attrs.get("status") == "rejected_budget":
            assert t.state == TrialState.COMPLETE and max(t.constraints.values()) > 0
        elif t.user_attrs.get("status") in ("completed", "early_stopped", "failed"):
            assert max(t.constraints.values()) <= 0
    # the files that record what produced the run
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["feature_fingerprint"] and info["finished_utc"]
    assert info["dir_bank"]["source"] == "generic" and len(info["dir_bank"]["fingerprint"]) == 16
    assert (run_dir / "search.yaml").read_text() == spec.text
    assert build_trials_table(run_dir)["status"].tolist() == table["status"].tolist()
    return table


@pytest.mark.slow
@pytest.mark.ray
def test_quick_search_end_to_end(quick_cache, teacher_cache, ray_local, tmp_path):
    space = tiny_space(tmp_path)
    events = []
    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="e2e", results_dir=tmp_path / "results",
                        on_event=lambda e, i: events.append((e, i)))
    spec = load_space(space)
    table = _check_run(result.run_dir, spec, n_trained=3)
    assert not result.interrupted and result.counts["trained"] == 3
    done = table[table["status"].isin(["completed", "early_stopped"])]
    assert len(done) >= 1 and done["val_macro_accuracy"].between(0, 1).all() and (done["epochs"] >= 1).all()
    completed = table[table["status"] == "completed"]
    assert (completed["epochs"] == 2).all()
    for _, row in done.iterrows():  # a checkpoint to export from, holding the best weights
        ckpt = result.run_dir / row["checkpoint_path"]
        assert (ckpt / "best.pt").is_file() and (ckpt / "resume.pt").is_file()
        import torch

        best = torch.load(ckpt / "best.pt", weights_only=True)
        assert best["best_state"] and best["student_config"]["n_classes"] == 10
    kinds = [e for e, _ in events]
    setup = kinds.index("setup")  # after the lines that say what it is doing while the caches load and Ray starts
    assert any("loading the feature cache" in i["message"] for e, i in events[:setup] if e == "log")
    assert set(kinds[:setup]) <= {"log", "warning"} and kinds.count("started") == 3 and "rejected" in kinds
    assert result.best is not None and result.best["status"] == "completed"


@pytest.mark.slow
@pytest.mark.ray
def test_mostly_over_budget_space(quick_cache, teacher_cache, ray_local, tmp_path):
    # 3 kB / 300 k MACs: only the smallest students fit; most proposals must be rejected before training
    space = tiny_space(tmp_path, **{"budget.max_param_bytes": 3000, "budget.max_macs": 300_000, "train.epochs": 1,
                                    "search.num_samples": 2, "search.asha": {"enabled": False}})
    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="tight", results_dir=tmp_path / "r")
    table = _check_run(result.run_dir, load_space(space), n_trained=2)
    assert (table["status"] == "rejected_budget").sum() >= 5
    assert result.counts["rejected_budget"] == (table["status"] == "rejected_budget").sum()
    # over-budget proposals are rejected from the config alone; every trained one was confirmed by torchinfo
    assert (table.loc[table["status"] == "rejected_budget", "counter"] == "analytic").all()
    assert (table.loc[table["status"] != "rejected_budget", "counter"] == "torchinfo").all()


@pytest.mark.slow
@pytest.mark.ray
def test_score_precision_deployed_ranks_completed_trials_by_their_int8_graph(quick_cache, teacher_cache, ray_local,
                                                                             tmp_path):
    space = tiny_space(tmp_path, **{"budget.max_param_bytes": 6000, "train.epochs": 1, "search.num_samples": 2,
                                    "search.asha": {"enabled": False}, "search.score_precision": "deployed"})
    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="dep", results_dir=tmp_path / "r")
    table = _check_run(result.run_dir, load_space(space), n_trained=2)
    done = table[table["status"] == "completed"]
    assert len(done) == 2 and done["val_macro_accuracy_deployed"].between(0, 1).all() and (done["deploy_s"] > 0).all()
    assert table.loc[table["status"] != "completed", "val_macro_accuracy_deployed"].isna().all()
    # both byte figures within the budget for every trained proposal; the deployed one is the larger at int8
    assert (done["deployed_param_bytes"] <= 6000).all() and (done["deployed_param_bytes"] > done["param_bytes"]).all()
    # the sampler was told the deployed score; the best trial is the best deployed one
    values = {t.number: t.value for t in _study(result.run_dir).get_trials() if t.user_attrs["status"] == "completed"}
    assert values == dict(zip(done["trial_id"], done["val_macro_accuracy_deployed"]))
    assert result.best["trial_id"] == int(done.loc[done["val_macro_accuracy_deployed"].idxmax(), "trial_id"])


@pytest.mark.slow
@pytest.mark.ray
def test_search_joins_multinode_cluster_by_address(quick_cache, teacher_cache, ray_multinode, tmp_path):
    import ray

    space = tiny_space(tmp_path, **{"train.epochs": 1, "search.num_samples": 2})
    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="mn", results_dir=tmp_path / "r",
                        address=ray_multinode)
    assert not ray.is_initialized()  # it joined, and left again (the cluster itself stays up for the fixture)
    _check_run(result.run_dir, load_space(space), n_trained=2)
    assert json.loads((result.run_dir / "run.json").read_text())["address"] == ray_multinode


def _replacing_callback(folder: Path):
    """A Tune callback doing to ``folder`` what Ray 2.60 does to a job's working folder when a trial first lands on a
    second node sharing the head's Ray temporary folder (the README's recipe on one machine): delete it under the
    running driver and unpack it again at the same path."""
    from ray.tune import Callback

    class Replace(Callback):
        replaced = 0

        def on_trial_start(self, iteration, trials, trial, **info):
            if not self.replaced:
                copy = {p.name: p.read_bytes() for p in folder.iterdir()}
                shutil.rmtree(folder)
                folder.mkdir()
                for name, data in copy.items():
                    (folder / name).write_bytes(data)
                self.replaced += 1

    return Replace()


@pytest.mark.slow
@pytest.mark.ray
def test_a_search_survives_its_working_folder_replaced_under_it(quick_cache, teacher_cache, ray_local, tmp_path,
                                                                monkeypatch):
    """`ray job submit --working-dir . -- asc-search search ...` on two nodes of one machine: the driver's current
    folder is deleted and unpacked again mid-search; Tune's os.getcwd() at the end of fit used to fail with
    FileNotFoundError (run.json left 'running'). Paths relative to the job's folder still resolve afterwards."""
    job = tmp_path / "job"
    job.mkdir()
    tiny_space(job, **{"train.epochs": 1, "search.num_samples": 1, "search.asha": {"enabled": False}})
    monkeypatch.chdir(job)
    replace = _replacing_callback(job)
    result = run_search(quick_cache, "tiny.yaml", teacher_cache=teacher_cache, name="job", results_dir=tmp_path / "r",
                        callbacks=[replace])
    assert replace.replaced == 1  # the folder was replaced during the search
    assert result.counts["trained"] == 1 and not result.interrupted
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "finished"
    assert os.getcwd() == str(job) and Path("tiny.yaml").is_file()  # back in the job's (new) folder, by its path


@pytest.mark.slow
@pytest.mark.ray
def test_diverging_trials_fail_and_the_search_goes_on(quick_cache, teacher_cache, ray_local, tmp_path):
    """Teacher logits full of NaN make every KD loss NaN: each trial is recorded failed, none retried forever."""
    from asc_search.data.teacher_cache import read_teacher_cache, write_teacher_cache

    names, emb, logits, meta = read_teacher_cache(teacher_cache)
    bad = tmp_path / "nan_teacher"
    write_teacher_cache(bad, names, emb, np.full_like(logits, np.nan), dict(meta))
    space = tiny_space(tmp_path, **{"train.epochs": 1, "search.num_samples": 2, "distill.kd_weight": 0.5})
    result = run_search(quick_cache, space, teacher_cache=bad, name="nan", results_dir=tmp_path / "r")
    table = pd.read_parquet(result.run_dir / "trials.parquet")
    failed = table[table["status"] == "failed"]
    assert len(failed) == 2 and result.counts["trained"] == 2
    assert failed["error"].str.contains("diverged").all()
    assert [t.state for t in _study(result.run_dir).get_trials() if t.user_attrs["status"] == "failed"] == [TrialState.FAIL] * 2


def test_run_refusals(quick_cache, tmp_path):
    space = tiny_space(tmp_path)
    dcase = tiny_space(tmp_path, "d.yaml")
    dcase.write_text(dcase.read_text().replace("profile: quick", "profile: dcase"))
    with pytest.raises(ConfigError, match=r"d.yaml: profile: the search file is for feature profile 'dcase' \(256 x 65\)"):
        run_search(quick_cache, dcase, name="x", results_dir=tmp_path / "r")
    (tmp_path / "r" / "taken").mkdir(parents=True)
    (tmp_path / "r" / "taken" / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match="already exists: resume that run, or choose another name"):
        run_search(quick_cache, space, name="taken", results_dir=tmp_path / "r")
    with pytest.raises(NotFoundError, match="no search run to resume"):
        run_search(quick_cache, None, name="never", results_dir=tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="name 'a/b': use letters"):
        run_search(quick_cache, space, name="a/b", results_dir=tmp_path / "r")
    with pytest.raises(Exception, match="no teacher cache there"):
        run_search(quick_cache, space, name="nt", results_dir=tmp_path / "r", teacher_cache=tmp_path / "none")


@pytest.mark.ray
def test_resources_the_cluster_cannot_give_are_refused_before_anything_is_written(quick_cache, teacher_cache, ray_local,
                                                                                 tmp_path):
    space = tiny_space(tmp_path, **{"search.resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5}})
    with pytest.raises(ConfigError, match=r"search.resources.gpus_per_trial is 0.5 but the Ray cluster has 0 GPU"):
        run_search(quick_cache, space, name="gpu", results_dir=tmp_path / "r", teacher_cache=teacher_cache)
    assert not (tmp_path / "r" / "gpu").exists()
    space = tiny_space(tmp_path, "c.yaml", **{"search.resources": {"cpus_per_trial": 8}})
    with pytest.raises(ConfigError, match=r"cpus_per_trial is 8 but .* at most 2 on one node"):
        run_search(quick_cache, space, name="cpu", results_dir=tmp_path / "r", teacher_cache=teacher_cache)
    import ray

    assert ray.is_initialized()  # the shared instance is left alone


def test_a_space_whose_smallest_student_is_over_budget_is_refused_at_once(quick_cache, teacher_cache, tmp_path,
                                                                          monkeypatch):
    from asc_search.errors import BudgetError
    from asc_search.search import driver

    def never(*args, **kwargs):
        raise AssertionError("refused before the caches are loaded and before Ray starts")

    monkeypatch.setattr(driver, "_load_data", never)
    monkeypatch.setattr(driver, "connect_ray", never)
    space = tiny_space(tmp_path, **{"budget.max_param_bytes": 100, "search.max_consecutive_rejections": 6})
    with pytest.raises(BudgetError, match=r"tiny.yaml: even the smallest student of this search space \(base_channels "
                                          r"8, .* is over the budget: [\d,]+ bytes at int8 \([\d,]+ in its deployed graph\) \(limit 100\)"):
        run_search(quick_cache, space, teacher_cache=teacher_cache, name="none", results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.ray
def test_a_mostly_infeasible_space_stops_with_a_clear_error_and_keeps_the_record(quick_cache, teacher_cache, ray_local,
                                                                                tmp_path):
    from asc_search.errors import BudgetError
    from asc_search.search.space import load_space

    corner = load_space(tiny_space(tmp_path)).check_feasible()  # only (about) the smallest student fits
    space = tiny_space(tmp_path, **{"budget.max_param_bytes": max(corner.param_bytes, corner.deployed_param_bytes),
                                    "budget.max_macs": corner.macs,
                                    "search.max_consecutive_rejections": 6})
    with pytest.raises(BudgetError, match=r"6 proposals in a row were over the budget .* although its smallest student "
                                          r"fits.*0 trained, 6 rejected"):
        run_search(quick_cache, space, teacher_cache=teacher_cache, name="none", results_dir=tmp_path / "r")
    run = tmp_path / "r" / "none"
    table = pd.read_parquet(run / "trials.parquet")
    assert len(table) == 6 and set(table["status"]) == {"rejected_budget"}
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "stopped" and "in a row" in info["stop_reason"]


def _own_trial_workers() -> list[int]:
    """Trial worker processes of this process's local Ray only (children of a raylet that is our child)."""
    import os

    def ppid(pid):
        try:
            return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        parent = ppid(int(d)) if cmd.startswith("ray::ImplicitFunc") else None
        if parent and ppid(parent) == os.getpid():
            out.append(int(d))
    return out


@pytest.mark.slow
@pytest.mark.ray
def test_a_crashed_worker_is_retried_from_its_checkpoint(quick_cache, teacher_cache, ray_local, tmp_path):
    """SIGKILL a trial's worker after its first epoch: Tune retries it (max_failures 1) from the epoch-1 checkpoint."""
    import os
    import signal

    space = tiny_space(tmp_path, **{"train.epochs": 4, "search.num_samples": 2, "search.asha": {"enabled": False}})
    killed = {}

    def on_event(event, info):
        # at a trial's 2nd epoch report (its epoch-1 checkpoint is registered with Tune by then)
        if event == "result" and not killed and info["epoch"] == 2:
            assert info["pid"] in _own_trial_workers()  # a worker of this test's own Ray, nobody else's
            killed.update(trial=info["trial_id"], epoch=info["epoch"])
            os.kill(info["pid"], signal.SIGKILL)

    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="crash", results_dir=tmp_path / "r",
                        on_event=on_event)
    assert killed and result.counts["completed"] == 2 and result.counts["failed"] == 0
    state = json.loads(sorted((result.run_dir / "ray").glob("experiment_state*.json"))[-1].read_text())
    failures = [json.loads(meta)["num_failures"] if isinstance(meta, str) else meta["num_failures"]
                for _, meta in state["trial_data"]]
    assert sorted(failures) == [0, 1]  # one retry, of one trial
    # the retried attempt continued from the dead one's checkpoint instead of starting over
    table = pd.read_parquet(result.run_dir / "trials.parquet")
    done = table[table["status"] == "completed"].set_index("trial_id")
    assert (done["epochs"] == 4).all()
    assert done.loc[killed["trial"], "resumed_from_epoch"] in (1, 2)
    assert done.drop(index=killed["trial"])["resumed_from_epoch"].eq(0).all()


@pytest.mark.slow
@pytest.mark.ray
def test_a_crashed_trial_without_retries_is_failed_and_the_search_goes_on(quick_cache, teacher_cache, ray_local,
                                                                          tmp_path):
    import os
    import signal

    space = tiny_space(tmp_path, **{"train.epochs": 3, "search.num_samples": 3, "search.max_failures": 0,
                                    "search.asha": {"enabled": False}})
    killed = {}

    def on_event(event, info):
        if event == "result" and not killed:
            assert info["pid"] in _own_trial_workers()
            killed.update(trial=info["trial_id"])
            os.kill(info["pid"], signal.SIGKILL)

    result = run_search(quick_cache, space, teacher_cache=teacher_cache, name="dead", results_dir=tmp_path / "r",
                        on_event=on_event)
    table = pd.read_parquet(result.run_dir / "trials.parquet").set_index("trial_id")
    assert table.loc[killed["trial"], "status"] == "failed"
    assert table.loc[killed["trial"], "error"].startswith("the trial raised: ")
    assert "died" in table.loc[killed["trial"], "error"]
    assert result.counts["trained"] == 3 and result.counts["completed"] == 2  # the search went on
