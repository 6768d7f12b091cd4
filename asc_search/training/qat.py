"""Quantisation-aware fine-tuning (QAT) of a student, for an int8 graph that loses less than post-training
quantisation alone: :func:`qat_finetune`.

How (torch 2.14): ``torch.ao.quantization.quantize_fx.prepare_qat_fx`` traces the student and fuses every conv +
BatchNorm (+ ReLU) into a QAT module that folds the BatchNorm into the conv weight before fake-quantising it (the
weight trained is the one the deployed graph stores after the exporter's BatchNorm folding), and puts a fake
quantiser after every activation and residual add. The fake quantisation mirrors onnxruntime's QDQ scheme
(:mod:`asc_search.deploy.quantize`): symmetric per-channel int8 weights on [-64, 64] (7-bit, ``reduce_range``) or
[-127, 127]; activations affine 8-bit per tensor (torch's quint8 [0, 255] is onnxruntime's int8 [-128, 127] shifted by
128: the same rounding).

Training is the package's ONE loop, :func:`asc_search.training.loop.fit`, on a :class:`QatStudent` wrapper, with the
trial's own losses (CE + KD + embedding matching through the train-only projection head), its augmentations,
schedule and per-epoch validation on the fake-quantised model; mixed precision is off, the BatchNorm statistics are
frozen for the last epoch, observers only run in training mode (never on validation clips).

Neither ONNX exporter takes the QAT graph in torch 2.14 (dynamo: ``GuardOnDataDependentSymNode`` at the fake
quantiser's ``observer_enabled`` test; TorchScript: ``aten::copy`` unsupported), so the fine-tuned conv and BatchNorm
parameters are copied back into a plain student (checked: the same logits as the QAT model with fake quantisation
off), which is then exported and quantised by onnxruntime after a fresh calibration. ``torch.ao.quantization`` is
deprecated in favour of torchao but complete in the torch versions the package allows (<= 2.14.1).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from ..models.folding import conv_bn_pairs
from .config import TrainConfig
from .data import TensorData
from .loop import FitResult, fit
from .losses import DistillConfig

__all__ = ["QAT_CHECK_TOLERANCE", "qat_qconfig", "QatStudent", "prepare_qat", "fold_back", "qat_finetune"]

#: The plain student rebuilt from the QAT model must give its logits (fake quantisation off) within this (absolute,
#: scaled by max(1, |logit|max)).
QAT_CHECK_TOLERANCE = 1e-4


def qat_qconfig(reduce_range: bool = True) -> Any:
    """The torch QConfig that mirrors onnxruntime's int8 QDQ scheme (see the module docstring)."""
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
        QConfig,
    )

    activation = FakeQuantize.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    bound = 64 if reduce_range else 127
    weight = FakeQuantize.with_args(observer=MovingAveragePerChannelMinMaxObserver, quant_min=-bound,
                                    quant_max=bound, dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    return QConfig(activation=activation, weight=weight)


class _WithEmbedding(nn.Module):
    """``forward`` = the student's ``forward_with_embedding`` (FX traces ``forward`` only)."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.student.forward_with_embedding(x)


class QatStudent(nn.Module):
    """The fake-quantised student as :func:`~asc_search.training.loop.fit` takes a model: ``forward`` gives the
    logits, ``forward_with_embedding`` (logits, feature map). Observers update in training mode only."""

    def __init__(self, prepared: nn.Module) -> None:
        super().__init__()
        self.prepared = prepared

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prepared(x)[0]

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prepared(x)

    def train(self, mode: bool = True) -> QatStudent:
        from torch.ao.quantization import disable_observer, enable_observer

        super().train(mode)
        self.prepared.apply(enable_observer if mode else disable_observer)
        return self


def prepare_qat(student: nn.Module, example: torch.Tensor, reduce_range: bool = True) -> QatStudent:
    """A fake-quantised copy of ``student`` (left untouched), traced on ``example`` clips."""
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    traced = _WithEmbedding(copy.deepcopy(student).cpu().train())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        prepared = prepare_qat_fx(traced, QConfigMapping().set_global(qat_qconfig(reduce_range)),
                                  example_inputs=(example[:2].float().cpu(),))
    return QatStudent(prepared)


def _updates(module: nn.Module, name: str, pairs: dict[str, str]) -> dict[str, torch.Tensor]:
    from torch.ao.nn.intrinsic.qat.modules.conv_fused import _ConvBnNd

    if isinstance(module, _ConvBnNd):
        out = {f"{name}.weight": module.weight}
        out.update({f"{pairs[name]}.{k}": v for k, v in module.bn.state_dict().items()})
        return out
    if isinstance(module, (nn.Conv2d, nn.Linear)):  # a QAT conv / linear without BatchNorm
        return {f"{name}.{k}": v for k, v in module.state_dict().items() if k in ("weight", "bias")}
    return {}


def fold_back(qat: QatStudent, student: nn.Module, check_x: torch.Tensor) -> tuple[nn.Module, float]:
    """(a copy of ``student`` holding the QAT model's conv and BatchNorm parameters and statistics, in eval mode;
    the largest logit difference from the QAT model with fake quantisation off on ``check_x``). A difference over
    :data:`QAT_CHECK_TOLERANCE`, or a student parameter the QAT model does not cover, is a RuntimeError (a bug)."""
    from torch.ao.quantization import disable_fake_quant, enable_fake_quant

    qat = qat.cpu()
    pairs = conv_bn_pairs(student)
    state = student.state_dict()
    written: set[str] = set()
    prefix = "student."
    for path, module in qat.prepared.named_modules():
        name = path[len(prefix):] if path.startswith(prefix) else path
        for key, value in _updates(module, name, pairs).items():
            state[key] = value.detach().clone()
            written.add(key)
    missing = [k for k, _ in student.named_parameters() if k not in written]
    if missing:
        raise RuntimeError(f"QAT did not cover the parameters {missing[:5]} of the student (a fusion the fold-back "
                           "does not know)")
    folded = copy.deepcopy(student).cpu()
    folded.load_state_dict(state)
    folded.eval()
    qat.eval()
    qat.prepared.apply(disable_fake_quant)
    with torch.no_grad():
        want, got = qat(check_x.float()), folded(check_x.float())
    qat.prepared.apply(enable_fake_quant)
    diff = float((want - got).abs().max())
    limit = QAT_CHECK_TOLERANCE * max(1.0, float(want.abs().max()))
    if not diff <= limit:
        raise RuntimeError(f"the student rebuilt from the QAT model differs from it by {diff:.3g} (> {limit:.3g})")
    return folded, diff


def qat_finetune(
    model: nn.Module,
    train: TensorData,
    val: TensorData | None,
    cfg: TrainConfig,
    *,
    epochs: int,
    lr: float,
    distill: DistillConfig | None = None,
    head: nn.Module | None = None,
    reduce_range: bool = True,
    dir_log_gains: Any = None,
) -> tuple[nn.Module, FitResult, float]:
    """Fine-tune ``model`` (a student, left untouched) for ``epochs`` epochs at peak ``lr`` under int8 fake
    quantisation with :func:`~asc_search.training.loop.fit` and the training settings ``cfg`` (its epochs, lr,
    warm-up and mixed precision replaced: no warm-up, float32). ``distill`` and the train-only ``head`` as in
    ``fit``. Keeps the epoch with the best validation macro accuracy of the fake-quantised model (the last epoch
    without ``val``). Returns (the fine-tuned plain student in eval mode, fit's result, the fold-back difference)."""
    qat = prepare_qat(model, train.x[:2], reduce_range=reduce_range)
    last = int(epochs)

    def on_epoch(epoch: int, _metrics: dict[str, Any], _state: Any) -> None:
        if last > 1 and epoch == last - 1:  # the last epoch trains with frozen BatchNorm statistics
            from torch.ao.nn.intrinsic.qat import freeze_bn_stats

            qat.prepared.apply(freeze_bn_stats)

    run_cfg = cfg.replace(epochs=last, lr=float(lr), warmup_epochs=0.0, amp=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fit(qat, train, val, run_cfg, distill=distill, head=head, on_epoch=on_epoch,
                     dir_log_gains=dir_log_gains)
    qat.load_state_dict(result.best_state)
    folded, diff = fold_back(qat, model, train.x[:16])
    return folded, result, diff
