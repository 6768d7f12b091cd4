"""One split as tensors: :class:`TensorData` (spectrograms, labels and the cached teacher targets, row-aligned)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError

__all__ = ["TensorData"]


@dataclass
class TensorData:
    """One split as tensors: x [N, 1, F, T] (float16 or float32), y [N] int64, and the cached teacher targets."""

    x: torch.Tensor
    y: torch.Tensor
    teacher_logits: torch.Tensor | None = None  # [N, K]
    teacher_emb: torch.Tensor | None = None  # [N, C, H, W] (or any [N, ...])

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise ConfigError(f"x must have shape [N, 1, n_mels, n_frames], got {tuple(self.x.shape)}")
        n = self.x.shape[0]
        self.y = torch.as_tensor(self.y).long()
        if self.y.shape != (n,):
            raise ConfigError(f"y must have shape [{n}] to match x, got {tuple(self.y.shape)}")
        for key in ("teacher_logits", "teacher_emb"):
            value = getattr(self, key)
            if value is not None and value.shape[0] != n:
                raise ConfigError(f"{key} has {value.shape[0]} rows but x has {n}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, idx: torch.Tensor | np.ndarray) -> TensorData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return TensorData(
            self.x[idx],
            self.y[idx],
            None if self.teacher_logits is None else self.teacher_logits[idx],
            None if self.teacher_emb is None else self.teacher_emb[idx],
        )

