"""`asc-search data ...` and `asc-search features`: happy paths and every bad input of the data issue, each ending
with a non-zero exit, one line naming the file (and row) and what was expected, and no half-written cache."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asc_search.cli import main


def _meta_rows(root):
    return (root / "meta.csv").read_text().splitlines()


def _clip(root, row):
    """(path, row) of the clip on meta.csv row ``row`` (header = row 1)."""
    return root / _meta_rows(root)[row - 1].split("\t")[0], row


def _fails(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _no_cache_left(parent, name="cache"):
    leftovers = [p.name for p in parent.iterdir() if p.name == name or p.name.startswith(f".{name}")]
    assert leftovers == []


def test_help_of_each_command(capsys):
    for argv in (["data", "--help"], ["data", "synth", "--help"], ["data", "info", "--help"], ["features", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        if argv[0] == "features":  # threads, not worker processes (there are none since the decode went to threads)
            assert "--profile" in text and "threads" in text and "process" not in text


def test_synth_info_features_and_reuse(tmp_path, capsys):
    root = tmp_path / "tau"
    assert main(["data", "synth", str(root), "--clips", "120", "--seed", "3"]) == 0
    assert "wrote 120 synthetic clips" in capsys.readouterr().out
    assert len(list((root / "audio").iterdir())) == 120
    assert main(["data", "info", str(root)]) == 0
    assert "120 clips" in capsys.readouterr().out
    cache = tmp_path / "cache"
    assert main(["features", str(root), "--out", str(cache), "--profile", "quick"]) == 0
    assert "wrote feature cache" in capsys.readouterr().out
    assert main(["features", str(root), "--out", str(cache), "--profile", "quick"]) == 0
    assert "reused" in capsys.readouterr().out


def test_synth_refuses_nonempty_folder_and_too_few_clips(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("x")
    _fails(capsys, ["data", "synth", str(tmp_path), "--clips", "200"], str(tmp_path), "not an empty folder")
    _fails(capsys, ["data", "synth", str(tmp_path / "new"), "--clips", "10"], "--clips must be at least 100")


def test_missing_root(tmp_path, capsys):
    _fails(capsys, ["features", str(tmp_path / "nope"), "--out", str(tmp_path / "cache")], "nope", "root not found")
    _no_cache_left(tmp_path)


def test_missing_meta(mini_tau, tmp_path, capsys):
    (mini_tau / "meta.csv").unlink()
    _fails(capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")], "meta.csv: missing")
    _no_cache_left(tmp_path)


def test_fold_file_naming_audio_absent_from_meta(mini_tau, tmp_path, capsys):
    fold = mini_tau / "evaluation_setup" / "fold1_evaluate.csv"
    row = len(fold.read_text().splitlines()) + 1
    fold.write_text(fold.read_text() + "audio/tram-x-1-0-a.wav\ttram\n")
    _fails(
        capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")],
        f"fold1_evaluate.csv row {row}", "audio/tram-x-1-0-a.wav", "not listed in meta.csv",
    )
    _no_cache_left(tmp_path)


def test_missing_wav(mini_tau, tmp_path, capsys):
    path, row = _clip(mini_tau, 4)
    path.unlink()
    _fails(capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")], path.name, f"meta.csv row {row}", "missing")
    _no_cache_left(tmp_path)


def test_empty_wav(mini_tau, tmp_path, capsys):
    path, row = _clip(mini_tau, 5)
    path.write_bytes(b"")
    _fails(capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")], path.name, f"meta.csv row {row}", "empty")
    _no_cache_left(tmp_path)


def test_wav_without_samples(mini_tau, tmp_path, capsys):
    path, row = _clip(mini_tau, 6)
    sf.write(path, np.zeros(0, dtype=np.float32), 44_100, subtype="PCM_24")
    _fails(capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")], path.name, f"meta.csv row {row}", "no samples")


def test_corrupt_wav(mini_tau, tmp_path, capsys):
    path, row = _clip(mini_tau, 13)
    path.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 10)
    _fails(
        capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")],
        path.name, f"meta.csv row {row}", "cannot be decoded as audio",
    )
    _no_cache_left(tmp_path)


def test_wrong_length(mini_tau, tmp_path, capsys):
    path, row = _clip(mini_tau, 3)
    sf.write(path, np.zeros(30_000, dtype=np.float32), 44_100, subtype="PCM_24")
    _fails(
        capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache"), "--workers", "2"],
        path.name, f"meta.csv row {row}", "0.680 s", "expected 1 s clips",
    )
    _no_cache_left(tmp_path)


def test_stereo(mini_tau, tmp_path, capsys):
    path, row = _clip(mini_tau, 2)
    sf.write(path, np.zeros((44_100, 2), dtype=np.float32), 44_100, subtype="PCM_24")
    _fails(
        capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache")],
        path.name, f"meta.csv row {row}", "2 channels", "--mono 'downmix' to average", "or give mono audio",
    )
    _no_cache_left(tmp_path)


def test_label_outside_declared_set(mini_tau, tmp_path, capsys):
    lines = _meta_rows(mini_tau)
    lines[4] = lines[4].replace("\tbus\t", "\tbeach\t").replace("\tpark\t", "\tbeach\t")
    (mini_tau / "meta.csv").write_text("\n".join(lines) + "\n")
    _fails(
        capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache"), "--labels", "park,bus"],
        "meta.csv row 5", "'beach'", "declared labels",
    )
    _no_cache_left(tmp_path)


def test_cache_of_another_profile(mini_tau, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["features", str(mini_tau), "--out", str(cache), "--profile", "quick"]) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    _fails(
        capsys, ["features", str(mini_tau), "--out", str(cache), "--profile", "dcase2023"],
        str(cache), "profile 'quick'", "'dcase2023'",
    )
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_unknown_profile(mini_tau, tmp_path, capsys):
    _fails(capsys, ["features", str(mini_tau), "--out", str(tmp_path / "cache"), "--profile", "huge"], "huge", "dcase")
    _no_cache_left(tmp_path)
