"""asc_search.predict and `asc-search predict`: any rate, mono/stereo, windows, CSV, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from asc_search.cli import main
from asc_search.config import DCASE_LABELS, Budget, get_profile
from asc_search.data.features import LogMel
from asc_search.deploy import run_onnx
from asc_search.errors import NotFoundError
from asc_search.export.export import write_export
from asc_search.export.predict import predict_files, windows
from asc_search.models.student import StudentConfig, build_student


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = StudentConfig(base_channels=8, n_blocks=(1, 1, 1), strides={"b2": (1, 1), "b3": (2, 2)})
    model = build_student(cfg)
    x = torch.randn(12, 1, 40, 51)
    y = torch.arange(12) % 10
    table = pd.DataFrame({"device": ["a"] * 12})
    out = tmp_path_factory.mktemp("predict") / "export"
    write_export(out, model, student_config=cfg, profile=get_profile("quick"), labels=DCASE_LABELS, budget=Budget(),
                 test_x=x, test_y=y, test_table=table, calibration_x=x, device="cpu")
    return out, model.eval()


def _tone(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    return (0.2 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def _expected(model, audio: np.ndarray, rate: int) -> np.ndarray:
    """Independent reference: the model on the log-mel of each 1 s window, probabilities averaged."""
    wins = windows(audio, rate)
    spec = LogMel(get_profile("quick"))(wins, rate).astype(np.float16).astype(np.float32)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(spec)[:, None]), 1).mean(0).numpy()


def test_window_rule():
    a = np.arange(25, dtype=np.float32)
    assert windows(a[:4], 10).shape == (1, 10) and windows(a[:4], 10)[0, 4:].sum() == 0  # padded
    assert windows(a[:20], 10).shape == (2, 10)  # exact
    assert windows(a[:24], 10).shape == (2, 10)  # tail 4 < half a clip: dropped
    w = windows(a, 10)  # tail 5 >= half: an end-aligned window
    assert w.shape == (3, 10) and w[-1].tolist() == list(range(15, 25))


def test_any_rate_stereo_and_long_files(export_dir, tmp_path):
    out, model = export_dir
    mono = _tone(22_050, 2.6)
    sf.write(tmp_path / "long22k.wav", mono, 22_050)
    sf.write(tmp_path / "stereo22k.wav", np.stack([mono, mono], axis=1), 22_050)
    sf.write(tmp_path / "short48k.wav", _tone(48_000, 0.4, seed=1), 48_000, subtype="PCM_24")
    result = predict_files(out, [tmp_path], device="cpu", precision="fp32")  # the float32 reference: exact
    rows = {r.path.name: r for r in result.rows}
    assert sorted(rows) == ["long22k.wav", "short48k.wav", "stereo22k.wav"]
    assert rows["long22k.wav"].windows == 3 and rows["short48k.wav"].windows == 1
    assert rows["stereo22k.wav"].channels == 2 and rows["stereo22k.wav"].sample_rate == 22_050
    for row in result.rows:
        p = np.array([row.probabilities[k] for k in DCASE_LABELS])
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert row.scene == DCASE_LABELS[int(p.argmax())]
    long = np.array([rows["long22k.wav"].probabilities[k] for k in DCASE_LABELS])
    assert np.allclose(long, _expected(model, mono, 22_050), atol=1e-5)
    stereo = np.array([rows["stereo22k.wav"].probabilities[k] for k in DCASE_LABELS])
    assert np.allclose(stereo, long, atol=1e-6)  # identical channels downmix to the same mono signal


def test_same_scores_as_the_feature_cache(export_dir, synth_root, quick_cache):
    """A clip of the data set predicted from its WAV gets the model's output on its cached spectrogram."""
    from asc_search.data.cache import load_features

    out, model = export_dir
    fs = load_features(quick_cache)
    row = 3
    wav = synth_root / fs.table["filename"].iloc[row]
    result = predict_files(out, [wav], device="cpu", precision="fp32")
    with torch.no_grad():
        cached = torch.softmax(model(fs.x[row : row + 1].float()), 1)[0].numpy()
    got = np.array([result.rows[0].probabilities[k] for k in DCASE_LABELS])
    assert np.allclose(got, cached, atol=1e-4)
    # by default the deployed int8 graph runs: its own output on the same spectrogram, close to the float32 one
    deployed = predict_files(out, [wav])
    ref = torch.softmax(torch.from_numpy(run_onnx(out / "student.onnx", fs.x[row : row + 1])), 1)[0].numpy()
    got = np.array([deployed.rows[0].probabilities[k] for k in DCASE_LABELS])
    assert np.allclose(got, ref, atol=1e-5) and "int8 graph student.onnx" in deployed.ran
    assert deployed.rows[0].scene in DCASE_LABELS and np.abs(got - cached).max() < 0.05


def test_cli_predict_csv(export_dir, tmp_path, capsys):
    out, _ = export_dir
    sf.write(tmp_path / "a.wav", _tone(16_000, 1.0), 16_000)
    target = tmp_path / "preds" / "p.csv"
    assert main(["predict", str(out), str(tmp_path / "a.wav"), "--csv", str(target), "--device", "cpu"]) == 0
    assert "a.wav" in capsys.readouterr().out
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["scene"] in DCASE_LABELS
    assert sum(float(rows[0][k]) for k in DCASE_LABELS) == pytest.approx(1.0, abs=1e-4)


