"""Training building blocks: the one fit loop, distillation losses, augmentations and metrics."""

from .augment import Masking, freq_mixstyle, mixup, time_roll
from .loop import OPTIMIZERS, DivergedError, FitResult, TensorData, TrainConfig, fit, predict
from .losses import EMB_LOSSES, DistillConfig, distill_loss, distill_terms
from .metrics import LOG_LOSS_EPS, accuracy, log_loss, macro_accuracy, per_class_accuracy, score

__all__ = [
    "OPTIMIZERS",
    "TrainConfig",
    "TensorData",
    "FitResult",
    "DivergedError",
    "fit",
    "predict",
    "EMB_LOSSES",
    "DistillConfig",
    "distill_loss",
    "distill_terms",
    "freq_mixstyle",
    "mixup",
    "time_roll",
    "Masking",
    "LOG_LOSS_EPS",
    "macro_accuracy",
    "accuracy",
    "log_loss",
    "per_class_accuracy",
    "score",
]
