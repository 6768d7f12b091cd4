"""asc_search.export (export.py, folder.py, load.py): the export folder (yaml, safetensors, ONNX, report), its budget
re-check, its refusal to overwrite, loading it back; and `asc-search export` on a real tiny search run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from asc_search.config import DCASE_LABELS, Budget, get_profile
from asc_search.errors import BudgetError, ConfigError, DataError, NotFoundError
from asc_search.export.export import write_export
from asc_search.export.folder import ONNX_FILE, ONNX_FP32_FILE, REPORT_FILE, STUDENT_YAML, WEIGHTS_FILE
from asc_search.export.load import load_export
from asc_search.models.student import StudentConfig, build_student


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    cfg = StudentConfig(base_channels=8, n_blocks=(1, 1, 1), strides={"b2": (1, 1), "b3": (2, 2)})
    model = build_student(cfg)
    x = torch.randn(24, 1, 40, 51).half()
    y = torch.arange(24) % 10
    table = pd.DataFrame({"device": ["a", "b", "s1", "s4", "s5", "s6"] * 4, "label": y.numpy()})
    return cfg, model, x, y, table


def _write(out, force=False, budget=None, **kw):
    cfg, model, x, y, table = _tiny()
    return cfg, model, x, write_export(
        out, model, student_config=cfg, profile=get_profile("quick"), labels=DCASE_LABELS,
        budget=budget or Budget(), test_x=x, test_y=y, test_table=table, calibration_x=x, force=force,
        provenance={"run": "r", "trial_id": "t7"}, device="cpu", **kw,
    )


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One export folder shared by the read-only tests of this module."""
    out = tmp_path_factory.mktemp("export") / "export"
    return (out, *_write(out))


def test_export_folder_round_trip(written):
    out, cfg, model, x, summary = written
    assert sorted(p.name for p in out.iterdir()) == sorted([STUDENT_YAML, WEIGHTS_FILE, ONNX_FILE, ONNX_FP32_FILE,
                                                            REPORT_FILE])
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    assert record["model"]["config"] == cfg.to_dict()
    assert record["model"]["input_shape"] == [1, 1, 40, 51]
    assert record["complexity"]["passed"] is True and record["complexity"]["params"] == sum(
        p.numel() for p in model.parameters()
    )
    test = record["metrics"]["test_fp32"]
    # the float32 score written is the model's score on the test clips given (recomputed independently here)
    with torch.no_grad():
        pred = model.eval()(x.float()).argmax(1)
    y = torch.arange(24) % 10
    per_class = [(pred[y == k] == k).float().mean().item() for k in range(10)]
    assert test["macro_accuracy"] == pytest.approx(float(np.mean(per_class)))
    assert test["per_device"]["s4"]["seen"] is False and test["per_device"]["a"]["seen"] is True
    assert summary.onnx_max_abs_diff < 1e-4
    assert "trial t7 of run r" in (out / REPORT_FILE).read_text()
    # loading gives the same function
    loaded = load_export(out)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x.float()), model(x.float()), atol=1e-6)
    assert loaded.labels == DCASE_LABELS and loaded.profile.name == "quick"
    # the weights load with weights_only semantics (safetensors: tensors only, no pickle)
    from safetensors.torch import load_file

    assert set(load_file(str(out / WEIGHTS_FILE))) == set(model.state_dict())


