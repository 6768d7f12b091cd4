"""Train-only heads: the projection from a student's exposed feature map to the teacher embedding's shape.

Not part of the deployed model and never counted in its complexity (the complexity report says so).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["ProjectionHead"]


class ProjectionHead(nn.Module):
    """1x1 conv (+ BN) from ``student_channels`` to the teacher's C, then adaptive average pooling to (H, W).

    ``embedding_shape`` is the teacher embedding's (C, H, W) per clip. The default teacher cache stores pooled
    embeddings (H = W = 1); a spatial shape works the same way, the pooling then resamples the student's map to the
    teacher's grid (adaptive average pooling shrinks; where the student's map is smaller than (H, W) cells repeat).
    """

    def __init__(self, student_channels: int, embedding_shape: Sequence[int], batch_norm: bool = True) -> None:
        super().__init__()
        shape = tuple(int(s) for s in embedding_shape)
        if isinstance(student_channels, bool) or not isinstance(student_channels, int) or student_channels <= 0:
            raise ConfigError(f"projection head: student_channels must be a positive integer, got {student_channels!r}")
        if len(shape) != 3 or any(s <= 0 for s in shape):
            raise ConfigError(
                f"projection head: embedding_shape must be (C, H, W) with positive entries, got {tuple(embedding_shape)!r}"
            )
        self.student_channels = student_channels
        self.embedding_shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        channels, height, width = shape
        self.proj = nn.Conv2d(student_channels, channels, kernel_size=1, bias=not batch_norm)
        self.norm: nn.Module = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d((height, width))

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """[B, student_channels, h, w] -> [B, C, H, W]."""
        if feature_map.dim() != 4 or feature_map.shape[1] != self.student_channels:
            raise ValueError(
                f"projection head expects [B, {self.student_channels}, H, W], got {list(feature_map.shape)}"
            )
        return self.pool(self.norm(self.proj(feature_map)))
