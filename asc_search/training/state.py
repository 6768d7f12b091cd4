"""What :func:`asc_search.training.fit` hands back: the resumable :class:`FitState` after each epoch, the
:class:`FitResult` at the end, and :class:`DivergedError` when the loss turns NaN or infinite."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import AscSearchError, ConfigError

__all__ = ["DivergedError", "FitState", "FitResult"]


class DivergedError(AscSearchError):
    """The training loss became NaN or infinite."""

    def __init__(self, message: str, epoch: int = 0, step: int = 0) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


@dataclass
class FitState:
    """Where a :func:`fit` run stands after an epoch: everything needed to continue it exactly (``start_state``).

    Written by :func:`fit` after every epoch (and handed to ``on_epoch``), read back by :func:`fit` when passed as
    ``start_state``; nowhere else. The tensors are live references into the running model and optimiser: save or
    copy the state inside the callback. :meth:`to_dict` is the checkpoint form (plain dicts, lists and tensors;
    ``torch.save`` it), :meth:`from_dict` reads it back.
    """

    epoch: int  # the last completed epoch (counts from 1); a resumed run starts at epoch + 1
    model: dict[str, torch.Tensor]  # the model's state dict at the end of that epoch
    head: dict[str, torch.Tensor] | None  # the projection head's state dict (None without embedding distillation)
    optimizer: dict[str, Any]  # optimiser state dict (moments, step counts)
    scheduler: dict[str, Any]  # learning-rate schedule state dict
    scaler: dict[str, Any] | None  # GradScaler state dict (fp16 on CUDA only)
    generator: torch.Tensor  # state of the torch.Generator drawing the batch order
    numpy_rng: dict[str, Any]  # state of the numpy Generator drawing the augmentations (mixup, MixStyle, roll)
    torch_rng: torch.Tensor  # torch's global CPU RNG state (dropout, torchaudio's masks)
    cuda_rng: torch.Tensor | None  # torch's CUDA RNG state on the run's device (None on the CPU)
    history: list[dict[str, Any]]  # the per-epoch metrics so far
    best_state: dict[str, torch.Tensor] | None  # CPU copy of the model at the best epoch so far
    best_head: dict[str, torch.Tensor] | None  # CPU copy of the head at the best epoch so far
    best_metrics: dict[str, Any] | None  # that epoch's metrics
    best_epoch: int  # that epoch (0 before any)
    train_config: dict[str, Any]  # the TrainConfig the run uses, as a dict (a record; not used to resume)

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint form: ``{field: value}`` (the values themselves, not copies)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FitState:
        """A state from :meth:`to_dict` (also a checkpoint written before FitState existed: the same keys)."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in ("epoch", "model", "optimizer", "scheduler", "generator", "numpy_rng", "torch_rng")
                   if n not in data]
        if missing:
            raise ConfigError(f"start_state lacks {', '.join(missing)}: not a fit state")
        values = {n: data.get(n) for n in names}
        values["history"] = list(values["history"] or [])
        values["best_epoch"] = int(values["best_epoch"] or 0)
        values["train_config"] = dict(values["train_config"] or {})
        return cls(**values)


@dataclass
class FitResult:
    """What :func:`fit` returns. ``best_state`` is a CPU copy of the model's state dict (never the head's)."""

    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0  # the last epoch completed
    head_state: dict[str, torch.Tensor] | None = None  # the projection head at the best epoch (train-only)
    device: str = "cpu"
