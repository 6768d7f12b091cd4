"""Named models: the DCASE baselines and the teacher presets, each with the input shape it is costed on.

``build_preset(name) -> (model, input_shape)``; :data:`PRESETS` lists the names. An unknown name raises
:class:`ConfigError` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from .baselines import DCASE2023Baseline
from .student import DCASE2024_STRIDES, StudentConfig, build_student
from .teacher import TeacherConfig, build_teacher

__all__ = [
    "Preset",
    "PRESETS",
    "get_preset",
    "build_preset",
    "preset_names",
    "DCASE2024_BASELINE",
    "TEACHER",
    "TEACHER_QUICK",
]

#: The DCASE 2024 Task 1 baseline: simplified CP-Mobile, 61,148 params, 29,419,156 MACs on 1 x 1 x 256 x 65.
DCASE2024_BASELINE = StudentConfig(
    n_classes=10,
    in_channels=1,
    base_channels=32,
    channels_multiplier=1.8,
    expansion_rate=2.1,
    n_blocks=(3, 2, 1),
    strides=dict(DCASE2024_STRIDES),
)

#: The default teacher for the ``dcase`` profile (256 x 65): ~3.7 M params, ~0.41 G MACs.
TEACHER = TeacherConfig()

#: A teacher for the ``quick`` profile (40 x 51) and the demo: ~1.7 M params but only ~29 M MACs.
TEACHER_QUICK = TeacherConfig(n_blocks=(1, 1, 1, 1))


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, int, int, int]  # (1, C, F, T) the model is costed on
    param_dtype: str  # how its parameters are stored when deployed
    family: str  # "student", "baseline" or "teacher"
    config: object | None = None  # StudentConfig / TeacherConfig where the family has one


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "dcase2024_baseline",
            "DCASE 2024 Task 1 baseline (simplified CP-Mobile), parameters stored as float16",
            lambda: build_student(DCASE2024_BASELINE),
            (1, 1, 256, 65),
            "float16",
            "student",
            DCASE2024_BASELINE,
        ),
        Preset(
            "dcase2024_baseline_quick",
            "the DCASE 2024 baseline architecture on the quick profile's 40 x 51 input",
            lambda: build_student(DCASE2024_BASELINE),
            (1, 1, 40, 51),
            "float16",
            "student",
            DCASE2024_BASELINE,
        ),
        Preset(
            "dcase2023_baseline",
            "DCASE 2022/2023 Task 1 baseline CNN on 40 x 51 log-mel input",
            lambda: DCASE2023Baseline(),
            (1, 1, 40, 51),
            "int8",
            "baseline",
            None,
        ),
        Preset(
            "teacher",
            "CP-ResNet-like teacher for the dcase profile (256 x 65)",
            lambda: build_teacher(TEACHER),
            (1, 1, 256, 65),
            "float32",
            "teacher",
            TEACHER,
        ),
        Preset(
            "teacher_quick",
            "smaller CP-ResNet-like teacher for the quick profile (40 x 51) and the demo",
            lambda: build_teacher(TEACHER_QUICK),
            (1, 1, 40, 51),
            "float32",
            "teacher",
            TEACHER_QUICK,
        ),
    )
}


def preset_names() -> tuple[str, ...]:
    return tuple(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset ``name``; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown model preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def build_preset(name: str) -> tuple[nn.Module, tuple[int, int, int, int]]:
    """-> (a freshly initialised model, the input shape (1, C, F, T) it is costed on)."""
    preset = get_preset(name)
    return preset.factory(), preset.input_shape
