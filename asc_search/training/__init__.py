"""Training building blocks, one idea per module: ``config`` (TrainConfig), ``data`` (TensorData), ``loop`` (the one
fit loop and its FitState), ``losses`` (distillation), ``augment``, ``metrics`` (DCASE scores), ``inference``
(the one batched forward loop), ``qat`` (quantisation-aware fine-tuning through fit)."""

from .augment import Masking, device_ir, freq_mixstyle, mixup, time_roll
from .config import OPTIMIZERS, TrainConfig
from .data import TensorData
from .inference import predict
from .loop import DivergedError, FitResult, FitState, fit
from .losses import EMB_LOSSES, DistillConfig, distill_terms
from .metrics import LOG_LOSS_EPS, accuracy, log_loss, macro_accuracy, per_class_accuracy, score
from .qat import QatStudent, qat_finetune

__all__ = [
    "OPTIMIZERS",
    "TrainConfig",
    "TensorData",
    "FitState",
    "FitResult",
    "DivergedError",
    "fit",
    "predict",
    "EMB_LOSSES",
    "DistillConfig",
    "distill_terms",
    "device_ir",
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
    "QatStudent",
    "qat_finetune",
]
