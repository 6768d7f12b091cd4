"""The DCASE 2022/2023 Task 1 baseline CNN (40 x 51 log-mel input), as the organisers' Keras model defines it.

Conv 7x7 16 + BN + ReLU, Conv 7x7 16 + BN + ReLU, MaxPool 5x5, Dropout 0.3, Conv 7x7 32 + BN + ReLU,
MaxPool (4, 10), Dropout 0.3, Dense 100 (ReLU), Dropout 0.3, Dense 10 (softmax, applied by the loss here).
Convolutions use padding "same" and carry a bias, as Keras' ``Conv2D`` does by default.
The DCASE 2024 baseline is a student configuration: see :mod:`asc_search.models.presets`.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .blocks import initialize_weights

__all__ = ["DCASE2023Baseline", "build_dcase2023_baseline"]


class DCASE2023Baseline(nn.Module):
    """The DCASE 2022/2023 baseline. ``forward_with_embedding`` exposes the last conv block's pooled feature map."""

    embed_block = "conv3"

    def __init__(self, n_classes: int = 10, in_channels: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        for key, value in (("n_classes", n_classes), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"dcase2023 baseline: {key} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dcase2023 baseline: dropout must be in [0, 1), got {dropout!r}")
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 16, 7, padding="same"), nn.BatchNorm2d(16), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 16, 7, padding="same"), nn.BatchNorm2d(16), nn.ReLU())
        self.pool1 = nn.Sequential(nn.MaxPool2d(5), nn.Dropout(dropout))
        self.conv3 = nn.Sequential(nn.Conv2d(16, 32, 7, padding="same"), nn.BatchNorm2d(32), nn.ReLU())
        self.pool2 = nn.Sequential(nn.MaxPool2d((4, 10)), nn.Dropout(dropout))
        # 40 x 51 -> MaxPool 5 -> 8 x 10 -> MaxPool (4, 10) -> 2 x 1: 32 * 2 * 1 = 64 features
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(32 * 2 * 1, 100), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(100, n_classes)
        self.block_names: tuple[str, ...] = ("conv1", "conv2", "conv3")
        self.embedding_channels = 32
        self.apply(initialize_weights)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool2(self.conv3(self.pool1(self.conv2(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, 1, 40, 51] -> logits [B, n_classes]."""
        return self.classifier(self.dense(self._conv(x)))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits, feature map [B, 32, 2, 1] after the last conv block and its pooling)."""
        features = self._conv(x)
        return self.classifier(self.dense(features)), features


def build_dcase2023_baseline(n_classes: int = 10, in_channels: int = 1) -> DCASE2023Baseline:
    return DCASE2023Baseline(n_classes=n_classes, in_channels=in_channels)
