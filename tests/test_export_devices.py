"""Device-specific students: one fine-tuned model per training device within budget, the general model the fallback,
the per-device report, and devices with too few clips skipped with a message."""

import json

import pytest
import yaml

from asc_search.data.cache import load_features
from asc_search.data.tau import carve_validation
from asc_search.errors import ConfigError
from asc_search.export.devices import DeviceSettings, device_dir_name
from asc_search.export.export import export_run
from asc_search.search.space import load_space


def _train_device_counts(run):
    info = json.loads((run / "run.json").read_text())
    fs = load_features(info["cache_dir"], columns_only=True)
    table = carve_validation(fs.table, load_space(run / "search.yaml").split)
    return table.loc[table["split"] == "train", "device"].value_counts().to_dict()


@pytest.mark.slow
def test_per_device_export_writes_a_model_per_training_device_within_budget(tiny_search_run, tmp_path):
    counts = _train_device_counts(tiny_search_run)
    ordered = sorted(counts.values())
    threshold = ordered[len(ordered) // 2]  # about half the training devices have enough clips, the others not
    kept = sorted(d for d, n in counts.items() if n >= threshold)
    skipped = sorted(d for d, n in counts.items() if n < threshold)
    assert kept and skipped
    events = []
    out = tmp_path / "exp"
    summary = export_run(tiny_search_run, out, device="cpu", qat_epochs=0,
                         per_device=DeviceSettings(min_clips=threshold, epochs=1),
                         on_event=lambda e, i: events.append((e, i)))
    general = yaml.safe_load((out / "student.yaml").read_text())
    assert general["devices"] == {d: f"devices/{d}" for d in kept}
    assert sorted(p.name for p in (out / "devices").iterdir()) == kept
    for dev in kept:  # each a full export folder, its deployed graph measured within the budget
        rec = yaml.safe_load((out / "devices" / dev / "student.yaml").read_text())
        assert {"student.onnx", "student.safetensors", "report.md"} <= {p.name for p in (out / "devices" / dev).iterdir()}
        assert rec["deployed"]["within_budget"] and rec["deployed"]["weights_bytes"] <= rec["deployed"]["max_param_bytes"]
        assert rec["deployed"]["precision"] == general["deployed"]["precision"]
        assert rec["provenance"]["device"] == dev and rec["provenance"]["device_model"]["train_clips"] == counts[dev]
        assert rec["model"]["config"] == general["model"]["config"]
    warned = " ".join(i["message"] for e, i in events if e == "warning")
    for dev in skipped:  # named, with its count, and no folder
        assert f"device {dev}: {counts[dev]} training clip(s) < min_device_clips {threshold}" in warned
    report = general["device_models"]["report"]
    assert general["device_models"]["skipped"] == {d: counts[d] for d in skipped}
    per_device = report["per_device"]
    test_devices = set(general["metrics"]["test"]["per_device"])
    assert set(per_device) == test_devices
    for dev, row in per_device.items():
        assert row["general"] == general["metrics"]["test"]["per_device"][dev]["macro_accuracy"]
        if dev in kept:
            own = yaml.safe_load((out / "devices" / dev / "student.yaml").read_text())
            assert row["device_model"] == own["metrics"]["test"]["per_device"][dev]["macro_accuracy"]
        else:
            assert row["device_model"] is None
    # the unseen devices have no model: the routed system scores them exactly as the general model does
    assert report["routed"]["unseen_macro_accuracy"] == pytest.approx(general["metrics"]["test"]["unseen_macro_accuracy"])
    assert "## Device-specific models" in (out / "report.md").read_text()
    assert summary.out_dir == out and all(p.exists() for p in summary.files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_device_settings_and_ids_are_checked():
    with pytest.raises(ConfigError, match="min_device_clips must be a positive integer"):
        DeviceSettings(min_clips=0)
    with pytest.raises(ConfigError, match="device_epochs must be a positive integer"):
        DeviceSettings(epochs=0)
    with pytest.raises(ConfigError, match="cannot name a folder"):
        device_dir_name("../a")
    assert device_dir_name("s1") == "s1"


@pytest.mark.slow
def test_the_device_track_benchmark_over_seeds(tiny_search_run):
    from asc_search.bench.devices import run

    counts = _train_device_counts(tiny_search_run)
    out = run(run_dir=tiny_search_run, seeds=2, dir_p=0.6, min_device_clips=max(counts.values()), device_epochs=1)
    assert len(out["per_seed"]) == 2 and [s["seed"] for s in out["per_seed"]] == [out["per_seed"][0]["seed"],
                                                                                  out["per_seed"][0]["seed"] + 1]
    for s in out["per_seed"]:
        assert len(s["device_models"]) == 1 and len(s["skipped_devices"]) == len(counts) - 1
        # device models exist for seen devices only: the unseen devices are scored by the general model alone
        assert s["device_specific"]["unseen_macro_accuracy"] == s["no_dir"]["unseen_macro_accuracy"]
    values = [s["dir"]["unseen_macro_accuracy"] for s in out["per_seed"]]
    import statistics

    assert out["summary"]["unseen_with_dir"] == {"mean": round(statistics.fmean(values), 4),
                                                 "sd": round(statistics.stdev(values), 4)}
    assert out["dir_bank"]["source"] == "generic" and out["dir_p"] == 0.6


def test_cli_device_options_need_per_device(fake_run, tmp_path, capsys):
    from asc_search.cli import main

    run = fake_run("r")
    assert main(["export", str(run), "--out", str(tmp_path / "x"), "--min-device-clips", "10"]) == 2
    err = capsys.readouterr().err
    assert "--min-device-clips and --device-epochs go with --per-device" in err and "Traceback" not in err
    assert main(["export", str(run), "--out", str(tmp_path / "x"), "--per-device", "--min-device-clips", "0"]) == 2
    assert "--min-device-clips must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
