"""Phase I: train a teacher (``train``), the teacher folder it writes and every later step loads (``folder``), and
the teacher cache of embeddings and logits, computed by one teacher or an ensemble or imported (``embed``)."""

from .embed import EMBEDDING_MODES, embed_features, embed_shard, import_teacher
from .folder import (
    METRICS_FILE,
    TEACHER_FILE,
    TEACHER_META,
    LoadedTeacher,
    check_teacher_out_dir,
    load_teacher,
    write_teacher,
)
from .train import TeacherRun, default_teacher_preset, default_train_config, train_teacher

__all__ = [
    "TEACHER_FILE",
    "TEACHER_META",
    "METRICS_FILE",
    "EMBEDDING_MODES",
    "TeacherRun",
    "LoadedTeacher",
    "check_teacher_out_dir",
    "write_teacher",
    "default_teacher_preset",
    "default_train_config",
    "train_teacher",
    "load_teacher",
    "embed_features",
    "embed_shard",
    "import_teacher",
]
