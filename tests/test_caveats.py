"""The warnings of asc_search.search.caveats and asc_search.data.checks: each one fires on data made to trigger it
and stays silent on the built-in data (the demo's 3,000-clip data set, planned without rendering audio)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from asc_search.config import DCASE_LABELS, SplitConfig
from asc_search.data.synth import plan_dataset
from asc_search.data.tau import carve_validation
from asc_search.search import caveats as C
from asc_search.search.space import load_space, parse_space


@pytest.fixture(scope="module")
def demo_table():
    """The table of the demo's data set (3,000 clips, seed 0) as read_tau would give it, validation carved."""
    moments, clips = plan_dataset(3000, seed=0)
    rows = [dict(filename=f"{i}-{d}", scene_label=moments[i]["scene"], split=moments[i]["split"],
                 identifier=f"{moments[i]['city']}-{moments[i]['location']}", device=d) for i, d in clips]
    table = pd.DataFrame(rows)
    table["label"] = table["scene_label"].map({s: k for k, s in enumerate(DCASE_LABELS)})
    return carve_validation(table, SplitConfig())


def test_winner_near_chance():
    (msg,) = C.winner_near_chance(0.150, 7)  # the 7-class data: chance 0.143
    assert "0.150" in msg and "0.143" in msg and "1/7" in msg
    assert len(C.winner_near_chance(0.192, 7)) == 1  # 4.9 points above chance: near
    assert C.winner_near_chance(0.193, 7) == []  # 5.0 points: not
    assert C.winner_near_chance(0.70, 10) == [] and C.winner_near_chance(None, 10) == []


def test_winner_is_reference():
    (msg,) = C.winner_is_reference({"kind": "reference", "reference": "baseline_ce", "trial_id": 0})
    assert "baseline_ce" in msg and "found nothing better" in msg
    assert C.winner_is_reference({"kind": "search", "trial_id": 7}) == [] and C.winner_is_reference(None) == []


def test_small_validation_classes(demo_table):
    labels = ["a", "b", "c"]
    (msg,) = C.small_validation_classes(np.array([0] * 12 + [1] * 4 + [2] * 30), labels)
    assert "1 class(es) (b 4)" in msg
    val = demo_table.loc[demo_table["split"] == "val", "label"].to_numpy()
    assert C.small_validation_classes(val, DCASE_LABELS) == []  # the demo's validation split: >= 10 per class


def test_few_steps_per_epoch(demo_table):
    quick = load_space("quick")
    epochs = parse_space(quick.text.replace("unit: steps, grace_period: 80", "grace_period: 2"), source="e.yaml")
    (msg,) = C.few_steps_per_epoch(epochs, 204)  # the 255 clips: 3 steps an epoch at batch 64
    assert "only 3 optimiser step(s) at batch size 64" in msg and "unit: steps" in msg
    n_train = int((demo_table["split"] == "train").sum())
    assert C.few_steps_per_epoch(epochs, n_train) == []  # the demo's data: 27 steps an epoch
    assert C.few_steps_per_epoch(quick, 204) == []  # the shipped quick.yaml counts steps: silent at any size
    no_asha = parse_space(epochs.text.replace("enabled: true", "enabled: false"), source="n.yaml")
    assert C.few_steps_per_epoch(no_asha, 204) == []


def test_teacher_near_chance(teacher_cache, quick_cache):
    from asc_search.data.cache import load_features
    from asc_search.data.teacher_cache import load_teacher_targets

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 500)
    (msg,) = C.teacher_near_chance(rng.normal(size=(500, 10)).astype(np.float32), y, 10)  # a teacher that guesses
    assert "distilling from this teacher cannot help" in msg
    good = np.eye(10, dtype=np.float32)[np.where(rng.random(500) < 0.7, y, rng.integers(0, 10, 500))] * 5
    assert C.teacher_near_chance(good, y, 10) == []
    assert C.teacher_near_chance(None, y, 10) == []
    # a trained teacher on the built-in data (the tests' tiny one): its validation logits are well above chance
    fs = load_features(quick_cache)
    targets = load_teacher_targets(fs, teacher_cache)
    idx, part = fs.split_indices(SplitConfig())["val"]
    logits = targets.logits[torch.from_numpy(idx)].numpy()
    from asc_search.training.metrics import macro_accuracy

    acc = macro_accuracy(torch.from_numpy(logits), torch.from_numpy(part["label"].to_numpy(copy=True)), 10)
    assert acc > 0.1 + C.CHANCE_MARGIN  # 2 epochs on 400 clips already reach ~0.25
    assert C.teacher_near_chance(logits, part["label"].to_numpy(), 10) == []


def test_label_typos(demo_table):
    typo = pd.DataFrame({"scene_label": ["park"] * 8 + ["bus"] * 8 + ["prak"] * 2 + ["tram"] * 5,
                         "split": ["train"] * 4 + ["test"] * 4 + ["train"] * 4 + ["test"] * 4 + ["train"] * 2
                         + ["train", "val", "train", "val", "train"]})
    typo["filename"] = [f"audio/{label}-{i}.wav" for i, label in enumerate(typo["scene_label"])]
    msgs = C.label_typos(typo, ["bus", "park", "prak", "tram"])
    assert len(msgs) == 2
    assert "label 'prak': 2 clips (audio/prak-16.wav, audio/prak-17.wav), only in train; did you mean 'park'?" in msgs[0]
    assert "label 'tram': 5 clips" in msgs[1] and "only in train" in msgs[1]  # validation counts as train
    assert C.label_typos(demo_table, DCASE_LABELS) == []


def test_features_warn_about_a_likely_label_typo(tmp_path):
    from conftest import write_mini_tau

    from asc_search.data.features import build_feature_cache_report

    clips = [(scene, f"{city}-{loc}", dev, split)
             for scene, city in (("park", "lisbon"), ("bus", "paris"))
             for loc, split in (("100", "train"), ("101", "train"), ("102", "test"))
             for dev in ("a",)] + [("prak", "lisbon-103", "a", "train")]
    root = write_mini_tau(tmp_path / "mini", clips=clips)
    events = []
    build_feature_cache_report(root, tmp_path / "cache", profile="quick", labels="auto", workers=1,
                               allow_rare_labels=True, on_event=lambda e, i: events.append((e, i)))
    warnings = [i["message"] for e, i in events if e == "warning"]  # kept on purpose, still said
    assert len(warnings) == 1 and "label 'prak': 1 clip" in warnings[0] and "did you mean 'park'" in warnings[0]
