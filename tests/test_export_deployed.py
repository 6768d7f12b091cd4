"""The deployed model of an export (issue #10): the graph at the budget's precision, its bytes measured from the file
and held against the budget, scored with onnxruntime beside float32; QAT; format-1 folders."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
import torch
import yaml

from asc_search.config import Budget, SplitConfig
from asc_search.deploy import CALIBRATION_CLIPS, calibration_sample, run_onnx, weight_bytes
from asc_search.errors import BudgetError, ConfigError
from asc_search.export.export import write_export
from asc_search.export.folder import ONNX_FILE, ONNX_FP32_FILE, REPORT_FILE, STUDENT_YAML
from asc_search.export.inputs import split_tensors
from asc_search.models.student import StudentConfig, build_student

#: The int8 graph's test macro accuracy must stay within this of the float32 model's (the built-in data's ~100 test
#: clips: a clip is worth about one point).
INT8_BOUND = 0.05
QUICK_BUDGET = Budget(max_param_bytes=24_000, param_dtype="int8", max_macs=2_000_000)  # search_spaces/quick.yaml


@pytest.fixture(scope="module")
def trained(quick_cache):
    """A small student trained a few epochs on the built-in data (the search's train part), with its splits."""
    from asc_search.data.cache import load_features
    from asc_search.training.config import TrainConfig
    from asc_search.training.loop import fit

    fs = load_features(quick_cache)
    parts = split_tensors(fs, SplitConfig())
    cfg = StudentConfig(base_channels=16, channels_multiplier=1.5, expansion_rate=2.0, n_blocks=(1, 1),
                        strides={"b2": (2, 2)}, n_classes=len(fs.labels))
    torch.manual_seed(0)
    model = build_student(cfg)
    result = fit(model, parts["train"][0], parts["val"][0], TrainConfig(epochs=8, lr=1e-2, batch_size=32, device="cpu",
                                                                       warmup_epochs=0.5))
    model.load_state_dict(result.best_state)
    return {"model": model.eval(), "cfg": cfg, "parts": parts, "profile": fs.profile, "labels": tuple(fs.labels)}


def _export(trained, out, budget=QUICK_BUDGET, **kw):
    (train, _), (val, val_table), (test, test_table) = (trained["parts"][k] for k in ("train", "val", "test"))
    calibration = train.x[calibration_sample(len(train), CALIBRATION_CLIPS, 0)]
    return write_export(out, trained["model"], student_config=trained["cfg"], profile=trained["profile"],
                        labels=trained["labels"], budget=budget, test_x=test.x, test_y=test.y, test_table=test_table,
                        calibration_x=calibration, val=(val.x, val.y, val_table), device="cpu",
                        provenance={"run": "r", "trial_id": "3"}, **kw)


@pytest.fixture(scope="module")
def int8_export(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "export"
    return out, _export(trained, out)


def test_int8_export_is_the_counted_model_and_scored_as_deployed(trained, int8_export):
    from asc_search.training.metrics import score

    out, summary = int8_export
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    dep = record["deployed"]
    assert record["format"] == 2 and dep["precision"] == "int8" and dep["file"] == ONNX_FILE
    assert dep["reference_file"] == ONNX_FP32_FILE and (out / ONNX_FP32_FILE).is_file()
    # the weights the deployed graph stores: int8 kernels and int32 biases, nothing left in float
    graph = onnx.load(str(out / ONNX_FILE))
    kinds = {t.data_type for t in graph.graph.initializer if len(t.dims) == 4}
    assert kinds == {onnx.TensorProto.INT8}
    measured = weight_bytes(out / ONNX_FILE)
    assert set(measured["by_dtype"]) == {"int8", "int32"}
    # measured from the file, within the budget, equal to the analytic count the search held it to
    assert dep["weights_bytes"] == measured["weights_bytes"] <= QUICK_BUDGET.max_param_bytes
    assert dep["weights_bytes"] == record["complexity"]["deployed_param_bytes"] == dep["estimated_param_bytes"]
    assert dep["counted_param_bytes"] == record["complexity"]["param_bytes"]
    assert dep["scales_bytes"] > 0 and dep["quantization"]["calibration"]["split"] == "train"
    # the test metrics are the deployed graph's (recomputed here with onnxruntime), beside float32's
    test, test_table = trained["parts"]["test"]
    again = score(torch.from_numpy(run_onnx(out / ONNX_FILE, test.x)), test.y, test_table, trained["labels"])
    assert record["metrics"]["test"]["macro_accuracy"] == pytest.approx(again["macro_accuracy"])
    assert summary.metrics["macro_accuracy"] == pytest.approx(again["macro_accuracy"])
    fp32 = record["metrics"]["test_fp32"]["macro_accuracy"]
    assert fp32 > 0.15  # trained (chance: 0.1), so the comparison means something
    assert abs(again["macro_accuracy"] - fp32) <= INT8_BOUND
    same = run_onnx(out / ONNX_FILE, test.x).argmax(1) == run_onnx(out / ONNX_FP32_FILE, test.x).argmax(1)
    assert same.mean() >= 0.9  # the int8 graph decides like the float32 one on (almost) every test clip
    assert record["metrics"]["test_drop"]["macro_accuracy"] == pytest.approx(fp32 - again["macro_accuracy"])
    assert set(record["metrics"]["test"]["per_device"]) == set(record["metrics"]["test_fp32"]["per_device"])
    assert record["metrics"]["validation_split"]["deployed"]["n"] == len(trained["parts"]["val"][0])
    assert dep["check"]["argmax_agreement_vs_fp32"] >= 0.9
    report = (out / REPORT_FILE).read_text()
    assert "## Deployed model" in report and f"**{dep['weights_bytes']:,}**" in report and "int32" in report


def test_float16_export_halves_the_float32_weights(trained, tmp_path):
    out = tmp_path / "fp16"
    summary = _export(trained, out, budget=Budget(max_param_bytes=64_000, param_dtype="float16", max_macs=2_000_000))
    dep = summary.deployed
    fp32 = weight_bytes(out / ONNX_FP32_FILE)
    assert dep["precision"] == "float16" and dep["by_dtype"] == {"float16": dep["weights_bytes"]}
    assert 2 * dep["weights_bytes"] == fp32["weights_bytes"] and fp32["by_dtype"] == {"float32": fp32["weights_bytes"]}
    assert dep["quantization"] is None
    assert abs(summary.metrics["macro_accuracy"] - summary.metrics_fp32["macro_accuracy"]) <= 0.02


def test_measured_bytes_over_budget_refuse_the_export(trained, tmp_path, monkeypatch):
    """The analytic count passes (made to undercount here), the bytes measured from the deployed graph do not:
    BudgetError naming both figures, nothing written, an existing folder kept."""
    import asc_search.complexity as complexity

    monkeypatch.setattr(complexity, "folded_counts", lambda model: (0, 0))
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    params = sum(p.numel() for p in trained["model"].parameters())
    tight = Budget(max_param_bytes=params, param_dtype="int8", max_macs=2_000_000)  # DCASE count fits exactly
    with pytest.raises(BudgetError, match=r"the deployed int8 graph stores [\d,]+ bytes of weights \(int32 [\d,]+ "
                                          r"\+ int8 [\d,]+\) > max_param_bytes " + f"{params:,}"):
        _export(trained, out, budget=tight, force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary folder left


def test_a_graph_onnxruntime_cannot_quantise_writes_nothing(trained, tmp_path, monkeypatch, capsys):
    import asc_search.deploy.build as build
    from asc_search.errors import QuantizationError

    def fails(fp32_path, out_path, *args, **kwargs):
        raise QuantizationError(f"onnxruntime cannot quantise the PRelu operator(s) of {fp32_path.name}: 1 weight "
                                "tensor(s) (w) would stay float in the int8 graph")

    monkeypatch.setattr(build, "quantize_int8", fails)
    with pytest.raises(QuantizationError, match="student.fp32.onnx: 1 weight tensor") as info:
        _export(trained, tmp_path / "export")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())  # no half-written export folder


def test_a_precision_the_exporter_cannot_write_and_int8_without_calibration(trained, tmp_path):
    with pytest.raises(ConfigError, match="precision 'bfloat16' cannot be deployed; the exporter writes float32, "
                                          "float16, int8"):
        _export(trained, tmp_path / "x", precision="bfloat16")
    with pytest.raises(ConfigError, match="budget.param_dtype must be one of int8, float16, float32"):
        Budget(param_dtype="int4")
    test, table = trained["parts"]["test"]
    with pytest.raises(ConfigError, match="int8 export needs calibration clips"):
        write_export(tmp_path / "y", trained["model"], student_config=trained["cfg"], profile=trained["profile"],
                     labels=trained["labels"], budget=QUICK_BUDGET, test_x=test.x, test_y=test.y, test_table=table)
    assert not list(tmp_path.iterdir())


def test_a_format_1_folder_still_loads_and_predicts_in_float32(int8_export, synth_root, tmp_path, capsys):
    """An export written before the deployed model existed: float32 student.onnx, no deployed block."""
    from asc_search.cli import main
    from asc_search.export.load import load_export
    from asc_search.export.predict import predict_files

    out = tmp_path / "old"
    shutil.copytree(int8_export[0], out)
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    record["format"] = 1
    for key in ("deployed",):
        record.pop(key)
    (out / ONNX_FP32_FILE).replace(out / ONNX_FILE)
    (out / STUDENT_YAML).write_text(yaml.safe_dump(record))
    before = (out / STUDENT_YAML).read_bytes()
    loaded = load_export(out)
    assert loaded.legacy and loaded.precision == "float32"
    wav = next((synth_root / "audio").glob("*.wav"))
    events = []
    result = predict_files(out, [wav], device="cpu", on_event=lambda e, i: events.append((e, i)))
    assert result.ran == "float32 model (torch)" and result.rows[0].scene in loaded.labels
    warnings = [i["message"] for e, i in events if e == "warning"]
    assert len(warnings) == 1 and "older asc-search (export format 1)" in warnings[0]
    assert main(["predict", str(out), str(wav), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("export format 1") == 1 and "Traceback" not in captured.err
    assert (out / STUDENT_YAML).read_bytes() == before  # never rewritten


@pytest.mark.slow
def test_export_run_with_qat_exports_the_fine_tuned_student(tiny_search_run, tmp_path):
    from asc_search.export.export import export_run
    from asc_search.search.runfolder import best_trial, load_best_weights, load_trials, run_budget

    best = best_trial(load_trials(tiny_search_run), run_budget(tiny_search_run))
    summary = export_run(tiny_search_run, tmp_path / "qat", device="cpu", qat_epochs=1)
    qat = summary.deployed["qat"]
    assert qat["mode"] == "forced" and qat["ran"] and qat["chosen"] == "int8_qat" and qat["epochs"] == 1
    assert set(qat["variants"]) == {"float32", "int8_ptq", "int8_qat"}
    assert qat["fold_back_diff"] <= 1e-4 and qat["lr"] == pytest.approx(0.1 * best_trial_lr(best))
    # the exported weights are the QAT fine-tuning's, not the checkpoint's
    from asc_search.export.load import load_export

    ckpt = load_best_weights(tiny_search_run, best["checkpoint_path"], best["trial_id"])
    exported = load_export(tmp_path / "qat").model.state_dict()
    assert any(not torch.equal(exported[k], v) for k, v in ckpt.items() if k.endswith("weight"))
    assert summary.deployed["weights_bytes"] <= 24_000
    assert "## Post-training quantisation and QAT" in (tmp_path / "qat" / REPORT_FILE).read_text()
    assert np.isfinite(summary.metrics["macro_accuracy"])


def best_trial_lr(row) -> float:
    import json

    return float(json.loads(row["config"])["train"]["lr"])


@pytest.mark.slow
def test_qat_options_are_checked_before_any_work(tiny_search_run, tmp_path, capsys):
    from asc_search.cli import main

    run = tmp_path / "fp16run"
    shutil.copytree(tiny_search_run, run, ignore=shutil.ignore_patterns("ray"))
    spec = yaml.safe_load((run / "search.yaml").read_text())
    spec["budget"]["param_dtype"] = "float16"
    (run / "search.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    assert main(["export", str(run), "--out", str(tmp_path / "a"), "--qat-epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "--qat-epochs 2: QAT is for int8 exports, and this run's budget stores float16" in err
    assert main(["export", str(run), "--out", str(tmp_path / "a"), "--qat-epochs", "some"]) == 2
    assert "--qat-epochs must be 'auto' or a whole number >= 0, got 'some'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
