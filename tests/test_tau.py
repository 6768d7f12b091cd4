"""The TAU reader: table, labels, validation carving, DCASE 2024 subsets, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from asc_search.config import DCASE_LABELS, SplitConfig
from asc_search.data.tau import TABLE_COLUMNS, carve_validation, read_tau, resolve_labels, select_subset
from asc_search.errors import ConfigError, DataError


def test_read_tau_on_synthetic_data(synth_root):
    table = read_tau(synth_root)
    assert tuple(table.columns) == (*TABLE_COLUMNS, "subset_pct")  # the synthetic set has DCASE 2024 subset files
    assert table.attrs["labels"] == DCASE_LABELS
    assert set(table["split"]) == {"train", "test"}
    assert (table["label"] == table["scene_label"].map(DCASE_LABELS.index)).all()
    assert (table["identifier"] == table["city"] + "-" + table["location"]).all()
    first = table.iloc[0]
    # the device and the identifier come from meta.csv and agree with the TAU file-name pattern
    stem = first["filename"].removeprefix("audio/").removesuffix(".wav").split("-")
    assert stem[0] == first["scene_label"] and stem[-1] == first["device"] and "-".join(stem[1:3]) == first["identifier"]


def _rewrite(path, edit):
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def test_labels_default_declared_and_derived(mini_tau):
    assert resolve_labels() == DCASE_LABELS
    assert resolve_labels("auto", ["b", "a", "b"]) == ("a", "b")
    assert resolve_labels("x, y") == ("x", "y")
    default = read_tau(mini_tau)
    assert (default.loc[default["scene_label"] == "bus", "label"] == DCASE_LABELS.index("bus")).all()
    table = read_tau(mini_tau, labels="auto")
    assert table.attrs["labels"] == ("bus", "park")
    assert set(table["label"]) == {0, 1}
    declared = read_tau(mini_tau, labels=["park", "bus", "other"])
    assert (declared.loc[declared["scene_label"] == "park", "label"] == 0).all()
    with pytest.raises(ConfigError, match="repeated: a"):
        resolve_labels(["a", "a", "b"])


def test_label_outside_declared_set(mini_tau):
    _rewrite(mini_tau / "meta.csv", lambda ls: [ls[0], ls[1].replace("\tpark\t", "\tforest\t")] + ls[2:])
    with pytest.raises(DataError, match=r"meta.csv row 2: scene_label 'forest' is not one of the 10 DCASE scenes"):
        read_tau(mini_tau)
    with pytest.raises(DataError, match="'forest' is not one of the declared labels"):
        read_tau(mini_tau, labels="park,bus")


def test_missing_root_and_meta(tmp_path, mini_tau):
    with pytest.raises(DataError, match="data set root not found"):
        read_tau(tmp_path / "nowhere")
    (mini_tau / "meta.csv").unlink()
    with pytest.raises(DataError, match=r"meta.csv: missing; expected the TAU meta.csv"):
        read_tau(mini_tau)


def test_meta_with_wrong_header(mini_tau):
    _rewrite(mini_tau / "meta.csv", lambda ls: ["filename,scene_label,identifier,source_label"] + ls[1:])
    with pytest.raises(DataError, match="missing column"):
        read_tau(mini_tau)


def test_fold_file_naming_audio_absent_from_meta(mini_tau):
    fold = mini_tau / "evaluation_setup" / "fold1_train.csv"
    _rewrite(fold, lambda ls: ls[:2] + ["audio/ghost-x-1-0-a.wav\tpark"] + ls[2:])
    with pytest.raises(DataError, match=r"fold1_train.csv row 3: 'audio/ghost-x-1-0-a.wav' is not listed in meta.csv"):
        read_tau(mini_tau)


def test_fold_label_disagreeing_with_meta(mini_tau):
    fold = mini_tau / "evaluation_setup" / "fold1_evaluate.csv"
    _rewrite(fold, lambda ls: [ls[0], ls[1].rsplit("\t", 1)[0] + "\tmetro"] + ls[2:])
    with pytest.raises(DataError, match="fold1_evaluate.csv row 2: scene_label 'metro'.*disagrees with meta.csv"):
        read_tau(mini_tau)


def test_clip_in_train_and_test(mini_tau):
    train = mini_tau / "evaluation_setup" / "fold1_train.csv"
    first_test = (mini_tau / "evaluation_setup" / "fold1_evaluate.csv").read_text().splitlines()[1]
    _rewrite(train, lambda ls: ls + [first_test])
    with pytest.raises(DataError, match="both the train and the test fold"):
        read_tau(mini_tau)


def test_dcase2024_subsets(mini_tau):
    table = read_tau(mini_tau)
    train_names = table.loc[table["split"] == "train", "filename"].tolist()
    setup = mini_tau / "split_setup"
    setup.mkdir()
    (setup / "split25.csv").write_text("filename\tscene_label\n" + "".join(f"{n}\tx\n" for n in train_names[:2]))
    (setup / "split100.csv").write_text("filename\tscene_label\n" + "".join(f"{n}\tx\n" for n in train_names))
    table = read_tau(mini_tau)
    assert table.loc[table["filename"].isin(train_names[:2]), "subset_pct"].tolist() == [25, 25]
    assert (table.loc[table["filename"].isin(train_names[2:]), "subset_pct"] == 100).all()
    assert table.loc[table["split"] == "test", "subset_pct"].isna().all()
    small = select_subset(table, 25)
    assert (small["split"] == "train").sum() == 2 and (small["split"] == "test").sum() == (table["split"] == "test").sum()
    (setup / "split5.csv").write_text("filename\nnot/in/train.wav\n")
    with pytest.raises(DataError, match=r"split5.csv row 2: 'not/in/train.wav' is not a clip of fold1_train.csv"):
        read_tau(mini_tau)


def test_carve_validation_moves_whole_locations_deterministically(synth_root):
    table = read_tau(synth_root)
    carved = carve_validation(table, SplitConfig(val_fraction=0.3, seed=1))
    again = carve_validation(table.sample(frac=1.0, random_state=0), SplitConfig(val_fraction=0.3, seed=1))
    val_ids = set(carved.loc[carved["split"] == "val", "identifier"])
    assert val_ids == set(again.loc[again["split"] == "val", "identifier"])  # independent of row order
    assert not val_ids & set(carved.loc[carved["split"] == "train", "identifier"])
    assert (carved.loc[table["split"] == "test", "split"] == "test").all()  # test untouched
    # every scene keeps train clips and gives some to validation
    for scene in DCASE_LABELS:
        splits = set(carved.loc[carved["scene_label"] == scene, "split"])
        assert {"train", "val", "test"} <= splits, scene
    others = [
        set(carve_validation(table, SplitConfig(val_fraction=0.3, seed=s)).query("split == 'val'")["identifier"])
        for s in range(2, 6)
    ]
    assert any(ids != val_ids for ids in others)
    n_train_ids = table.loc[table["split"] == "train", "identifier"].nunique()
    assert 0.2 <= len(val_ids) / n_train_ids <= 0.45


def test_carve_validation_needs_two_locations(mini_tau):
    table = read_tau(mini_tau)
    table = table[~table["identifier"].isin(["lisbon-101", "paris-101"])]
    with pytest.raises(DataError, match="two or more train recording locations"):
        carve_validation(table)
    assert np.isin(["lisbon-100"], read_tau(mini_tau)["identifier"]).all()


def test_a_training_subset_restricts_train_and_validation_to_it(synth_root):
    from asc_search.config import SplitConfig

    table = read_tau(synth_root)
    full = carve_validation(table, SplitConfig(seed=0))
    sub = carve_validation(table, SplitConfig(seed=0, subset=25))
    in25 = (table["subset_pct"] <= 25).fillna(False).to_numpy(dtype=bool)
    kept = sub["split"].isin(["train", "val"]).to_numpy()
    assert kept.any() and (kept == ((table["split"] == "train").to_numpy() & in25)).all()
    assert set(sub.loc[~kept & (table["split"] == "train").to_numpy(), "split"]) == {"excluded"}
    assert (sub["split"] == "test").sum() == (full["split"] == "test").sum()  # the test split is untouched
    assert (sub["split"] == "val").sum() > 0 and (sub["split"] == "train").sum() > (sub["split"] == "val").sum()
    with pytest.raises(DataError, match="subset 25: this data set has no DCASE 2024 training subset files"):
        carve_validation(table.drop(columns="subset_pct"), SplitConfig(subset=25))
    with pytest.raises(ConfigError, match="subset must be one of 5, 10, 25, 50, 100"):
        SplitConfig(subset=30)
