"""How to train: :class:`TrainConfig`, the settings of :func:`asc_search.training.fit` (optimiser, schedule, device,
augmentations), validated on construction with messages that name the key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .._runtime import DEVICES
from ..config import reject_unknown_keys
from ..errors import ConfigError, quote

__all__ = ["OPTIMIZERS", "MEMORY_FORMAT_NAMES", "TrainConfig", "steps_per_epoch"]

OPTIMIZERS = ("adamw", "adam")
MEMORY_FORMAT_NAMES = ("channels_last", "contiguous")


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n_train`` clips at ``batch_size`` (the last, smaller batch is dropped;
    a set smaller than one batch is one step)."""
    n_train = int(n_train)
    return max(1, n_train // max(1, min(int(batch_size), n_train)))


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Augmentations are off when their knob is 0."""

    epochs: int = 10  # passes over the training set
    min_steps: int = 0  # at least this many optimiser steps: epochs is raised on a small training set (0 = off)
    lr: float = 1e-3  # peak learning rate (after warm-up)
    weight_decay: float = 1e-4  # decoupled (AdamW) or L2 (Adam) weight decay
    optimizer: str = "adamw"  # "adamw" or "adam"
    batch_size: int = 64  # clips per step (a smaller last batch is dropped when the set is larger than a batch)
    warmup_epochs: float = 1.0  # linear warm-up length (may be fractional); 0 = none
    min_lr_ratio: float = 0.01  # the cosine decays to lr * min_lr_ratio
    grad_clip: float = 0.0  # clip the global gradient norm to this (0 = off)
    seed: int = 0  # seeds batch order, augmentation draws and torch's global RNG (init, dropout)
    device: str = "auto"  # "auto" (CUDA when present), "cpu" or "cuda"
    amp: bool = True  # mixed precision on CUDA (bf16 when supported, else fp16 + GradScaler); ignored on CPU
    num_threads: int = 0  # torch intra-op threads during fit (0 = leave as is)
    eval_batch_size: int = 512  # clips per forward pass when scoring
    device_data_max_bytes: int = 4 << 30  # on CUDA, keep the training tensors on the GPU when they fit this
    memory_format: str = "channels_last"  # "channels_last" (NHWC, ~2x faster here) or "contiguous" (NCHW)
    # augmentations
    dir_p: float = 0.0  # probability a clip gets a device impulse response (fit's ir_bank); 0 = off
    mixup_alpha: float = 0.0  # Beta(alpha, alpha) mixup; 0 = off
    mixup_p: float = 1.0  # probability a batch is mixed (when mixup_alpha > 0)
    freq_mixstyle_p: float = 0.0  # probability a batch gets Freq-MixStyle; 0 = off
    freq_mixstyle_alpha: float = 0.3  # Beta(alpha, alpha) of the style mix
    freq_mask: int = 0  # max frequency-mask width in mel bins (torchaudio FrequencyMasking); 0 = off
    time_mask: int = 0  # max time-mask width in frames (torchaudio TimeMasking); 0 = off
    time_roll: int = 0  # max circular time shift in frames; 0 = off

    def __post_init__(self) -> None:
        def num(key: str, lo: float | None = None, lo_open: bool = False, integer: bool = False) -> None:
            value = getattr(self, key)
            ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
            if ok and lo is not None:
                ok = value > lo if lo_open else value >= lo
            if not ok:
                kind = "an integer" if integer else "a number"
                bound = "" if lo is None else (f" > {lo}" if lo_open else f" >= {lo}")
                raise ConfigError(f"train.{key} must be {kind}{bound}, got {quote(value)}")

        num("epochs", 1, integer=True)
        num("min_steps", 0, integer=True)
        num("lr", 0, lo_open=True)
        num("weight_decay", 0)
        num("batch_size", 1, integer=True)
        num("warmup_epochs", 0)
        num("min_lr_ratio", 0)
        num("grad_clip", 0)
        num("seed", integer=True)
        num("num_threads", 0, integer=True)
        num("eval_batch_size", 1, integer=True)
        num("device_data_max_bytes", 0, integer=True)
        num("mixup_alpha", 0)
        num("freq_mixstyle_alpha", 0, lo_open=True)
        num("freq_mask", 0, integer=True)
        num("time_mask", 0, integer=True)
        num("time_roll", 0, integer=True)
        for key in ("dir_p", "mixup_p", "freq_mixstyle_p"):
            num(key, 0)
            if getattr(self, key) > 1:
                raise ConfigError(f"train.{key} must lie in [0, 1], got {quote(getattr(self, key))}")
        if self.min_lr_ratio > 1:
            raise ConfigError(f"train.min_lr_ratio must lie in [0, 1], got {quote(self.min_lr_ratio)}")
        if self.device not in DEVICES:
            raise ConfigError(f"train.device must be one of {', '.join(DEVICES)}, got {quote(self.device)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {quote(self.optimizer)}")
        if self.memory_format not in MEMORY_FORMAT_NAMES:
            raise ConfigError(f"train.memory_format must be one of {', '.join(MEMORY_FORMAT_NAMES)}, "
                              f"got {quote(self.memory_format)}")
        if not isinstance(self.amp, bool):
            raise ConfigError(f"train.amp must be true or false, got {quote(self.amp)}")

    def planned_epochs(self, n_train: int) -> int:
        """The epochs :func:`~asc_search.training.fit` runs on ``n_train`` clips: ``epochs``, raised so that the run
        makes at least ``min_steps`` optimiser steps."""
        if self.min_steps <= 0:
            return self.epochs
        per_epoch = steps_per_epoch(n_train, self.batch_size)
        return max(self.epochs, -(-self.min_steps // per_epoch))

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        reject_unknown_keys(cls, data, "train")
        return cls(**data)

