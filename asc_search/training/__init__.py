"""Training building blocks, one idea per module: ``config`` (TrainConfig), ``data`` (TensorData), ``loop`` (the one
fit loop), ``state`` (its FitState, FitResult and DivergedError), ``perf`` (memory format, fused optimiser, the
NaN watch), ``losses`` (distillation), ``augment``, ``metrics`` (DCASE scores), ``inference`` (the one batched
forward loop), ``qat`` (quantisation-aware fine-tuning through fit), ``seeds`` (one configuration over seeds:
mean ± sd, paired differences)."""

from .augment import Masking, device_ir, freq_mixstyle, mixup, time_roll
from .config import OPTIMIZERS, TrainConfig, steps_per_epoch
from .data import TensorData
from .inference import predict
from .loop import fit
from .losses import EMB_LOSSES, DistillConfig, distill_terms
from .metrics import LOG_LOSS_EPS, accuracy, log_loss, macro_accuracy, per_class_accuracy, score
from .perf import MEMORY_FORMATS
from .qat import QatStudent, qat_finetune
from .seeds import mean_sd, paired, summarise_runs, train_seeds
from .state import DivergedError, FitResult, FitState

__all__ = [
    "OPTIMIZERS",
    "MEMORY_FORMATS",
    "TrainConfig",
    "steps_per_epoch",
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
    "train_seeds",
    "mean_sd",
    "paired",
    "summarise_runs",
]
