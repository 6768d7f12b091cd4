"""Transitional re-export: Phase I now lives in :mod:`asc_search.teacher.train`, :mod:`asc_search.teacher.embed` and
:mod:`asc_search.teacher.folder` (import from :mod:`asc_search.teacher`). Kept only for the modules that still import
``asc_search.teacher.phase1`` (demo.py, bench/teacher.py, bench/runner.py, tests/conftest.py); delete it once they
import from ``asc_search.teacher``."""

from .embed import EMBEDDING_MODES, embed_features, embed_shard, import_teacher
from .folder import METRICS_FILE, TEACHER_FILE, TEACHER_META, LoadedTeacher, check_teacher_out_dir, load_teacher
from .train import TeacherRun, default_teacher_preset, default_train_config, train_teacher

__all__ = [
    "TEACHER_FILE",
    "TEACHER_META",
    "METRICS_FILE",
    "EMBEDDING_MODES",
    "TeacherRun",
    "LoadedTeacher",
    "check_teacher_out_dir",
    "default_teacher_preset",
    "default_train_config",
    "train_teacher",
    "load_teacher",
    "embed_features",
    "embed_shard",
    "import_teacher",
]
