"""`asc-search bench`: the per-area runner and the accuracy table."""

from __future__ import annotations

import gc
import json
import os

import pytest

from asc_search.bench import runner as B
from asc_search.cli import main
from asc_search.errors import ConfigError, NotFoundError


def test_run_area_passes_quick_sizes_and_reports_failures(monkeypatch):
    out = B.run_area("complexity", quick=True)
    assert out["available"] and "error" not in out, out.get("error")
    assert out["arguments"] == {"n_candidates": 10}
    assert out["result"]["cost_student"]["n_candidates"] == 10
    missing = B.run_area("nonexistent")
    assert not missing["available"] and "no benchmark module" in missing["error"]

    import types

    broken = types.ModuleType("asc_search.bench.broken")
    broken.run = lambda: 1 / 0
    monkeypatch.setitem(__import__("sys").modules, "asc_search.bench.broken", broken)
    failed = B.run_area("broken")
    assert failed["available"] and failed["error"].startswith("ZeroDivisionError")


def test_flatten_names_nested_figures():
    rows = dict(B.flatten({"a": {"b": 1}, "profiles": [{"profile": "quick", "t": 2.0}, {"x": 3}], "l": [1, 2]}))
    assert rows == {"a.b": 1, "profiles.quick.profile": "quick", "profiles.quick.t": 2.0, "profiles.1.x": 3, "l": "[1, 2]"}


