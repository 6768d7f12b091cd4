"""Phase I: train a teacher, embed every clip with it (or an ensemble), import external targets."""

from .phase1 import (
    EMBEDDING_MODES,
    METRICS_FILE,
    TEACHER_FILE,
    TEACHER_META,
    LoadedTeacher,
    TeacherRun,
    check_teacher_out_dir,
    default_teacher_preset,
    default_train_config,
    embed_features,
    embed_shard,
    import_teacher,
    load_teacher,
    train_teacher,
)

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