def test_a_bad_file_is_named_and_the_good_ones_still_get_their_output(export_dir, tmp_path, capsys):
    out, _ = export_dir
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio\n")
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "good.wav", _tone(16_000, 1.0), 16_000)
    result = predict_files(out, [tmp_path], device="cpu")
    rows = {r.path.name: r for r in result.rows}
    assert sorted(rows) == ["empty.wav", "good.wav", "notes.wav"]
    assert rows["notes.wav"].error.startswith(f"{bad}: not an audio file") and rows["notes.wav"].scene == ""
    assert "empty file" in rows["empty.wav"].error
    assert rows["good.wav"].error is None and rows["good.wav"].scene in DCASE_LABELS
    assert [r.path.name for r in result.failed] == ["empty.wav", "notes.wav"]
    target = tmp_path / "p.csv"
    assert main(["predict", str(out), str(tmp_path), "--csv", str(target), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "good.wav" in captured.out and "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert lines[0].startswith("asc-search predict: error: ") and "empty.wav: empty file" in lines[0]
    assert lines[1].startswith(f"asc-search predict: error: {bad}: not an audio file")
    assert lines[2] == "asc-search predict: 2 of 3 file(s) could not be classified" and len(lines) == 3
    with open(target, newline="") as handle:
        written = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    assert written["good.wav"]["scene"] in DCASE_LABELS and written["good.wav"]["error"] == ""
    assert written["notes.wav"]["scene"] == "" and "not an audio file" in written["notes.wav"]["error"]
    with pytest.raises(NotFoundError, match="no such audio file"):
        predict_files(out, [tmp_path / "missing.wav"], device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="holds no .wav files"):
        predict_files(out, [tmp_path / "empty"], device="cpu")


def test_predict_needs_an_export(tmp_path, capsys):
    assert main(["predict", str(tmp_path), str(tmp_path)]) == 2
    assert "is not an export folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def device_export(tmp_path_factory):
    """A general export with a model of its own for device s1 (other weights), indexed as export --per-device does."""
    import yaml

    root = tmp_path_factory.mktemp("devices") / "export"
    cfg = StudentConfig(base_channels=8, n_blocks=(1, 1, 1), strides={"b2": (1, 1), "b3": (2, 2)})
    x, y = torch.randn(12, 1, 40, 51), torch.arange(12) % 10
    table = pd.DataFrame({"device": ["a", "s1"] * 6})
    for seed, out in ((0, root), (1, root / "devices" / "s1")):
        torch.manual_seed(seed)
        write_export(out, build_student(cfg), student_config=cfg, profile=get_profile("quick"), labels=DCASE_LABELS,
                     budget=Budget(), test_x=x, test_y=y, test_table=table, calibration_x=x, device="cpu")
    record = yaml.safe_load((root / "student.yaml").read_text())
    record["devices"] = {"s1": "devices/s1"}
    (root / "student.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    return root


def test_predict_routes_by_device_id_and_by_tau_file_name(device_export, tmp_path, capsys):
    from asc_search.export.predict import device_from_filename

    names = {"s1": "airport-lisbon-1000-40000-3-s1.wav", "s4": "park-paris-1010-10000-0-s4.wav", "none": "my-take.wav"}
    for i, name in enumerate(names.values()):
        sf.write(tmp_path / name, _tone(16_000, 1.0, seed=i), 16_000)
    assert device_from_filename(names["s1"]) == "s1" and device_from_filename(names["none"]) is None
    routed = {r.path.name: r for r in predict_files(device_export, [tmp_path], device="cpu").rows}
    # the reference: the general folder's model and the device folder's model, each run alone
    import shutil

    import yaml

    alone = tmp_path.parent / "general-alone"
    shutil.copytree(device_export, alone, ignore=shutil.ignore_patterns("devices"))
    rec = yaml.safe_load((alone / "student.yaml").read_text())
    rec.pop("devices")
    (alone / "student.yaml").write_text(yaml.safe_dump(rec, sort_keys=False))
    by_general = {r.path.name: r for r in predict_files(alone, [tmp_path], device="cpu").rows}
    by_s1 = {r.path.name: r for r in predict_files(device_export / "devices" / "s1", [tmp_path], device="cpu").rows}
    assert routed[names["s1"]].model == "devices/s1" and routed[names["s1"]].device == "s1"
    assert routed[names["s1"]].probabilities == by_s1[names["s1"]].probabilities
    assert routed[names["s1"]].probabilities != by_general[names["s1"]].probabilities  # really another model
    for key in ("s4", "none"):  # a device without a model, and a name without a device: the general model
        assert routed[names[key]].model == "general"
        assert routed[names[key]].probabilities == by_general[names[key]].probabilities
    assert routed[names["s4"]].device == "s4" and routed[names["none"]].device is None
    # --device-id: every file is that device's
    forced = predict_files(device_export, [tmp_path], device="cpu", device_id="s1").rows
    assert all(r.model == "devices/s1" and r.probabilities == by_s1[r.path.name].probabilities for r in forced)
    # the CLI says per file which model ran, and writes it to the CSV
    assert main(["predict", str(device_export), str(tmp_path), "--csv", str(tmp_path / "p.csv")]) == 0
    shown = capsys.readouterr().out
    assert "devices/s1" in shown and "general" in shown
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = {Path(r["file"]).name: r for r in csv.DictReader(handle)}
    assert rows[names["s1"]]["model"] == "devices/s1" and rows[names["s4"]]["model"] == "general"
    assert rows[names["s4"]]["device"] == "s4" and rows[names["none"]]["device"] == ""
