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


def test_score_per_device_marks_seen_and_unseen():
    y = torch.tensor([0, 1, 0, 1])
    logits = _onehot_logits([0, 1, 1, 1], k=2)
    table = pd.DataFrame({"device": ["a", "a", "s5", "s5"]})
    s = M.score(logits, y, table, labels=["x", "y"])
    assert s["per_class"] == {"x": 0.5, "y": 1.0}
    assert s["per_device"]["a"] == {"acc": 1.0, "macro_accuracy": 1.0, "n": 2, "seen": True}
    assert s["per_device"]["s5"]["acc"] == 0.5 and s["per_device"]["s5"]["seen"] is False
    assert s["seen_accuracy"] == 1.0 and s["unseen_accuracy"] == 0.5
    assert s["n"] == 4 and s["macro_accuracy"] == pytest.approx(0.75)


def test_bad_shapes_are_refused():
    with pytest.raises(DataError, match="labels must have shape"):
        M.accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(DataError, match="labels must lie in 0..1"):
        M.accuracy(torch.zeros(1, 2), torch.tensor([2]))
    with pytest.raises(DataError, match="2 rows"):
        M.score(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), pd.DataFrame({"device": ["a", "b"]}))
