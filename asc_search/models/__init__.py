"""The model zoo: students (simplified CP-Mobile), teachers (CP-ResNet-like), the DCASE baselines, train-only
heads and named presets. Models never import Ray."""

from .baselines import DCASE2023Baseline
from .heads import ProjectionHead
from .presets import PRESETS, Preset, build_preset, get_preset, preset_names
from .student import BlockSpec, Student, StudentConfig, build_student
from .teacher import Teacher, TeacherConfig, build_teacher

__all__ = [
    "BlockSpec",
    "DCASE2023Baseline",
    "PRESETS",
    "Preset",
    "ProjectionHead",
    "Student",
    "StudentConfig",
    "Teacher",
    "TeacherConfig",
    "build_preset",
    "build_student",
    "build_teacher",
    "get_preset",
    "preset_names",
]
