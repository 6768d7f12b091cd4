"""The student family: a configurable, simplified CP-Mobile (the DCASE 2024 Task 1 baseline architecture).

Channel counts are rounded to multiples of 8; stage widths are ``[base] + [base * multiplier**i for each stage i]``.
A stem of two 3x3 stride-2 conv-BN-ReLU layers (base/4 then base channels) is followed by inverted bottleneck blocks
numbered ``b1, b2, ...`` across stages, and a head of a 1x1 conv to ``n_classes`` (no bias), BN and global average
pooling. :class:`StudentConfig` holds every choice; :func:`build_student` makes the network. The output feature map
of any block (``embed_block``) can be exposed for embedding distillation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..config import reject_unknown_keys
from ..errors import ConfigError, quote
from .blocks import ConvNormAct, InvertedResidual, initialize_weights, make_divisible

__all__ = ["StudentConfig", "BlockSpec", "Student", "build_student", "DCASE2024_STRIDES"]

#: The DCASE 2024 baseline's per-block strides (frequency, time); every other block has (1, 1).
DCASE2024_STRIDES: dict[str, tuple[int, int]] = {"b2": (1, 1), "b3": (1, 2), "b4": (2, 1)}


def _default_strides() -> dict[str, tuple[int, int]]:
    return dict(DCASE2024_STRIDES)


@dataclass(frozen=True)
class BlockSpec:
    """One inverted bottleneck block as the config determines it (enough to cost it without building it)."""

    name: str  # "b1", "b2", ...
    stage: int  # 0-based stage index
    in_channels: int
    out_channels: int
    exp_channels: int  # 1x1 expansion width (in_channels * expansion_rate, rounded to 8)
    stride: tuple[int, int]  # (frequency, time) stride of the depthwise conv
    residual: bool  # in_channels == out_channels


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of one student (simplified CP-Mobile). Validated on construction; errors name the key."""

    n_classes: int = 10  # output classes
    in_channels: int = 1  # input channels of the spectrogram (1 for a single log-mel)
    base_channels: int = 32  # width after the stem (rounded to a multiple of 8)
    channels_multiplier: float = 1.8  # stage i widens to base * multiplier**i (rounded to 8)
    expansion_rate: float = 2.1  # inverted bottleneck expansion (in * rate, rounded to 8)
    n_blocks: tuple[int, ...] = (3, 2, 1)  # blocks per stage; blocks are named b1..bN across stages
    strides: Mapping[str, tuple[int, int]] = field(default_factory=_default_strides)  # block -> (freq, time)
    embed_block: str | None = None  # block whose output feature map is exposed for distillation; None = last

    def __post_init__(self) -> None:
        for key in ("n_classes", "in_channels", "base_channels"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ConfigError(f"student config: {key} must be a positive integer, got {quote(value)}")
            object.__setattr__(self, key, int(value))  # numpy integers from a sampler become plain ints
        for key in ("channels_multiplier", "expansion_rate"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"student config: {key} must be a number, got {quote(value)}")
            object.__setattr__(self, key, float(value))
        if self.channels_multiplier <= 0:
            raise ConfigError(f"student config: channels_multiplier must be > 0, got {quote(self.channels_multiplier)}")
        if self.expansion_rate < 1:
            raise ConfigError(f"student config: expansion_rate must be >= 1, got {quote(self.expansion_rate)}")

        n_blocks = self.n_blocks
        if isinstance(n_blocks, (str, bytes)) or not isinstance(n_blocks, Sequence) or len(n_blocks) == 0:
            raise ConfigError(
                f"student config: n_blocks must be a non-empty list of blocks per stage, e.g. [3, 2, 1]; got {quote(n_blocks)}"
            )
        for i, count in enumerate(n_blocks):
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count <= 0:
                raise ConfigError(
                    f"student config: n_blocks[{i}] (stage {i + 1}) must be a positive integer, got {quote(count)}"
                )
        object.__setattr__(self, "n_blocks", tuple(int(c) for c in n_blocks))

        names = self.block_names
        if not isinstance(self.strides, Mapping):
            raise ConfigError(
                f"student config: strides must map block names to (freq, time) strides, got {quote(self.strides)}"
            )
        strides: dict[str, tuple[int, int]] = {}
        for name, stride in self.strides.items():
            if name not in names:
                raise ConfigError(
                    f"student config: strides names block {name!r}, which does not exist; "
                    f"valid blocks for n_blocks={list(self.n_blocks)}: {', '.join(names)}"
                )
            strides[name] = _parse_stride(name, stride)
        # Canonical order b1..bN, so that equal configs compare and serialise equally.
        object.__setattr__(self, "strides", {n: strides[n] for n in names if n in strides})

        if self.embed_block is not None and self.embed_block not in names:
            raise ConfigError(
                f"student config: embed_block {self.embed_block!r} does not exist; "
                f"valid choices: {', '.join(names)} (or null for the last block)"
            )

    # -- derived -----------------------------------------------------------------------------------------------
    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.to_dict().items())))

    @property
    def block_names(self) -> tuple[str, ...]:
        """``("b1", ..., "bN")`` with N = sum(n_blocks)."""
        return tuple(f"b{i + 1}" for i in range(sum(self.n_blocks)))

    @property
    def resolved_embed_block(self) -> str:
        """``embed_block``, or the last block's name when it is None."""
        return self.embed_block if self.embed_block is not None else self.block_names[-1]

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Widths: index 0 is the stem's output, index i+1 the output of stage i."""
        base = make_divisible(self.base_channels, 8)
        return (base,) + tuple(
            make_divisible(base * self.channels_multiplier**stage, 8) for stage in range(len(self.n_blocks))
        )

    def block_specs(self) -> tuple[BlockSpec, ...]:
        """Every block's channels, expansion and stride, in order."""
        widths = self.stage_channels
        specs: list[BlockSpec] = []
        index = 0
        for stage, count in enumerate(self.n_blocks):
            in_ch, out_ch = widths[stage], widths[stage + 1]
            for _ in range(count):
                index += 1
                name = f"b{index}"
                specs.append(
                    BlockSpec(
                        name=name,
                        stage=stage,
                        in_channels=in_ch,
                        out_channels=out_ch,
                        exp_channels=make_divisible(in_ch * self.expansion_rate, 8),
                        stride=self.strides.get(name, (1, 1)),
                        residual=in_ch == out_ch,
                    )
                )
                in_ch = out_ch
        return tuple(specs)

    def embedding_channels(self) -> int:
        """Channels of the exposed feature map (``embed_block``'s output)."""
        target = self.resolved_embed_block
        return next(spec.out_channels for spec in self.block_specs() if spec.name == target)

    def embedding_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """(C, H, W) of the exposed feature map for an input of ``(B, C, F, T)`` or ``(F, T)``."""
        f, t = int(input_shape[-2]), int(input_shape[-1])
        # stem: two 3x3 stride-2 convs with padding 1
        for _ in range(2):
            f, t = _conv_out(f, 3, 2, 1), _conv_out(t, 3, 2, 1)
        target = self.resolved_embed_block
        for spec in self.block_specs():
            f, t = _conv_out(f, 3, spec.stride[0], 1), _conv_out(t, 3, spec.stride[1], 1)
            if spec.name == target:
                return (spec.out_channels, f, t)
        raise AssertionError("unreachable: embed block validated")  # pragma: no cover

    # -- (de)serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists, dicts): YAML/JSON-safe; ``from_dict(to_dict())`` gives an equal config."""
        return {
            "n_classes": self.n_classes,
            "in_channels": self.in_channels,
            "base_channels": self.base_channels,
            "channels_multiplier": self.channels_multiplier,
            "expansion_rate": self.expansion_rate,
            "n_blocks": list(self.n_blocks),
            "strides": {name: list(stride) for name, stride in self.strides.items()},
            "embed_block": self.embed_block,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudentConfig:
        """Build from plain types (lists for tuples); unknown keys are refused, listing the valid ones."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"student config must be a mapping of keys to values, got {type(data).__name__}")
        reject_unknown_keys(cls, data, "student config")
        kwargs = dict(data)
        if "n_blocks" in kwargs and isinstance(kwargs["n_blocks"], list):
            kwargs["n_blocks"] = tuple(kwargs["n_blocks"])
        if "strides" in kwargs and kwargs["strides"] is None:
            kwargs["strides"] = {}
        return cls(**kwargs)


def _parse_stride(name: str, stride: Any) -> tuple[int, int]:
    if isinstance(stride, bool):
        stride = None
    if isinstance(stride, numbers.Integral):
        stride = (stride, stride)
    if (
        not isinstance(stride, (tuple, list))
        or len(stride) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in stride)
    ):
        raise ConfigError(
            f"student config: strides[{name!r}] must be a positive integer or a (freq, time) pair of positive "
            f"integers, got {quote(stride)}"
        )
    return (int(stride[0]), int(stride[1]))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class Student(nn.Module):
    """A simplified CP-Mobile built from a :class:`StudentConfig` (use :func:`build_student`)."""

    def __init__(self, config: StudentConfig, init_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        widths = config.stage_channels
        self.in_c = nn.Sequential(
            ConvNormAct(config.in_channels, widths[0] // 4, kernel_size=3, stride=2),
            ConvNormAct(widths[0] // 4, widths[0], kernel_size=3, stride=2),
        )
        self.stages = nn.Sequential()
        specs = config.block_specs()
        for stage in range(len(config.n_blocks)):
            stage_module = nn.Sequential()
            for spec in specs:
                if spec.stage == stage:
                    stage_module.add_module(
                        spec.name,
                        InvertedResidual(spec.in_channels, spec.out_channels, config.expansion_rate, spec.stride),
                    )
            self.stages.add_module(f"s{stage + 1}", stage_module)
        self.feed_forward = nn.Sequential(
            nn.Conv2d(widths[-1], config.n_classes, kernel_size=1, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(config.n_classes),
            nn.AdaptiveAvgPool2d((1, 1)),
        )
        self.block_names: tuple[str, ...] = config.block_names
        self.embed_block: str = config.resolved_embed_block
        self.embedding_channels: int = config.embedding_channels()
        if init_weights:
            self.apply(initialize_weights)

    def _blocks(self):
        for stage in self.stages:
            yield from stage.named_children()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, in_channels, F, T] -> logits [B, n_classes]."""
        x = self.stages(self.in_c(x))
        return self.feed_forward(x).flatten(1)

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits [B, n_classes], feature map [B, C, H, W] of ``embed_block``)."""
        x = self.in_c(x)
        embedding = None
        for name, block in self._blocks():
            x = block(x)
            if name == self.embed_block:
                embedding = x
        assert embedding is not None
        return self.feed_forward(x).flatten(1), embedding


def build_student(config: StudentConfig | Mapping[str, Any] | None = None, init_weights: bool = True) -> Student:
    """A freshly initialised student for ``config`` (a :class:`StudentConfig` or its dict; None = the defaults).

    ``init_weights=False`` skips the Kaiming initialisation (PyTorch's default init stays): enough for costing.
    """
    if config is None:
        config = StudentConfig()
    elif isinstance(config, Mapping):
        config = StudentConfig.from_dict(config)
    elif not isinstance(config, StudentConfig):
        raise ConfigError(f"student config must be a StudentConfig or a mapping, got {type(config).__name__}")
    return Student(config, init_weights=init_weights)
