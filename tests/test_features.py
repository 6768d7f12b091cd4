"""The log-mel feature cache: contents, alignment, provenance, reuse, resampling and the length policy."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from asc_search import __version__
from asc_search.config import get_profile
from asc_search.data.cache import MANIFEST, legacy_layout_hint, load_features, read_parquet_metadata
from asc_search.data.features import LogMel, build_feature_cache, build_feature_cache_report, read_clip
from asc_search.errors import CacheError, DataError


def test_quick_cache_records_what_produced_it(quick_cache, synth_root):
    manifest = json.loads((quick_cache / MANIFEST).read_text())
    assert manifest["profile"] == get_profile("quick").to_dict()
    assert manifest["shape"] == [1, 40, 51] and manifest["dtype"] == "float16"
    assert manifest["asc_search_version"] == __version__
    assert manifest["n_clips"] == sum(f["rows"] for f in manifest["files"])
    assert manifest["counts"]["split"]["train"] > manifest["counts"]["split"]["test"] > 0
    assert not (quick_cache / "manifest.json").exists()  # the older name: Parquet readers would trip over it
    for entry in manifest["files"]:
        meta = read_parquet_metadata(quick_cache / entry["name"])
        assert meta["fingerprint"] == manifest["fingerprint"] and meta["profile"]["name"] == "quick"
        assert meta["labels"] == manifest["labels"]
        schema = pq.read_schema(quick_cache / entry["name"])
        assert str(schema.field("x").type) == "fixed_size_list<element: halffloat>[2040]"


def test_rows_hold_the_log_mel_of_their_own_clip(quick_cache, synth_root):
    fs = load_features(quick_cache)
    logmel = LogMel(fs.profile)
    for i in (0, len(fs.table) // 2, len(fs.table) - 1):
        audio, rate = read_clip(synth_root / fs.table["filename"].iat[i])
        expected = logmel(audio[None], rate)[0]
        np.testing.assert_allclose(fs.x[i, 0].float().numpy(), expected, atol=0.02, rtol=0.01)
    # clips differ, so rows differ (a row-order bug would show up above, a constant output here)
    assert not torch.equal(fs.x[0], fs.x[1])


def test_reuse_when_unchanged_rebuild_when_changed(mini_tau, tmp_path):
    out = tmp_path / "cache"
    first = build_feature_cache_report(mini_tau, out, "quick")
    assert not first.reused and first.n_clips == 12
    stamp = (out / MANIFEST).stat().st_mtime_ns
    again = build_feature_cache_report(mini_tau, out, "quick")
    assert again.reused and again.fingerprint == first.fingerprint
    assert (out / MANIFEST).stat().st_mtime_ns == stamp
    # new audio content -> new fingerprint, rebuilt in place
    clip = next((mini_tau / "audio").iterdir())
    sf.write(clip, np.zeros(44_100, dtype=np.float32), 44_100, subtype="PCM_24")
    os.utime(clip, ns=(stamp + 10**9, stamp + 10**9))
    third = build_feature_cache_report(mini_tau, out, "quick")
    assert not third.reused and third.fingerprint != first.fingerprint
    assert load_features(out).fingerprint == third.fingerprint
    # other labels are another cache too
    assert build_feature_cache_report(mini_tau, out, "quick", labels="auto").fingerprint != third.fingerprint


def test_other_profile_or_foreign_folder_is_refused(mini_tau, tmp_path):
    out = build_feature_cache(mini_tau, tmp_path / "cache", "quick")
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(CacheError, match="holds a feature cache of profile 'quick'.*asked for profile 'dcase2023'"):
        build_feature_cache(mini_tau, out, "dcase2023")
    assert sorted(p.name for p in out.iterdir()) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(CacheError, match="holds no feature cache"):
        build_feature_cache(mini_tau, foreign, "quick")
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_failed_build_leaves_nothing(mini_tau, tmp_path):
    lines = (mini_tau / "meta.csv").read_text().splitlines()
    row = 9
    victim = mini_tau / lines[row - 1].split("\t")[0]
    victim.write_bytes(b"RIFF....WAVEfmt garbage")
    with pytest.raises(DataError, match=f"{victim.name}: cannot be decoded as audio \\(meta.csv row {row}\\)"):
        build_feature_cache(mini_tau, tmp_path / "cache", "quick", rows_per_file=4)
    assert list(tmp_path.iterdir()) == [mini_tau]


def test_several_files_and_threads_give_the_same_cache(mini_tau, tmp_path):
    one = load_features(build_feature_cache(mini_tau, tmp_path / "one", "quick", workers=1))
    many = load_features(build_feature_cache(mini_tau, tmp_path / "many", "quick", workers=2, rows_per_file=5))
    assert len(many.meta["files"]) == 3
    assert torch.equal(one.x, many.x)
    assert one.table.equals(many.table)
    assert one.fingerprint == many.fingerprint


@pytest.mark.parametrize("name", ["quick", "dcase", "dcase2023"])
def test_log_mel_equals_torchaudio_mel_spectrogram(name):
    import torchaudio

    profile = get_profile(name)
    audio = np.random.default_rng(1).standard_normal((2, profile.n_samples)).astype(np.float32) * 0.1
    window = torch.hann_window if profile.window == "hann" else torch.hamming_window
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=profile.sample_rate, n_fft=profile.n_fft, win_length=profile.win_length,
        hop_length=profile.hop_length, n_mels=profile.n_mels, window_fn=window, power=2.0,
    )(torch.from_numpy(audio))
    ours = LogMel(profile)(audio, profile.sample_rate)
    assert ours.shape == (2, *profile.shape)
    np.testing.assert_allclose(ours, torch.log(reference + 1e-5).numpy(), atol=1e-3, rtol=1e-4)


def test_resampling_when_the_file_rate_differs(tmp_path):
    t = np.arange(48_000) / 48_000
    tone = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    sf.write(tmp_path / "a.wav", tone, 48_000, subtype="PCM_24")
    profile = get_profile("quick")
    audio, rate = read_clip(tmp_path / "a.wav")
    assert rate == 48_000 and audio.shape == (48_000,)
    spec = LogMel(profile)(audio[None], rate)
    assert spec.shape == (1, 40, 51)
    native = LogMel(profile)(np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000)[None] * 0.3, 16_000)
    peak = spec[0].mean(axis=1).argmax()
    assert peak == native[0].mean(axis=1).argmax()
    assert abs(spec[0, peak].mean() - native[0, peak].mean()) < 0.5


def test_length_policy(tmp_path):
    rate = 44_100
    sf.write(tmp_path / "short_ok.wav", np.ones(rate - 200, dtype=np.float32) * 0.1, rate, subtype="PCM_24")
    sf.write(tmp_path / "long_ok.wav", np.ones(rate + 300, dtype=np.float32) * 0.1, rate, subtype="PCM_24")
    sf.write(tmp_path / "short.wav", np.ones(rate // 2, dtype=np.float32) * 0.1, rate, subtype="PCM_24")
    audio, _ = read_clip(tmp_path / "short_ok.wav")
    assert audio.shape == (rate,) and audio[-1] == 0.0 and audio[0] != 0.0  # zero-padded at the end
    assert read_clip(tmp_path / "long_ok.wav")[0].shape == (rate,)  # trimmed at the end
    with pytest.raises(DataError, match=r"short.wav: 0.500 s \(22050 samples at 44100 Hz\).*expected 1 s clips"):
        read_clip(tmp_path / "short.wav")


def test_any_parquet_reader_opens_the_cache_as_one_table(quick_cache):
    import pandas as pd
    import pyarrow.dataset as ds

    fs = load_features(quick_cache)
    frame = pd.read_parquet(quick_cache)
    assert list(frame["filename"]) == list(fs.table["filename"]) and len(frame) == len(fs.table)
    assert frame["label"].tolist() == fs.table["label"].tolist()
    row = np.asarray(frame["x"].iat[7], dtype=np.float32).reshape(1, 40, 51)
    np.testing.assert_array_equal(row, fs.x[7].float().numpy())
    dataset = ds.dataset(quick_cache)
    assert sorted(dataset.files) == sorted(str(quick_cache / f["name"]) for f in fs.meta["files"])
    table = dataset.to_table(columns=["filename", "device"])
    assert table.num_rows == len(fs.table)
    assert json.loads(dataset.schema.metadata[b"asc_search"])["fingerprint"] == fs.fingerprint
    try:
        import duckdb
    except ImportError:  # not a dependency: checked where it is installed
        return
    n = duckdb.sql(f"select count(*) from read_parquet('{quick_cache}/*.parquet')").fetchone()[0]
    assert n == len(fs.table)


def test_a_cache_of_the_older_layout_still_loads_and_says_how_to_migrate(quick_cache, tmp_path):
    old = tmp_path / "cache"
    shutil.copytree(quick_cache, old)
    (old / MANIFEST).rename(old / "manifest.json")
    (old / "teacher").mkdir()  # where the older layout kept the teacher cache
    assert legacy_layout_hint(quick_cache) is None
    fs = load_features(old)
    assert fs.fingerprint == load_features(quick_cache, columns_only=True).fingerprint
    assert torch.equal(fs.x[:5], load_features(quick_cache).x[:5])
    hint = legacy_layout_hint(old)
    assert f"mv {old / 'manifest.json'} {old / MANIFEST}" in hint and f"mv {old / 'teacher'} {tmp_path / 'cache-teacher'}" in hint
    assert "\n" not in hint
    # the migration it names gives the current layout, which loads the same
    (old / "manifest.json").rename(old / MANIFEST)
    (old / "teacher").rename(tmp_path / "cache-teacher")
    assert legacy_layout_hint(old) is None and load_features(old).fingerprint == fs.fingerprint


def test_reusing_an_older_layout_cache_warns_with_the_migration(mini_tau, tmp_path):
    out = build_feature_cache(mini_tau, tmp_path / "cache", "quick")
    (out / MANIFEST).rename(out / "manifest.json")
    events = []
    report = build_feature_cache_report(mini_tau, out, "quick", on_event=lambda e, i: events.append((e, i)))
    assert report.reused
    warnings = [i["message"] for e, i in events if e == "warning"]
    assert len(warnings) == 1 and "older layout" in warnings[0] and "_manifest.json" in warnings[0]


@pytest.mark.slow
def test_benchmark_runs_on_a_small_set(tmp_path):
    from asc_search.bench.features import run

    result = run(n_clips=120, workers=1, workdir=tmp_path)
    # the figures describe what is on disk: 120 clips synthesised, two caches of 120 rows, their real sizes
    assert len(list((tmp_path / "tau" / "audio").glob("*.wav"))) == 120
    for profile in ("dcase", "quick"):
        entry = result[profile]
        cache = tmp_path / f"cache-{profile}"
        files = sorted(cache.glob("features-*.parquet"))
        assert entry["files"] == len(files) and entry["cache_bytes"] == sum(p.stat().st_size for p in files)
        assert load_features(cache, columns_only=True).meta["n_clips"] == 120
        assert entry["clips_per_s"] == pytest.approx(120 / entry["seconds"], rel=0.05)
    assert result["dcase"]["tensor_shape"] == [120, 1, 256, 65] and result["dcase"]["tensor_dtype"] == "float16"
    assert result["dcase"]["reused"] is True
    # the dcase spectrograms are 256 x 65 float16, the quick ones 40 x 51: about 8x the bytes per clip
    ratio = result["dcase"]["cache_bytes_per_1000_clips"] / result["quick"]["cache_bytes_per_1000_clips"]
    assert 4 < ratio < 12, ratio
    assert result["synth"]["clips_per_s"] == pytest.approx(120 / result["synth"]["seconds"], rel=0.05)


def test_changed_definition_of_the_same_profile_rebuilds(mini_tau, tmp_path):
    import dataclasses

    out = build_feature_cache(mini_tau, tmp_path / "cache", "quick")
    narrower = dataclasses.replace(get_profile("quick"), n_mels=32)
    report = build_feature_cache_report(mini_tau, out, narrower)
    assert not report.reused
    assert load_features(out).x.shape[2] == 32