def test_refuses_existing_folder_without_force(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists; replace it with force"):
        _write(out)
    assert (out / "keep.txt").read_text() == "mine"  # untouched
    _write(out, force=True)
    assert not (out / "keep.txt").exists() and (out / STUDENT_YAML).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_over_budget_model_is_refused_and_nothing_written(tmp_path):
    out = tmp_path / "export"
    with pytest.raises(BudgetError, match="over budget.*macs"):
        _write(out, budget=Budget(max_param_bytes=128_000, param_dtype="int8", max_macs=1000))
    assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_load_export_bad_folders(written, tmp_path):
    import shutil

    with pytest.raises(NotFoundError, match="does not exist"):
        load_export(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no student.yaml"):
        load_export(tmp_path / "empty")
    out = tmp_path / "export"
    shutil.copytree(written[0], out)
    (out / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_export(out)
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    for key, value, message in (("format", 99, "export format 99; this asc-search reads 1 and 2"),
                                ("deployed", None, "lacks its deployed: block"),
                                ("kind", "other", "not an asc-search student description")):
        (out / STUDENT_YAML).write_text(yaml.safe_dump({**record, key: value}))
        with pytest.raises(DataError, match=message):
            load_export(out)


# ------------------------------------------------------------------------------------------------ a real run


@pytest.mark.slow
def test_export_run_best_trial(tiny_search_run, tmp_path):
    import hashlib
    import json

    from asc_search.export.export import export_run
    from asc_search.search.runfolder import best_trial, load_trials, run_budget

    best = best_trial(load_trials(tiny_search_run), run_budget(tiny_search_run))
    out = tmp_path / "best"
    summary = export_run(tiny_search_run, out, device="cpu")
    assert summary.trial_id == str(best["trial_id"]) and not summary.retrained
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    # the exported weights are the trial's best checkpoint (unless auto QAT ran and its fine-tuning validated better:
    # whether PTQ loses more than a point depends on the trial the shared tiny run happened to pick)
    ckpt = torch.load(tiny_search_run / best["checkpoint_path"] / "best.pt", weights_only=True)
    loaded = load_export(out)
    from_checkpoint = yaml.safe_load((out / STUDENT_YAML).read_text())["deployed"]["qat"]["chosen"] == "int8_ptq"
    same = [torch.equal(loaded.model.state_dict()[key], value) for key, value in ckpt["best_state"].items()]
    assert all(same) if from_checkpoint else not all(same)
    # its cost is the one the search recorded, within the run's budget
    assert record["complexity"]["macs"] == int(best["macs"]) and record["complexity"]["passed"]
    assert record["complexity"]["limits"]["max_macs"] == 2_000_000
    # provenance ties it to the run's inputs
    info = json.loads((tiny_search_run / "run.json").read_text())
    prov = record["provenance"]
    assert prov["feature_fingerprint"] == info["feature_fingerprint"]
    assert prov["teacher_fingerprints"] == info["teacher_fingerprint"]
    assert prov["search_file_sha256"] == hashlib.sha256((tiny_search_run / "search.yaml").read_bytes()).hexdigest()
    # scored on the test split only: clip count = the cache's test rows
    from asc_search.data.cache import load_features

    fs = load_features(info["cache_dir"], columns_only=True)
    assert record["metrics"]["test"]["n"] == int((fs.table["split"] == "test").sum())
    assert record["metrics"]["validation"]["val_macro_accuracy"] == pytest.approx(float(best["val_macro_accuracy"]))
    assert set(record["metrics"]["test"]["per_device"]) >= {"s4", "s5", "s6"}
    # the run's budget is int8: the deployed graph is, and QAT ran only if post-training quantisation lost > 1 point
    dep = record["deployed"]
    assert dep["precision"] == "int8" and dep["weights_bytes"] <= 24_000
    assert dep["qat"]["mode"] == "auto" and dep["qat"]["ran"] == (dep["qat"]["ptq_val_loss"] > 0.01)
    assert record["metrics"]["validation_split"]["deployed"]["n"] == info["n_val"]  # the search's validation part


@pytest.mark.slow
def test_cli_export_named_trial_retrain_and_refusals(tiny_search_run, tmp_path, capsys):
    from asc_search.cli import main
    from asc_search.search.runfolder import load_trials, ranked_trials

    other = ranked_trials(load_trials(tiny_search_run)).iloc[-1]["trial_id"]
    out = tmp_path / "named"
    assert main(["export", str(tiny_search_run), "--out", str(out), "--trial", str(other), "--retrain",
                 "--device", "cpu"]) == 0
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    assert record["provenance"]["trial_id"] == str(other) and record["provenance"]["retrained"] is True
    assert "test macro accuracy" in capsys.readouterr().out
    # an existing folder is refused, naming it, and left as it was
    before = (out / STUDENT_YAML).read_bytes()
    assert main(["export", str(tiny_search_run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"export folder {out} already exists; replace it with --force" in err and "Traceback" not in err
    assert (out / STUDENT_YAML).read_bytes() == before
    # a trial that does not exist
    assert main(["export", str(tiny_search_run), "--out", str(tmp_path / "x"), "--trial", "999"]) == 2
    assert "no trial '999'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_export_bad_runs(fake_run, tmp_path, capsys):
    from asc_search.cli import main

    run = fake_run(name="stopped", n=20, completed=False)
    assert main(["export", "stopped", "--results-dir", str(run.parent), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "no completed trial" in err and "Traceback" not in err
    assert main(["export", "nope", "--results-dir", str(run.parent), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "no search run named 'nope'" in err and "runs there: stopped" in err
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_export_without_its_checkpoint_says_retrain(tiny_search_run, tmp_path):
    import shutil

    from asc_search.export.export import export_run

    run = tmp_path / "moved"
    shutil.copytree(tiny_search_run, run, ignore=shutil.ignore_patterns("ray"))  # the Ray experiment is gone
    with pytest.raises(NotFoundError, match="is gone.*retrain") as info:
        export_run(run, tmp_path / "out", device="cpu")
    assert info.value.params == ("retrain",)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_export_seeds_reports_test_accuracy_over_seeds(tiny_search_run, tmp_path, capsys):
    from asc_search.cli import main

    out = tmp_path / "seeds"
    assert main(["export", str(tiny_search_run), "--out", str(out), "--seeds", "2", "--threads", "1",
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    record = yaml.safe_load((out / STUDENT_YAML).read_text())
    seeds = record["seeds"]
    trial_seed = record["training"]["seed"]
    assert seeds["seeds"] == [trial_seed, trial_seed + 1] and len(seeds["runs"]) == 2
    values = np.array([r["test_macro_accuracy"] for r in seeds["runs"]])
    assert seeds["test_macro_accuracy"]["mean"] == pytest.approx(values.mean())
    assert seeds["test_macro_accuracy"]["sd"] == pytest.approx(values.std(ddof=1))
    assert all(r["epochs"] == record["training"]["epochs"] for r in seeds["runs"])
    # the exported weights stay the search's own (the checkpoint), and the report says so
    assert "search's own run of trial" in seeds["weights"] and record["provenance"]["retrained"] is False
    assert f"Over 2 seeds ({trial_seed}, {trial_seed + 1})" in (out / REPORT_FILE).read_text()
    assert "test macro accuracy over 2 seeds" in printed and " ± " in printed
