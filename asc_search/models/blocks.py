"""Building blocks shared by the model families: channel rounding, conv-BN-activation, the inverted bottleneck.

No torchvision here (it is not a dependency): :class:`ConvNormAct` plays the part of torchvision's
``Conv2dNormActivation``. A convolution followed by batch norm has no bias (the norm's shift replaces it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["make_divisible", "pair", "ConvNormAct", "InvertedResidual", "initialize_weights"]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``min_value``), never more than 10 % down.

    The MobileNet rule the DCASE 2024 baseline uses for every channel count.
    """
    if min_value is None:
        min_value = divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def pair(value: int | Sequence[int]) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(1, 2)`` -> ``(1, 2)``."""
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + optional ReLU; ``padding`` defaults to "same-ish" ``(k - 1) // 2``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        activation: bool = True,
    ) -> None:
        kernel = pair(kernel_size)
        if padding is None:
            padding = ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size=kernel,
                stride=pair(stride),
                padding=pair(padding),
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
        ]
        if activation:
            layers.append(nn.ReLU(inplace=True))  # on the norm's fresh output: saves a tensor per layer
        super().__init__(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """CP-Mobile's inverted bottleneck: 1x1 expand + BN + ReLU, 3x3 depthwise (stride) + BN + ReLU, 1x1 project + BN.

    A residual shortcut is added when input and output channels match (through a 3x3 average pool with the same
    stride when the block is strided); ReLU after the sum.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion_rate: float, stride: tuple[int, int]) -> None:
        super().__init__()
        stride = pair(stride)
        exp_channels = make_divisible(in_channels * expansion_rate, 8)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.exp_channels = exp_channels
        self.stride = stride
        self.block = nn.Sequential(
            ConvNormAct(in_channels, exp_channels, kernel_size=1, stride=1, padding=0),
            ConvNormAct(exp_channels, exp_channels, kernel_size=3, stride=stride, padding=1, groups=exp_channels),
            ConvNormAct(exp_channels, out_channels, kernel_size=1, stride=1, padding=0, activation=False),
        )
        self.use_shortcut = in_channels == out_channels
        if self.use_shortcut and stride != (1, 1):
            self.shortcut: nn.Module = nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)
        else:
            self.shortcut = nn.Identity()
        self.after_block_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)  # a fresh tensor (the last norm's output), so the sum and ReLU may work in place
        if self.use_shortcut:
            out += self.shortcut(x)
        return self.after_block_activation(out)


def initialize_weights(module: nn.Module) -> None:
    """Kaiming (fan-out) for convolutions, ones/zeros for norms, small normal for linear layers."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
