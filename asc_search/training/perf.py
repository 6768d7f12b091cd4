"""How :func:`asc_search.training.fit` makes a training step cheap, one measured choice each (figures:
``python -m asc_search.bench.training``):

* :data:`MEMORY_FORMATS`: the model, its projection head and every batch in ``torch.channels_last`` (the default):
  oneDNN's convolutions, batch norm and pooling run on NHWC without reordering, which roughly doubles a CPU
  training step of the student family (depthwise and 1x1 convolutions, BN over small channel counts).
* :func:`make_optimizer`: AdamW / Adam with the fused kernel where this torch has it for the device (one kernel
  for every parameter instead of a Python loop over them).
* :class:`FiniteWatch`: the NaN / inf check of the loss without a host sync per step on the GPU: the step losses
  are kept on the device and checked every ``every`` steps (and at the end of the epoch); the first bad step is
  still found exactly, so :class:`~asc_search.training.loop.DivergedError` names the same epoch, step and value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

__all__ = ["MEMORY_FORMATS", "memory_format", "make_optimizer", "FiniteWatch"]

#: ``TrainConfig.memory_format`` -> torch memory format.
MEMORY_FORMATS: dict[str, torch.memory_format] = {
    "channels_last": torch.channels_last,
    "contiguous": torch.contiguous_format,
}


def memory_format(name: str) -> torch.memory_format:
    """The torch memory format of a ``TrainConfig.memory_format`` value."""
    return MEMORY_FORMATS[name]


def make_optimizer(kind: str, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                   device: torch.device) -> torch.optim.Optimizer:
    """AdamW (``kind == "adamw"``) or Adam, fused on the CPU and CUDA (same update to rounding as the loop)."""
    cls = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    fused = device.type in ("cpu", "cuda")
    return cls(list(params), lr=lr, weight_decay=weight_decay, fused=fused or None)


class FiniteWatch:
    """Collects the step losses of an epoch and checks them every ``every`` steps (one host sync per check).

    ``add(step, loss)`` returns ``(step, value)`` of the first non-finite loss once a check finds one, else None;
    ``flush()`` checks what is left (call it at the end of the epoch).
    """

    def __init__(self, every: int = 1) -> None:
        self.every = max(1, int(every))
        self._losses: list[torch.Tensor] = []
        self._first_step = 1

    def add(self, step: int, loss: torch.Tensor) -> tuple[int, float] | None:
        if not self._losses:
            self._first_step = step
        self._losses.append(loss.detach())
        if len(self._losses) >= self.every:
            return self.flush()
        return None

    def flush(self) -> tuple[int, float] | None:
        if not self._losses:
            return None
        losses = torch.stack(self._losses).float()
        self._losses = []
        bad = ~torch.isfinite(losses)
        if not bool(bad.any()):  # the one host sync of the window
            return None
        i = int(bad.nonzero()[0, 0])
        return self._first_step + i, float(losses[i])

    @staticmethod
    def every_for(device: Any) -> int:
        """Check every step on the CPU (no sync to save), every 32 steps on a GPU."""
        return 32 if torch.device(device).type == "cuda" else 1
