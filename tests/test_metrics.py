"""Metrics: macro accuracy, log loss and the per-device / per-class breakdown, checked by hand."""

import math

import pandas as pd
import pytest
import torch

from asc_search.errors import DataError
from asc_search.training import metrics as M


def _onehot_logits(pred, k=3, scale=10.0):
    return torch.nn.functional.one_hot(torch.tensor(pred), k).float() * scale


def test_macro_accuracy_is_mean_of_per_class_accuracies():
    # class 0: 4 clips, 3 right; class 1: 1 clip, right; class 2: 1 clip, wrong
    y = torch.tensor([0, 0, 0, 0, 1, 2])
    pred = [0, 0, 0, 1, 1, 0]
    logits = _onehot_logits(pred)
    assert M.accuracy(logits, y) == pytest.approx(4 / 6)
    assert M.macro_accuracy(logits, y, 3) == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    # a class absent from y is left out of the mean, not counted as 0
    assert M.macro_accuracy(_onehot_logits([0, 1], k=4), torch.tensor([0, 1]), 4) == pytest.approx(1.0)


def test_log_loss_matches_hand_computation_and_clips():
    logits = torch.tensor([[0.0, math.log(3.0)], [math.log(4.0), 0.0]])  # p = [.25,.75], [.8,.2]
    y = torch.tensor([1, 1])
    expected = -(math.log(0.75) + math.log(0.2)) / 2
    assert M.log_loss(logits, y) == pytest.approx(expected, rel=1e-6)
    # a confidently wrong prediction is clipped at eps, not infinite
    assert M.log_loss(torch.tensor([[1000.0, -1000.0]]), torch.tensor([1])) == pytest.approx(-math.log(M.LOG_LOSS_EPS))


def test_score_per_device_marks_seen_and_unseen_with_macro_accuracy():
    # device a (seen): 4 clips of class 0, 3 right, 1 clip of class 1, right -> plain 0.8, macro (0.75 + 1) / 2
    # device s5 (unseen): class 0 right, class 1 wrong twice -> plain 1/3, macro (1 + 0) / 2
    # device zz: neither seen nor unseen
    y = torch.tensor([0, 0, 0, 0, 1, 0, 1, 1, 1])
    pred = [0, 0, 0, 1, 1, 0, 0, 0, 1]
    table = pd.DataFrame({"device": ["a"] * 5 + ["s5"] * 3 + ["zz"]})
    s = M.score(_onehot_logits(pred, k=2), y, table, labels=["x", "y"])
    a, s5 = s["per_device"]["a"], s["per_device"]["s5"]
    assert a["macro_accuracy"] == pytest.approx(0.875) and a["accuracy"] == pytest.approx(0.8)
    assert a["n"] == 5 and a["seen"] is True
    assert s5["macro_accuracy"] == pytest.approx(0.5) and s5["accuracy"] == pytest.approx(1 / 3) and s5["seen"] is False
    assert s["per_device"]["zz"]["seen"] is None and list(s["per_device"]) == ["a", "s5", "zz"]
    # seen / unseen: the macro accuracy over all clips of those devices (not the plain share of clips right)
    assert s["seen_macro_accuracy"] == pytest.approx(0.875)
    assert s["unseen_macro_accuracy"] == pytest.approx(0.5)
    assert "seen_accuracy" not in s and "unseen_accuracy" not in s
    assert s["n"] == 9 and s["per_class"] == {"x": pytest.approx(4 / 5), "y": pytest.approx(2 / 4)}
    assert s["macro_accuracy"] == pytest.approx((4 / 5 + 2 / 4) / 2)
    # no clip of an unseen device: None, not 0
    only_seen = M.score(_onehot_logits([0, 1], k=2), torch.tensor([0, 1]), pd.DataFrame({"device": ["a", "b"]}))
    assert only_seen["unseen_macro_accuracy"] is None and only_seen["seen_macro_accuracy"] == 1.0


def test_bad_shapes_are_refused():
    with pytest.raises(DataError, match="labels must have shape"):
        M.accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        M.accuracy(torch.zeros(1, 2), torch.tensor([2]))
    with pytest.raises(DataError, match="2 rows"):
        M.score(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), pd.DataFrame({"device": ["a", "b"]}))
