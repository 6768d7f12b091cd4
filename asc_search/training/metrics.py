"""Scores the DCASE Task 1 way: macro-average class accuracy (the primary metric), accuracy, multi-class log loss,
per-class accuracy, and macro accuracy per device and over the seen / unseen devices.

Everything works on plain tensors (logits [N, K], integer labels [N]); the per-device breakdown needs the clip
table (a ``device`` column, row i <-> logits[i]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..config import SEEN_DEVICES, UNSEEN_DEVICES
from ..errors import DataError

__all__ = ["LOG_LOSS_EPS", "macro_accuracy", "accuracy", "log_loss", "per_class_accuracy", "score"]

#: Probabilities are clipped to [eps, 1 - eps] before the log, as scikit-learn's log_loss does.
LOG_LOSS_EPS = 1e-7


def _check(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.as_tensor(logits)
    y = torch.as_tensor(y)
    if logits.ndim != 2:
        raise DataError(f"logits must have shape [N, n_classes], got {tuple(logits.shape)}")
    if y.ndim != 1 or y.shape[0] != logits.shape[0]:
        raise DataError(f"labels must have shape [{logits.shape[0]}] to match the logits, got {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= logits.shape[1]):
        raise DataError(f"labels must lie in 0..{logits.shape[1] - 1}, got values {int(y.min())}..{int(y.max())}")
    return logits.detach().float().cpu(), y.detach().long().cpu()


def per_class_accuracy(logits: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Accuracy of each class [n_classes]; NaN for a class with no clip in ``y``."""
    logits, y = _check(logits, y)
    n_classes = n_classes or logits.shape[1]
    correct = (logits.argmax(1) == y).double()
    totals = torch.bincount(y, minlength=n_classes).double()
    hits = torch.bincount(y, weights=correct, minlength=n_classes)
    acc = hits / totals
    acc[totals == 0] = float("nan")
    return acc


def macro_accuracy(logits: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> float:
    """Mean of the per-class accuracies over the classes present in ``y`` (the DCASE primary metric)."""
    acc = per_class_accuracy(logits, y, n_classes)
    present = ~torch.isnan(acc)
    if not bool(present.any()):
        return float("nan")
    return float(acc[present].mean())


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of clips classified correctly (micro accuracy)."""
    logits, y = _check(logits, y)
    if y.numel() == 0:
        return float("nan")
    return float((logits.argmax(1) == y).double().mean())


def log_loss(logits: torch.Tensor, y: torch.Tensor, eps: float = LOG_LOSS_EPS) -> float:
    """Multi-class log loss: mean of -log p(true class) on softmax probabilities clipped to [eps, 1 - eps]."""
    logits, y = _check(logits, y)
    if y.numel() == 0:
        return float("nan")
    probs = torch.softmax(logits.double(), dim=1).clamp(eps, 1.0 - eps)
    return float(-torch.log(probs.gather(1, y[:, None])).mean())


def _device_groups(devices: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(device, row mask) for every device present: seen devices first, then unseen, then any other (sorted)."""
    present = set(devices)
    order = [d for d in SEEN_DEVICES + UNSEEN_DEVICES if d in present]
    order += sorted(present - set(order))
    return [(dev, devices == dev) for dev in order]


def _seen(device: str) -> bool | None:
    return True if device in SEEN_DEVICES else (False if device in UNSEEN_DEVICES else None)


def score(
    logits: torch.Tensor,
    y: torch.Tensor,
    table: Any | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """All the figures DCASE reports, as a JSON-ready dict.

    Keys: ``n``, ``macro_accuracy``, ``accuracy`` (plain: the share of clips right), ``log_loss``, ``per_class``
    {label: accuracy} and, when ``table`` (a DataFrame with a ``device`` column, row i <-> logits[i]) is given:

    * ``per_device`` {device: {"macro_accuracy", "accuracy", "n", "seen"}}: the macro accuracy over that device's
      clips (the DCASE figure) and, labelled as such, its plain accuracy; ``seen`` is True for
      config.SEEN_DEVICES, False for config.UNSEEN_DEVICES and None for any other device name;
    * ``seen_macro_accuracy`` / ``unseen_macro_accuracy``: the macro accuracy over all clips of the seen / unseen
      devices (None when there are none). This is the one definition of seen / unseen-device accuracy.
    """
    logits, y = _check(logits, y)
    n_classes = logits.shape[1]
    if labels is None:
        labels = [str(i) for i in range(n_classes)]
    if len(labels) != n_classes:
        raise DataError(f"{len(labels)} labels given for logits with {n_classes} classes")
    pc = per_class_accuracy(logits, y, n_classes)
    out: dict[str, Any] = {
        "n": int(y.numel()),
        "macro_accuracy": macro_accuracy(logits, y, n_classes),
        "accuracy": accuracy(logits, y),
        "log_loss": log_loss(logits, y),
        "per_class": {str(lab): (None if torch.isnan(a) else float(a)) for lab, a in zip(labels, pc)},
    }
    if table is None:
        return out
    if "device" not in table.columns:
        raise DataError(f"the clip table has no 'device' column (columns: {list(table.columns)})")
    if len(table) != y.numel():
        raise DataError(f"the clip table has {len(table)} rows but there are {y.numel()} predictions")
    devices = table["device"].astype(str).to_numpy()

    def macro(mask: np.ndarray) -> float | None:
        if not mask.any():
            return None
        idx = torch.from_numpy(np.flatnonzero(mask))
        return macro_accuracy(logits[idx], y[idx], n_classes)

    correct = (logits.argmax(1) == y).numpy()
    per_device: dict[str, dict[str, Any]] = {}
    for dev, mask in _device_groups(devices):
        accuracy_plain = float(correct[mask].mean())
        per_device[dev] = {"macro_accuracy": macro(mask), "accuracy": accuracy_plain, "n": int(mask.sum()),
                           "seen": _seen(dev)}
    out["per_device"] = per_device
    out["seen_macro_accuracy"] = macro(np.isin(devices, np.asarray(SEEN_DEVICES)))
    out["unseen_macro_accuracy"] = macro(np.isin(devices, np.asarray(UNSEEN_DEVICES)))
    return out
