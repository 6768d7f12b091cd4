"""`asc-search demo`: the whole chain on built-in data at the smallest size, its summary and its files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from asc_search.cli import main
from asc_search.demo import SUMMARY_FILE, DemoSettings
from asc_search.errors import ConfigError


@pytest.mark.slow
def test_demo_end_to_end(tiny_demo):
    s = tiny_demo
    out = s.out_dir
    # every step left its files where the summary says
    assert (s.paths["data"] / "meta.csv").is_file()
    assert (s.paths["teacher"] / "teacher.pt").is_file()
    assert any(s.paths["teacher_cache"].glob("*.parquet"))
    for name in ("trials.parquet", "study.db", "search.yaml", "run.json"):
        assert (s.paths["run"] / name).is_file(), name
    for name in ("student.yaml", "student.safetensors", "student.onnx", "report.md"):
        assert (s.paths["export"] / name).is_file(), name
    assert sorted(p.name for p in s.paths["plots"].glob("*.png")) == [
        "accuracy_over_trials.png", "budget_plane.png", "pareto_front.png"]
    # the summary agrees with the files
    trials = pd.read_parquet(s.paths["run"] / "trials.parquet")
    assert s.proposals["total"] == len(trials)
    assert s.proposals["rejected_budget"] == int((trials["status"] == "rejected_budget").sum()) > 0
    trained = trials[trials["status"].isin(["completed", "early_stopped", "failed"])]
    assert (trained["kind"] == "search").sum() == 2  # num_samples counts trained sampled trials only
    refs = trained[trained["kind"] == "reference"]  # + the three default reference arms, trained in full
    assert sorted(refs["reference"]) == ["baseline_ce", "baseline_kd", "baseline_kd_emb"] and (refs["epochs"] == 1).all()
    assert (trained["param_bytes"] <= s.budget["max_param_bytes"]).all() and (trained["macs"] <= s.budget["max_macs"]).all()
    assert s.student["param_bytes"] <= s.budget["max_param_bytes"] and s.student["macs"] <= s.budget["max_macs"]
    assert s.teacher["params"] > 1_000_000
    # the counts add up: every proposal has one status, and the trained ones are those num_samples asked for
    p = s.proposals
    assert p["total"] == len(trials) == sum(v for k, v in p.items() if k not in ("total", "trained"))
    assert p["completed"] + p["early_stopped"] + p["failed"] == 5
    saved = json.loads((out / SUMMARY_FILE).read_text())
    assert saved["student"]["trial_id"] == s.student["trial_id"]
    assert set(saved["timings_s"]) >= {"synth", "features", "teacher", "embed", "search", "export", "total"}


@pytest.mark.slow
def test_demo_reports_every_step_through_on_event(tiny_demo):
    events = tiny_demo.events
    steps = [i for e, i in events if e == "step"]
    assert [(s["n"], s["name"]) for s in steps] == list(enumerate(
        ["synth", "features", "teacher", "embed", "search", "export"], start=1))
    # the steps' own progress reaches the caller: bars for synth, features and embed, the teacher's epochs, the
    # search's trials (named by trial_id) and the export's lines
    order = [i["n"] for e, i in events if e == "step"]
    assert order == sorted(order)
    progress_tasks = {i["task"] for e, i in events if e == "progress"}
    assert len(progress_tasks) >= 3
    for name in ("synth", "features", "embed"):
        start = next(k for k, (e, i) in enumerate(events) if e == "step" and i["name"] == name)
        assert events[start + 1][0] == "progress", name  # its first event is its bar starting
    assert [i["epoch"] for e, i in events if e == "epoch" and i["task"] == "teacher"] == [1]
    started = [i["trial_id"] for e, i in events if e == "started"]
    assert len(started) == 5 and str(tiny_demo.student["trial_id"]) in map(str, started)  # 2 sampled + 3 references
    assert any(e == "log" and "on the test split" in i["message"] for e, i in events)


@pytest.mark.slow
def test_demo_files_load_and_agree_with_the_summary(tiny_demo):
    """Each figure of the summary is recomputed from the files it names (a wrong split, a wrong metric, a stale
    cache or a summary copied from the wrong place would show here)."""
    import torch
    import yaml

    from asc_search.data.cache import load_features
    from asc_search.data.teacher_cache import load_teacher_targets, teacher_cache_path
    from asc_search.teacher import load_teacher
    from asc_search.training import predict, score

    s = tiny_demo
    fs = load_features(s.paths["cache"])
    assert s.paths["teacher_cache"] == teacher_cache_path(s.paths["cache"])  # beside the feature cache, not in it
    targets = load_teacher_targets(fs)  # found at the default location, joined by filename
    teacher = load_teacher(s.paths["teacher"])  # its checkpoint matches the recorded fingerprint
    test = torch.from_numpy((fs.table["split"] == "test").to_numpy(copy=True))
    logits = predict(teacher.model, fs.x[test], 256, "cpu")
    assert torch.allclose(targets.logits[test], logits, atol=1e-4)  # the cached logits are this teacher's
    table = fs.table[test.numpy()].reset_index(drop=True)
    scores = score(logits, fs.y[test], table, fs.labels)
    assert scores["n"] == 100  # 25 % of the 400 clips are test clips
    assert scores["macro_accuracy"] == pytest.approx(s.teacher["test_macro_accuracy"], abs=1e-9)
    assert set(scores["per_device"]) >= {"s4", "s5", "s6"}
    record = yaml.safe_load((s.paths["export"] / "student.yaml").read_text())
    test_metrics = record["metrics"]["test"]
    assert test_metrics["n"] == scores["n"] and test_metrics["macro_accuracy"] == s.student["test_macro_accuracy"]
    for kind in ("seen", "unseen"):  # one definition: macro accuracy over those devices' clips
        assert s.student[f"{kind}_macro_accuracy"] == test_metrics[f"{kind}_macro_accuracy"] is not None
    assert record["model"]["config"] and record["complexity"]["passed"] is True
    # the demo's student is deployed at the quick budget's int8, within its bytes, and the summary says so
    assert s.student["deployed_precision"] == record["deployed"]["precision"] == "int8"
    assert s.student["deployed_weights_bytes"] == record["deployed"]["weights_bytes"] <= 24_000
    assert s.student["test_macro_accuracy_fp32"] == record["metrics"]["test_fp32"]["macro_accuracy"]


@pytest.mark.slow
def test_demo_outputs_feed_the_other_commands(tiny_demo, capsys):
    s = tiny_demo
    assert main(["results", str(s.paths["run"]), "--json", "--no-plots"]) == 0
    assert json.loads(capsys.readouterr().out)["status_counts"]["total"] == s.proposals["total"]
    wav = sorted((s.paths["data"] / "audio").glob("*.wav"))[:2]
    assert main(["predict", str(s.paths["export"]), *map(str, wav), "--device", "cpu"]) == 0
    assert wav[0].name in capsys.readouterr().out


def test_demo_refuses_existing_folder_and_bad_settings(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty; replace it with --force, or choose another --out" in err
    assert main(["demo", "--out", str(out), "--force"]) == 2  # not a demo folder: never deleted
    assert "does not look like a demo folder" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep"
    with pytest.raises(ConfigError, match="clips must be a positive integer"):
        DemoSettings(clips=0)
    with pytest.raises(SystemExit):
        main(["demo", "--clips", "-5"])
