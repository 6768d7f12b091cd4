"""Built-in synthetic data: exact TAU layout, split/device structure, determinism, and sound that depends on scene
and device."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from asc_search.config import DCASE_LABELS, SEEN_DEVICES, UNSEEN_DEVICES
from asc_search.data.synth import CITIES, plan_dataset, synthesize
from asc_search.errors import ConfigError, DataError

NAME = re.compile(r"^audio/([a-z_]+)-([a-z]+)-(\d+)-(\d+)-(\d)-(a|b|c|s[1-6])\.wav$")


def _tsv(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_exact_tau_layout(synth_root):
    from conftest import TINY_CLIPS

    assert (synth_root / "meta.csv").read_text().splitlines()[0] == "filename\tscene_label\tidentifier\tsource_label"
    setup = synth_root / "evaluation_setup"
    assert (setup / "fold1_train.csv").read_text().splitlines()[0] == "filename\tscene_label"
    assert (setup / "fold1_evaluate.csv").read_text().splitlines()[0] == "filename\tscene_label"
    assert (setup / "fold1_test.csv").read_text().splitlines()[0] == "filename"
    meta = _tsv(synth_root / "meta.csv")
    assert len(meta) == TINY_CLIPS == len(list((synth_root / "audio").iterdir()))
    for row in meta.itertuples():
        match = NAME.match(row.filename)
        assert match, row.filename
        scene, city, location, _, _, device = match.groups()
        assert (scene, f"{city}-{location}", device) == (row.scene_label, row.identifier, row.source_label)
    evaluate = _tsv(setup / "fold1_evaluate.csv")
    assert _tsv(setup / "fold1_test.csv")["filename"].tolist() == evaluate["filename"].tolist()
    assert len(_tsv(setup / "fold1_train.csv")) + len(evaluate) == len(meta)
    for name in meta["filename"].iloc[[0, 123, -1]]:
        info = sf.info(synth_root / name)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (44_100, 1, 44_100, "PCM_24")


def test_nested_training_subsets_of_whole_recordings(synth_root):
    train = _tsv(synth_root / "evaluation_setup" / "fold1_train.csv")
    subsets = {p: _tsv(synth_root / "split_setup" / f"split{p}.csv") for p in (5, 10, 25, 50, 100)}
    assert set(subsets[100]["filename"]) == set(train["filename"])
    previous: set = set()
    for pct, frame in subsets.items():
        names = set(frame["filename"])
        assert previous <= names and pct / 100 <= len(names) / len(train) < pct / 100 + 0.1, pct  # nested, ~pct %
        previous = names
        recording = frame["filename"].str.rsplit("-", n=2).str[0]  # every clip of a recording, or none
        all_of = train["filename"].str.rsplit("-", n=2).str[0]
        assert (all_of.isin(set(recording)) == train["filename"].isin(names)).all()


def test_splits_devices_scenes_and_locations(synth_root):
    meta = _tsv(synth_root / "meta.csv")
    train_names = set(_tsv(synth_root / "evaluation_setup" / "fold1_train.csv")["filename"])
    meta["split"] = np.where(meta["filename"].isin(train_names), "train", "test")
    train, test = meta[meta["split"] == "train"], meta[meta["split"] == "test"]
    assert set(train["source_label"]) == set(SEEN_DEVICES)
    assert set(test["source_label"]) == set(SEEN_DEVICES + UNSEEN_DEVICES)
    counts = train["source_label"].value_counts()
    assert counts.idxmax() == "a" and counts["a"] > 0.5 * len(train)
    assert set(train["scene_label"]) == set(test["scene_label"]) == set(DCASE_LABELS)
    assert not set(train["identifier"]) & set(test["identifier"])  # split by recording location
    assert meta["identifier"].str.split("-").str[0].nunique() >= 4
    assert set(meta["identifier"].str.split("-").str[0]) <= set(CITIES)
    # every scene has several train locations (a validation split can be carved by location)
    assert train.groupby("scene_label")["identifier"].nunique().min() >= 3
    # several devices record the same moment, as in TAU
    moments = meta["filename"].str.rsplit("-", n=1).str[0]
    assert moments.duplicated().any()


def test_plan_counts_scale():
    moments, clips = plan_dataset(2000, seed=0)
    assert len(clips) == 2000
    splits = np.array([moments[i]["split"] for i, _ in clips])
    devices = np.array([d for _, d in clips])
    assert abs((splits == "test").mean() - 0.25) < 0.01
    assert 0.55 < (devices[splits == "train"] == "a").mean() < 0.7
    assert not np.isin(devices[splits == "train"], UNSEEN_DEVICES).any()


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    events = {1: [], 2: []}
    a = synthesize(tmp_path / "a", n_clips=100, seed=5, workers=1, on_event=lambda e, i: events[1].append(i))
    b = synthesize(tmp_path / "b", n_clips=100, seed=5, workers=2,  # worker count does not matter
                   on_event=lambda e, i: events[2].append(i))
    for seen in events.values():  # progress counts clips, from 0 to all of them, whatever the workers
        assert seen[0]["done"] == 0 and seen[-1]["done"] == seen[-1]["total"] == 100
    c = synthesize(tmp_path / "c", n_clips=100, seed=6, workers=1)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="at least 100"):
        synthesize(tmp_path / "x", n_clips=20)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(DataError, match="not an empty folder"):
        synthesize(tmp_path / "full", n_clips=100)
    assert not (tmp_path / "x").exists()


def _power_spectra(root, names):
    spectra = []
    for name in names:
        x, rate = sf.read(root / name, dtype="float32")
        spectra.append(np.abs(np.fft.rfft(x)) ** 2)
    return np.fft.rfftfreq(44_100, 1 / 44_100), np.array(spectra)


def test_devices_change_the_sound(synth_root):
    meta = _tsv(synth_root / "meta.csv")
    high, low = {}, {}
    for device in ("a", "s4", "s5"):
        names = meta.loc[meta["source_label"] == device, "filename"].head(12)
        freqs, spec = _power_spectra(synth_root, names)
        high[device] = float(np.mean(spec[:, freqs > 6000].sum(1) / spec.sum(1)))
        low[device] = float(np.mean(spec[:, freqs < 150].sum(1) / spec.sum(1)))
    assert high["s5"] < 0.5 * high["a"]  # s5: narrow band (low-pass near 4 kHz), despite its clipping harmonics
    assert low["s4"] < 0.1 * low["a"]  # s4: strong high-pass (~420 Hz)

    def flat_tops(device):  # share of samples sitting at the clip's peak level (hard clipping)
        names = meta.loc[meta["source_label"] == device, "filename"].head(12)
        return np.array([np.mean(np.abs(x) >= np.abs(x).max() - 1e-6) for x in (sf.read(synth_root / n)[0] for n in names)])

    assert np.mean(flat_tops("s5") > 0.001) >= 0.5  # s5 clips hard
    assert np.all(flat_tops("a") < 0.001)
    # the same moment through two devices: same scene, different signal
    stems = meta["filename"].str.rsplit("-", n=1).str[0]
    pair = meta[stems.duplicated(keep=False)].groupby(stems)["filename"].apply(list).iloc[0][:2]
    x0, _ = sf.read(synth_root / pair[0])
    x1, _ = sf.read(synth_root / pair[1])
    assert not np.allclose(x0, x1)


def test_scenes_differ_in_level_and_colour(synth_root):
    meta = _tsv(synth_root / "meta.csv")
    a = meta[meta["source_label"] == "a"]
    level = {}
    for scene in ("park", "metro"):
        names = a.loc[a["scene_label"] == scene, "filename"].head(10)
        level[scene] = np.mean([10 * np.log10(np.mean(sf.read(synth_root / n)[0] ** 2)) for n in names])
    assert level["metro"] - level["park"] > 6  # quiet park, loud metro car


def test_learnable_but_not_trivial(quick_cache):
    """A nearest-centroid rule on band means/stds separates the scenes well above chance (10 %) but is far from
    perfect: scenes differ in their spectra, and they overlap."""
    from asc_search.data.cache import load_features

    fs = load_features(quick_cache)
    x = fs.x.float().numpy()[:, 0]
    feats = np.concatenate([x.mean(axis=2), x.std(axis=2)], axis=1)
    train = (fs.table["split"] == "train").to_numpy()
    y = fs.table["label"].to_numpy()
    mu, sd = feats[train].mean(0), feats[train].std(0) + 1e-6
    feats = (feats - mu) / sd
    centroids = np.stack([feats[train & (y == k)].mean(0) for k in range(10)])
    pred = ((feats[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    train_acc = (pred[train] == y[train]).mean()
    assert 0.3 < train_acc < 0.95
