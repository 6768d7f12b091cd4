"""What `features` and `data info` do with imperfect inputs (issue 13, items 5, 6 and 10): a damaged cache is not
reused, --force rebuilds, a label typo is not silently a class, every bad clip is reported at once, stereo and long
recordings can be down-mixed and segmented on request, and `data info` checks the audio files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import write_mini_tau

from asc_search.cli import main
from asc_search.config import get_profile
from asc_search.data.audio import AudioPolicy, read_clip
from asc_search.data.cache import MANIFEST, load_features, read_manifest, verify_cache_files
from asc_search.data.features import LogMel, build_feature_cache_report
from asc_search.data.tau import label_anomalies, read_tau
from asc_search.errors import DataError

RATE = 44_100


def _clip(root, k):
    """The k-th clip of meta.csv (path) and its meta.csv row."""
    name = (root / "meta.csv").read_text().splitlines()[k].split("\t")[0]
    return root / name, k + 1


def test_a_truncated_cache_file_is_not_reused_but_rebuilt(mini_tau, tmp_path, capsys):
    out = tmp_path / "cache"
    build_feature_cache_report(mini_tau, out, "quick", rows_per_file=5)
    victim = out / "features-00001.parquet"
    victim.write_bytes(victim.read_bytes()[:-200])  # the footer is gone
    assert "not a readable Parquet file" in verify_cache_files(out, read_manifest(out))
    events = []
    report = build_feature_cache_report(mini_tau, out, "quick", rows_per_file=5,
                                        on_event=lambda e, i: events.append((e, i)))
    assert not report.reused
    warnings = [i["message"] for e, i in events if e == "warning"]
    assert len(warnings) == 1 and "features-00001.parquet: not a readable Parquet file" in warnings[0]
    assert warnings[0].endswith("rebuilding the cache")
    assert verify_cache_files(out, read_manifest(out)) is None
    assert load_features(out).x.shape[0] == 12
    # a missing file too, through the CLI
    (out / "features-00000.parquet").unlink()
    assert main(["features", str(mini_tau), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "wrote feature cache" in captured.out and "listed in the cache's manifest but missing" in captured.err


def test_force_rebuilds_an_up_to_date_cache(mini_tau, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["features", str(mini_tau), "--out", str(out)]) == 0
    capsys.readouterr()
    stamp = (out / MANIFEST).stat().st_mtime_ns
    assert main(["features", str(mini_tau), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "up to date" in said and (out / MANIFEST).stat().st_mtime_ns == stamp
    assert len(said.splitlines()) == 1 and len(said) > 100  # piped: one line, never wrapped at 80 columns
    assert main(["features", str(mini_tau), "--out", str(out), "--force"]) == 0
    assert "wrote feature cache" in capsys.readouterr().out and (out / MANIFEST).stat().st_mtime_ns != stamp
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    assert main(["features", str(mini_tau), "--out", str(foreign), "--force"]) == 2  # never a folder that is no cache
    assert (foreign / "notes.txt").read_text() == "precious"


def _typo_set(root):
    clips = [(scene, f"{city}-{loc}", device, split)
             for scene, city in (("park", "lisbon"), ("bus", "paris"))
             for loc, split in (("100", "train"), ("101", "train"), ("102", "test"))
             for device in ("a", "s4" if split == "test" else "b")]
    return write_mini_tau(root, clips + [("prak", "lisbon-103", "a", "train")])


def test_a_label_typo_is_refused_with_auto_labels(tmp_path, capsys):
    root = _typo_set(tmp_path / "tau")
    problems = label_anomalies(read_tau(root, "auto"))
    assert len(problems) == 1
    assert problems[0] == "label 'prak': 1 clip (audio/prak-lisbon-103-12-0-a.wav), only in train; did you mean 'park'?"
    assert label_anomalies(read_tau(root, "bus,park,prak")) == problems  # the same finding for declared labels
    with pytest.raises(DataError, match="meta.csv: 1 derived label"):
        build_feature_cache_report(root, tmp_path / "cache", "quick", labels="auto")
    assert not (tmp_path / "cache").exists()
    assert main(["features", str(root), "--out", str(tmp_path / "cache"), "--labels", "auto"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'park'?" in err and "with --labels a,b,c instead of 'auto'" in err and "--allow-rare-labels" in err, err
    assert err.count("\n") == 1
    kept = build_feature_cache_report(root, tmp_path / "cache", "quick", labels="auto", allow_rare_labels=True)
    assert load_features(kept.path, columns_only=True).labels == ("bus", "park", "prak")
    declared = build_feature_cache_report(root, tmp_path / "declared", "quick", labels="bus,park,prak")
    assert declared.n_clips == 13  # a label set the user declared is their choice


def test_every_bad_clip_is_reported_at_once(mini_tau, tmp_path, capsys):
    missing, row_m = _clip(mini_tau, 1)
    stereo, row_s = _clip(mini_tau, 4)
    short, row_h = _clip(mini_tau, 7)
    missing.unlink()
    sf.write(stereo, np.zeros((RATE, 2), dtype=np.float32), RATE, subtype="PCM_24")
    sf.write(short, np.zeros(RATE // 2, dtype=np.float32), RATE, subtype="PCM_24")
    assert main(["features", str(mini_tau), "--out", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert f"{missing.name}: audio file missing (meta.csv row {row_m})" in err and err.count("\n") == 1
    sf.write(missing, np.zeros(RATE, dtype=np.float32), RATE, subtype="PCM_24")
    for command in (["features", str(mini_tau), "--out", str(tmp_path / "cache")], ["data", "info", str(mini_tau)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert "error: 2 clips cannot be used: " in err and err.count("\n") == 1, err
        assert f"{stereo.name}: 2 channels (meta.csv row {row_s})" in err
        assert f"{short.name}: 0.500 s (22050 samples at 44100 Hz) (meta.csv row {row_h})" in err
    assert not (tmp_path / "cache").exists()


def test_down_mix_and_segments_on_request(mini_tau, tmp_path, capsys):
    stereo, _ = _clip(mini_tau, 1)
    long, _ = _clip(mini_tau, 2)
    rng = np.random.default_rng(0)
    pair = (0.1 * rng.standard_normal((RATE, 2))).astype(np.float32)
    sf.write(stereo, pair, RATE, subtype="FLOAT")
    recording = (0.1 * rng.standard_normal(int(3.4 * RATE))).astype(np.float32)
    sf.write(long, recording, RATE, subtype="FLOAT")
    assert main(["features", str(mini_tau), "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "--mono 'downmix' to average the channels" in err and "or pass --segment to cut recordings" in err, err

    report = build_feature_cache_report(mini_tau, tmp_path / "cache", "quick", mono="downmix", segment=True)
    fs = load_features(report.path)
    names = fs.table["filename"].tolist()
    base = str(long.relative_to(mini_tau))
    assert [n for n in names if n.startswith(base)] == [f"{base}#0", f"{base}#1", f"{base}#2"]  # 0.4 s dropped
    assert report.n_clips == 14 and fs.meta["n_recordings"] == 12 and fs.meta["audio_policy"]["segment"] is True
    logmel = LogMel(get_profile("quick"))
    second = names.index(f"{base}#1")
    expected = logmel(recording[None, RATE:2 * RATE], RATE)[0]
    np.testing.assert_allclose(fs.x[second, 0].float().numpy(), expected, atol=0.02, rtol=0.01)
    mixed = names.index(f"{stereo.relative_to(mini_tau)}#0")
    np.testing.assert_allclose(fs.x[mixed, 0].float().numpy(), logmel(pair.mean(axis=1)[None], RATE)[0],
                               atol=0.02, rtol=0.01)
    rows = fs.table.set_index("filename")
    assert (rows.loc[[f"{base}#0", f"{base}#2"], "identifier"].nunique()) == 1  # a recording's segments stay together
    samples, _ = read_clip(long, policy=AudioPolicy(segment=True), segment=2)
    np.testing.assert_array_equal(samples, recording[2 * RATE:3 * RATE])


def test_data_info_checks_the_audio_and_flags_rare_labels(tmp_path, capsys):
    root = _typo_set(tmp_path / "tau")
    assert main(["data", "info", str(root), "--labels", "auto"]) == 0
    out = capsys.readouterr().out
    assert "audio: every file decodes; sample rates 44,100 Hz; channels 1; 1 s each" in out
    assert "warning: label 'prak': 1 clip" in out
    missing, row = _clip(root, 3)
    missing.unlink()
    assert main(["data", "info", str(root), "--labels", "auto"]) == 2
    assert f"audio file missing (meta.csv row {row})" in capsys.readouterr().err


def test_label_anomalies_on_a_cache_table():
    table = pd.DataFrame({"filename": [f"f{i}.wav" for i in range(9)],
                          "scene_label": ["bus"] * 4 + ["tram"] * 4 + ["trma"],
                          "split": ["train", "train", "test", "val"] * 2 + ["test"]})
    assert label_anomalies(table) == ["label 'trma': 1 clip (f8.wav), only in test; did you mean 'tram'?"]
