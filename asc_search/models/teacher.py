"""The teacher family: a wide CP-ResNet-like CNN (a receptive-field regularised ResNet).

A 5x5 stride-2 conv-BN-ReLU stem (optionally max-pooled), then stages of residual blocks (two kxk conv-BN layers,
ReLU after the sum; a 1x1 conv-BN shortcut where the width changes), 2x2 max pooling after chosen stages, and a head
of a 1x1 classifier conv + BN + global average pooling. As in CP-ResNet, later stages use 1x1 kernels, which bounds
the receptive field (the regulariser that makes CNNs generalise on spectrograms). The embedding is the feature map of
the second-to-last layer: the last block's output, before the classifier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import reject_unknown_keys
from ..errors import ConfigError
from .blocks import ConvNormAct, initialize_weights

__all__ = ["TeacherConfig", "Teacher", "build_teacher", "ResidualBlock"]


@dataclass(frozen=True)
class TeacherConfig:
    """Architecture of a teacher. Validated on construction; errors name the key."""

    n_classes: int = 10  # output classes
    in_channels: int = 1  # spectrogram channels
    stem_channels: int = 32  # width of the 5x5 stride-2 stem conv
    stem_pool: bool = True  # 2x2 max pooling after the stem
    stage_channels: tuple[int, ...] = (64, 128, 256, 512)  # width of each stage
    n_blocks: tuple[int, ...] = (1, 2, 2, 2)  # residual blocks per stage
    kernel_sizes: tuple[int, ...] = (3, 3, 3, 1)  # conv kernel per stage (1 = receptive-field regularised stage)
    pool_after: tuple[int, ...] = (0, 1, 2)  # 0-based stages followed by 2x2 max pooling (not the last stage)
    dropout: float = 0.0  # dropout before the classifier conv (train only)

    def __post_init__(self) -> None:
        for key in ("n_classes", "in_channels", "stem_channels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"teacher config: {key} must be a positive integer, got {value!r}")
        for key in ("stage_channels", "n_blocks", "kernel_sizes"):
            value = getattr(self, key)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
                raise ConfigError(f"teacher config: {key} must be a non-empty list with one entry per stage, got {value!r}")
            for i, item in enumerate(value):
                if isinstance(item, bool) or not isinstance(item, int) or item <= 0:
                    raise ConfigError(f"teacher config: {key}[{i}] must be a positive integer, got {item!r}")
            object.__setattr__(self, key, tuple(int(v) for v in value))
        n_stages = len(self.stage_channels)
        for key in ("n_blocks", "kernel_sizes"):
            if len(getattr(self, key)) != n_stages:
                raise ConfigError(
                    f"teacher config: {key} has {len(getattr(self, key))} entries but stage_channels has {n_stages}; "
                    "give one per stage"
                )
        for k in self.kernel_sizes:
            if k % 2 == 0:
                raise ConfigError(f"teacher config: kernel_sizes must be odd (1, 3, 5, ...), got {list(self.kernel_sizes)}")
        pools = tuple(self.pool_after)
        for p in pools:
            if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n_stages - 1:
                raise ConfigError(
                    f"teacher config: pool_after entries must be indices of stages followed by another stage "
                    f"(0..{n_stages - 2}), got {list(pools)}"
                )
        object.__setattr__(self, "pool_after", tuple(sorted(set(pools))))
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"teacher config: dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "stem_pool", bool(self.stem_pool))

    @property
    def embedding_layer(self) -> str:
        """Module path of the layer whose output is the embedding (the last residual block)."""
        return f"stages.s{len(self.stage_channels)}.b{self.n_blocks[-1]}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("stage_channels", "n_blocks", "kernel_sizes", "pool_after"):
            data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TeacherConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"teacher config must be a mapping of keys to values, got {type(data).__name__}")
        reject_unknown_keys(cls, data, "teacher config")
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)


class ResidualBlock(nn.Module):
    """kxk conv-BN-ReLU, kxk conv-BN, + shortcut (1x1 conv-BN when the width changes), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            ConvNormAct(in_channels, out_channels, kernel_size=kernel_size),
            ConvNormAct(out_channels, out_channels, kernel_size=kernel_size, activation=False),
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else ConvNormAct(in_channels, out_channels, kernel_size=1, activation=False)
        )
        self.activation = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.block(x) + self.shortcut(x))


class Teacher(nn.Module):
    """A CP-ResNet-like teacher built from a :class:`TeacherConfig` (use :func:`build_teacher`)."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.config = config
        stem: list[nn.Module] = [ConvNormAct(config.in_channels, config.stem_channels, kernel_size=5, stride=2)]
        if config.stem_pool:
            stem.append(nn.MaxPool2d(2, ceil_mode=True))
        self.stem = nn.Sequential(*stem)
        self.stages = nn.Sequential()
        in_ch = config.stem_channels
        for s, (width, count, kernel) in enumerate(zip(config.stage_channels, config.n_blocks, config.kernel_sizes)):
            stage = nn.Sequential()
            for b in range(count):
                stage.add_module(f"b{b + 1}", ResidualBlock(in_ch, width, kernel))
                in_ch = width
            self.stages.add_module(f"s{s + 1}", stage)
            # pooling sits between stages, so the last block's output (the embedding) feeds the classifier directly
            if s in config.pool_after:
                self.stages.add_module(f"pool{s + 1}", nn.MaxPool2d(2, ceil_mode=True))
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Conv2d(in_ch, config.n_classes, kernel_size=1, bias=False),
            nn.BatchNorm2d(config.n_classes),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.embedding_layer: str = config.embedding_layer
        self.embedding_channels: int = in_ch
        self.apply(initialize_weights)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, in_channels, F, T] -> logits [B, n_classes]."""
        return self.classifier(self._features(x)).flatten(1)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits [B, n_classes], embedding [B, C, H, W]: the last block's output before the classifier)."""
        features = self._features(x)
        return self.classifier(features).flatten(1), features


def build_teacher(config: TeacherConfig | Mapping[str, Any] | None = None) -> Teacher:
    """A freshly initialised teacher for ``config`` (a :class:`TeacherConfig` or its dict; None = the defaults)."""
    if config is None:
        config = TeacherConfig()
    elif isinstance(config, Mapping):
        config = TeacherConfig.from_dict(config)
    elif not isinstance(config, TeacherConfig):
        raise ConfigError(f"teacher config must be a TeacherConfig or a mapping, got {type(config).__name__}")
    return Teacher(config)