def test_bad_bench_inputs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown bench area"):
        B.run_bench(areas=("gpu",), accuracy=False)
    with pytest.raises(NotFoundError, match="holds no finished demo"):
        B.accuracy_table(tmp_path)
    assert main(["bench", "--areas", "complexity", "--no-accuracy", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_accuracy_table_from_a_demo(tiny_demo, tmp_path, capsys):
    """The accuracy table is `compare` on the demo's cache: its references and its export over seeds."""
    target = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--areas", "complexity", "--demo-dir", str(tiny_demo.out_dir),
                 "--json", str(target), "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Accuracy on the built-in data" in out and "baseline_kd_emb" in out and " ± " in out
    acc = json.loads(target.read_text())["accuracy"]
    names = [r["name"] for r in acc["rows"]]
    assert names[:3] == ["baseline_ce", "baseline_kd", "baseline_kd_emb"] and len(names) == 4
    assert acc["seeds"] == [0, 1] and all(len(r["runs"]) == 2 for r in acc["rows"])  # --quick: 2 seeds
    student = acc["rows"][-1]
    # the searched student's row: the export's architecture, retrained with its recipe
    assert student["kind"] == "export" and f"trial {tiny_demo.student['trial_id']}" in student["name"]
    assert student["params"] == tiny_demo.student["params"] and student["macs"] == tiny_demo.student["macs"]
    assert student["within_budget"] is True and student["best_reference"] in names[:3]
    assert acc["rows"][0]["distill"]["kd_weight"] == 0.0 and acc["rows"][1]["distill"]["kd_weight"] == 0.98
    assert acc["rows"][0]["within_budget"] and acc["rows"][0]["params"] < 24_000  # width fitted to quick's budget
    assert acc["teacher"]["params"] > 1_000_000 and acc["teacher"]["test_macro_accuracy"] == pytest.approx(
        tiny_demo.teacher["test_macro_accuracy"])
    assert json.loads(target.read_text())["areas"]["complexity"]["available"]


@pytest.mark.slow
def test_deploy_figures_from_a_demo(tiny_demo):
    from asc_search.bench import deploy

    out = B.run_area("deploy", quick=True, demo_dir=tiny_demo.out_dir)
    assert out["available"] and "error" not in out, out.get("error")
    assert out["arguments"]["demo_dir"] == str(tiny_demo.out_dir) and out["arguments"]["qat_epochs"] == 1
    result = out["result"]
    student, baseline = result["models"]
    for model in (student, baseline):
        v = {row["variant"]: row for row in model["variants"]}
        assert list(v) == ["float32", "float16", "int8 PTQ", "int8 QAT"]
        assert v["float32"]["weights_bytes"] == 2 * v["float16"]["weights_bytes"]
        assert v["int8 PTQ"]["by_dtype"].keys() == {"int8", "int32"} == v["int8 QAT"]["by_dtype"].keys()
        assert v["int8 PTQ"]["weights_bytes"] == v["int8 QAT"]["weights_bytes"] < v["float16"]["weights_bytes"]
        assert all(0 <= row["test_macro_accuracy"] <= 1 for row in model["variants"])
    # the student fits the demo's budget deployed; the DCASE 2024 baseline deploys at float16 within 128,000 bytes
    assert student["budget_bytes"] == 24_000 and {row["variant"]: row for row in student["variants"]}["int8 PTQ"][
        "within_budget"]
    b = {row["variant"]: row for row in baseline["variants"]}
    assert b["float16"]["weights_bytes"] == 119_588 and b["float16"]["within_budget"] is True
    assert b["int8 PTQ"]["weights_bytes"] == 63_856 and b["float32"]["within_budget"] is False
    cost = result["score_precision_deployed"]
    assert cost["quick_student"]["deploy_s_best"] > 0 and cost["dcase_baseline"]["val_clips"] == 64
    assert callable(deploy.main)


def test_training_bench_variants_train_the_same_student():
    from asc_search.bench import training as T
    from asc_search.training import loop, perf

    before = T.measure_variant("quick", "before", clips=64, epochs=1)
    after = T.measure_variant("quick", "after", clips=64, epochs=1)
    assert loop.make_optimizer is perf.make_optimizer  # the old loop's pieces were put back only for "before"
    assert after["losses"][0] == pytest.approx(before["losses"][0], rel=1e-4)  # same data, seeds, student
    assert after["macs"] == before["macs"] == 1_606_260 and after["params"] == before["params"]
    assert after["clips_per_s"] > 0 and 0 < after["fraction_of_matmul"] and after["matmul_gmacs_per_s"] > 0


@pytest.mark.slow
def test_training_bench_runs_each_variant_in_its_own_process():
    from asc_search.bench import training as T

    out = T.run(quick=True, profiles=("quick",), variants=("before", "after"))
    entry = out["profiles"][0]
    assert set(entry["variants"]) == {"before", "after"} and entry["variants"]["after"]["clips"] == 256
    assert entry["speedup_median"] > 0 and entry["loss_max_rel_diff"] < 1e-3
    import torch

    if not torch.cuda.is_available():
        assert T.run(device="cuda") == {"benchmark": "training", "skipped": "no CUDA GPU"}


@pytest.mark.ray
def test_driver_bench_counts_every_proposal_and_plots(ray_local, tmp_path):
    from asc_search.bench import driver as D

    # 20 random startup proposals (~2 % of them fit the budget), then TPE finds the feasible edge
    out = D.run(proposals=64, every=16, out=tmp_path / "plot", work_dir=tmp_path / "work", max_seconds=None,
                sampler_sizes=(40, 80))
    assert out["proposals"] == out["study_trials"] == 64 and not out["stopped_by_time_cap"]
    assert out["trained"] + out["rejected"] == 64 and out["trained"] > 0 and out["trial_errors"] == 0
    assert [s["proposals"] for s in out["samples"]] == [0, 16, 32, 48, 64]
    scaling = out["sampler_scaling"]["sizes"]
    assert [r["trials"] for r in scaling] == [40, 80] and all(r["bounded_tpe_ms_median"] > 0 for r in scaling)
    assert all(w["proposals_per_s"] > 0 and 0 < w["searcher_ms_per_proposal"] <= w["ms_per_proposal"]
               for w in out["windows"])
    assert all(0 <= w["gc_ms_per_proposal"] <= w["ms_per_proposal"] for w in out["windows"])
    assert 0 <= out["gc_share_of_wall"] < 1
    # the driver's CPU time: positive in every window, at most the machine's cores' worth
    assert all(w["cpu_ms_per_proposal"] > 0 and 0 < w["cpu_busy"] <= os.cpu_count() for w in out["windows"])
    assert 0 < out["cpu_busy"] <= os.cpu_count() and out["cpu_ms_per_proposal"] > 0
    recorder = D._Recorder(every=1)  # a collection's duration is counted
    gc.callbacks.append(recorder.gc_callback)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(recorder.gc_callback)
    assert recorder.gc_s > 0 and recorder._gc_since is None
    assert out["rss_mb_max"] > 0 and (tmp_path / "plot" / "driver_scale.png").read_bytes()[:4] == b"\x89PNG"
    capped = D.run(proposals=1000, every=5, work_dir=tmp_path / "capped", max_seconds=0.0, sampler_sizes=())
    assert capped["stopped_by_time_cap"] and capped["proposals"] < 1000


def test_gpu_check_script_space_and_skip(tmp_path, capsys, monkeypatch):
    import importlib.util
    from pathlib import Path

    import torch

    from asc_search.search.space import load_space

    path = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    space = load_space(gpu_check.fractional_space(tmp_path, trials=5, concurrent=4))
    assert (space.search.gpus_per_trial, space.search.max_concurrent, space.search.num_samples) == (0.25, 4, 5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0 and capsys.readouterr().out.strip() == "no CUDA GPU: skipped"


@pytest.mark.ray
def test_tune_bench_accounts_for_imports_checkpoints_and_overhead(ray_local, tmp_path):
    from asc_search.bench import search as B

    (tmp_path / "t1").mkdir()
    out = B.bench_tune(B.synthetic_trial_data(48), tmp_path, n_trials=2)
    assert out["tune_errors"] == 0 and out["trials"] == 2
    assert out["checkpoints"] == 2 * out["epochs_per_trial"]  # one checkpoint per epoch and trial
    assert 0 < out["checkpoint_write_s"] < out["trials_inside_s"]
    assert 1 <= out["workers"] <= 2 and out["tune_over_sequential"] == pytest.approx(1 / out["speedup"])
    # the slots' time line: each worker's first trial after fit() began, the other trials after one ended on it
    assert len(out["until_first_trial_s"]) == out["workers"] and len(out["between_trials_s"]) == 2 - out["workers"]
    assert all(0 < s < out["tune_2_at_a_time_s"] for s in out["until_first_trial_s"])
    assert 0 <= out["after_last_trial_s"] < out["tune_2_at_a_time_s"]
    # the machine's own ceiling: the same 2 trials in 2 plain processes
    assert 0 < out["two_processes_s"] and out["two_processes_trials_inside_s"] <= 2 * out["two_processes_s"]
    assert out["two_processes_over_sequential"] == pytest.approx(out["two_processes_s"] / out["sequential_one_process_s"])
