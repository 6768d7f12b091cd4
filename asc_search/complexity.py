"""Complexity accounting by the DCASE Task 1 organisers' convention, and the budget check.

The counter is torchinfo's ``summary(model, input_size=...)`` (what the organisers use): ``total_params`` and
``total_mult_adds`` on the model in full precision with the real front-end output shape (batch 1) as input. Per layer
that means: a convolution costs ``(in/groups) * out * kh * kw * out_h * out_w`` MACs (plus ``out * out_h * out_w``
for a bias); a linear layer ``in * out (+ out)``; a batch norm ``2 * channels`` (its parameter count, not per
element); activations, pooling and residual additions nothing. All parameters count, batch-norm weight and bias too.
The mel front end is not counted, nor are train-only parts such as the distillation projection head.

``param_bytes`` = params x bytes per parameter of the storage dtype (int8 1, float16 2, float32 4). The deployed
graph stores something slightly different (:mod:`asc_search.models.folding`): every BatchNorm folded into the conv
before it, so ``deployed_param_bytes`` = kernel elements x dtype bytes + bias elements (one per folded BatchNorm
channel) x bias bytes (int32 for int8, else the dtype's). Both are held against ``max_param_bytes``.

Students are also counted analytically (:func:`student_cost_from_config`): the same convention applied to the
layers a :class:`~asc_search.models.student.StudentConfig` determines, with output sizes as PyTorch computes them,
from the config alone (no model, no forward; tens of microseconds). :func:`cost_student` rejects an over-budget
proposal on that count and confirms every proposal that passes with torchinfo, whose figures are then the ones
reported (``counter`` says which counter produced a report's figures). The tests hold both counts equal.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._runtime import torch_threads
from .config import DEPLOYED_BIAS_BYTES, DTYPE_BYTES, Budget
from .errors import ConfigError
from .models.folding import folded_counts

__all__ = [
    "Complexity",
    "BudgetReport",
    "measure",
    "check_budget",
    "cost_student",
    "student_cost_from_config",
    "COUNTERS",
    "parse_input_shape",
    "TRAIN_ONLY_NOTE",
]

#: Said by every report: what the figures leave out.
TRAIN_ONLY_NOTE = (
    "Train-only parts (the distillation projection head, auxiliary classifiers) and the mel front end are "
    "excluded: they are not part of the deployed model."
)


@dataclass(frozen=True)
class Complexity:
    """A model's cost for one input shape (batch 1)."""

    params: int  # all parameters, batch-norm weight and bias included
    param_bytes: int  # params * bytes of param_dtype
    macs: int  # multiply-accumulates for one input of input_shape
    param_dtype: str  # storage dtype the bytes are computed for
    input_shape: tuple[int, ...] = ()  # (1, C, F, T)
    layers: tuple[tuple[str, str, int, int], ...] = field(default=(), compare=False, repr=False)
    # per leaf layer: (name, class name, params, macs) for layers with params or MACs
    counter: str = field(default="torchinfo", compare=False)  # "torchinfo" or "analytic": who counted
    n_kernel: int | None = None  # weight elements of the deployed graph (conv / linear kernels); None: not counted
    n_bias: int | None = None  # its bias elements after BatchNorm folding (one per folded BatchNorm channel)

    @property
    def deployed_param_bytes(self) -> int | None:
        """Bytes of the deployed graph's weights at ``param_dtype``: kernels x dtype bytes + biases x bias bytes
        (int32 in an int8 graph); None when the deployed form was not counted."""
        if self.n_kernel is None or self.n_bias is None:
            return None
        return self.n_kernel * DTYPE_BYTES[self.param_dtype] + self.n_bias * DEPLOYED_BIAS_BYTES[self.param_dtype]

    def with_dtype(self, dtype: str) -> Complexity:
        """The same figures for another storage dtype."""
        _check_dtype(dtype)
        return dataclasses.replace(self, param_bytes=self.params * DTYPE_BYTES[dtype], param_dtype=dtype)

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "param_bytes": self.param_bytes,
            "deployed_param_bytes": self.deployed_param_bytes,
            "macs": self.macs,
            "param_dtype": self.param_dtype,
            "input_shape": list(self.input_shape),
            "counter": self.counter,
        }


@dataclass(frozen=True)
class BudgetReport:
    """A model's figures against a budget: one row per figure (figure, value, limit, ok)."""

    complexity: Complexity
    budget: Budget
    rows: tuple[tuple[str, int, int, bool], ...]

    @property
    def passed(self) -> bool:
        return all(ok for _, _, _, ok in self.rows)

    @property
    def counter(self) -> str:
        """Who counted the figures: ``"torchinfo"`` (the organisers' tool) or ``"analytic"`` (from the config)."""
        return self.complexity.counter

    @property
    def failures(self) -> tuple[str, ...]:
        """Human-readable reasons, empty when passed (e.g. ``"macs 31,000,000 > 30,000,000"``)."""
        return tuple(f"{name} {value:,} > {limit:,}" for name, value, limit, ok in self.rows if not ok)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.complexity.to_dict(),
            "limits": {
                "max_params": self.budget.max_params,
                "max_param_bytes": self.budget.max_param_bytes,
                "max_macs": self.budget.max_macs,
                "param_dtype": self.budget.param_dtype,
            },
            "rows": [{"figure": n, "value": v, "limit": lim, "ok": ok} for n, v, lim, ok in self.rows],
            "passed": self.passed,
            "note": TRAIN_ONLY_NOTE,
        }


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"unknown parameter dtype {dtype!r}; valid dtypes: {', '.join(DTYPE_BYTES)}")


def parse_input_shape(shape: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,1,256,65"`` or a sequence -> a tuple of 4 positive ints (batch, channels, freq, time)."""
    text = shape if isinstance(shape, str) else ",".join(str(s) for s in shape)
    try:
        values = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise ConfigError(
            f"input shape {text!r} is not a list of integers; expected 4 positive integers B,C,F,T such as 1,1,256,65"
        ) from None
    if len(values) != 4 or any(v <= 0 for v in values):
        raise ConfigError(
            f"input shape {text!r}: expected 4 positive integers B,C,F,T (batch, channels, mel bands, frames) "
            "such as 1,1,256,65"
        )
    return values


def measure(model: nn.Module, input_shape: Sequence[int], dtype: str = "int8", layers: bool = False) -> Complexity:
    """Count ``model``'s parameters, parameter bytes at ``dtype`` and MACs for ``input_shape`` with torchinfo.

    The model is run once in eval mode without gradients on zeros of ``input_shape`` (on its own device) and left in
    the training mode it had. ``layers=True`` also keeps the per-layer figures (``Complexity.layers``).
    An input shape the network cannot take raises :class:`ConfigError` naming the shape.
    """
    from torchinfo import summary

    _check_dtype(dtype)
    shape = parse_input_shape(input_shape)
    if shape[0] != 1:
        raise ConfigError(f"input shape {list(shape)}: the complexity convention counts one clip, so batch must be 1")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    # One intra-op thread: the count needs only shapes, and on a busy machine (a search driver beside running
    # trials) a multi-threaded forward of a small net waits for busy cores: 1 thread is several times faster there.
    try:
        with torch_threads(1 if device.type == "cpu" else None), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = summary(
                model,
                input_size=shape,
                verbose=0,
                depth=1,
                device=device,
                mode="eval",
                col_names=("num_params", "mult_adds"),
                cache_forward_pass=False,
            )
    except (RuntimeError, ValueError) as exc:
        cause = exc.__cause__ or exc
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(
            f"{type(model).__name__} cannot take input shape {list(shape)} (batch, channels, mel bands, frames): "
            f"{reason}"
        ) from None
    finally:
        model.train(was_training)
    layer_rows: tuple[tuple[str, str, int, int], ...] = ()
    if layers:
        rows = []
        for info in stats.summary_list:
            if info.is_leaf_layer and (info.num_params > 0 or info.macs > 0):
                name = _layer_path(info)
                rows.append((name, info.class_name, int(max(info.num_params, 0)), int(info.macs)))
        layer_rows = tuple(rows)
    params = int(stats.total_params)
    n_kernel, n_bias = folded_counts(model)
    return Complexity(
        params=params,
        param_bytes=params * DTYPE_BYTES[dtype],
        macs=int(stats.total_mult_adds),
        param_dtype=dtype,
        input_shape=shape,
        layers=layer_rows,
        counter="torchinfo",
        n_kernel=n_kernel,
        n_bias=n_bias,
    )


def _layer_path(info: Any) -> str:
    parts = []
    node = info
    while node is not None and getattr(node, "parent_info", None) is not None:
        parts.append(str(node.var_name))
        node = node.parent_info
    return ".".join(reversed(parts)) or str(info.var_name)


def check_budget(complexity: Complexity, budget: Budget | None = None) -> BudgetReport:
    """Compare ``complexity`` with ``budget`` (default: the DCASE limits, 128,000 B at int8 and 30 M MACs).

    Parameter bytes are taken at the budget's ``param_dtype``. Rows: params (limit = what fits in the byte limit),
    param_bytes (the DCASE count), deployed_param_bytes (the deployed graph's weights, when counted) and macs.
    """
    budget = budget if budget is not None else Budget()
    if complexity.param_dtype != budget.param_dtype:
        complexity = complexity.with_dtype(budget.param_dtype)
    limit = budget.max_param_bytes
    rows = [
        ("params", complexity.params, budget.max_params, complexity.params <= budget.max_params),
        ("param_bytes", complexity.param_bytes, limit, complexity.param_bytes <= limit),
    ]
    deployed = complexity.deployed_param_bytes
    if deployed is not None:
        rows.append(("deployed_param_bytes", deployed, limit, deployed <= limit))
    rows.append(("macs", complexity.macs, budget.max_macs, complexity.macs <= budget.max_macs))
    return BudgetReport(complexity=complexity, budget=budget, rows=tuple(rows))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution / pooling along one axis, as PyTorch computes it (dilation 1, floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def _student_config(config: Any) -> Any:
    from .models.student import StudentConfig

    if isinstance(config, StudentConfig):
        return config
    if config is None:
        return StudentConfig()
    return StudentConfig.from_dict(config)


def _check_student_shape(config: Any, input_shape: Sequence[int] | str) -> tuple[int, ...]:
    shape = parse_input_shape(input_shape)
    if shape[0] != 1:
        raise ConfigError(f"input shape {list(shape)}: the complexity convention counts one clip, so batch must be 1")
    if shape[1] != config.in_channels:
        raise ConfigError(
            f"input shape {list(shape)} has {shape[1]} channel(s) but the student config expects "
            f"in_channels={config.in_channels}"
        )
    return shape


def student_cost_from_config(
    config: Any,
    input_shape: Sequence[int] | str = (1, 1, 256, 65),
    dtype: str = "int8",
    layers: bool = False,
) -> Complexity:
    """Params, parameter bytes and MACs of the student ``config`` would build, counted from the config alone.

    The organisers' convention (the module docstring) applied layer by layer to the network
    :func:`asc_search.models.student.build_student` makes: stem (two 3x3 stride-2 conv-BN, padding 1, no bias),
    per block 1x1 expand conv-BN, 3x3 depthwise conv-BN with the block's stride (padding 1), 1x1 project conv-BN
    (the residual add and its average-pool shortcut are free), head 1x1 conv to n_classes (no bias) + BN (global
    pooling free). No model is built and nothing runs: tens of microseconds. ``layers=True`` also lists the
    per-layer figures under the names torchinfo gives them (``in_c.0.0``, ``stages.s1.b1.block.1.0``, ...).
    ``counter`` is ``"analytic"``. Equal to :func:`measure` on the built model (tests/test_complexity.py).
    """
    _check_dtype(dtype)
    cfg = _student_config(config)
    shape = _check_student_shape(cfg, input_shape)
    f, t = shape[2], shape[3]
    params = macs = n_kernel = n_bias = 0
    rows: list[tuple[str, str, int, int]] | None = [] if layers else None

    def conv(name: str, cin: int, cout: int, kernel: int, groups: int, out_f: int, out_t: int) -> None:
        nonlocal params, macs, n_kernel
        weights = (cin // groups) * cout * kernel * kernel  # no bias anywhere in the student
        params += weights
        n_kernel += weights
        macs += weights * out_f * out_t
        if rows is not None:
            rows.append((name, "Conv2d", weights, weights * out_f * out_t))

    def bn(name: str, channels: int) -> None:  # every BatchNorm follows a conv: folded into one bias per channel
        nonlocal params, macs, n_bias
        params += 2 * channels
        n_bias += channels
        macs += 2 * channels
        if rows is not None:
            rows.append((name, "BatchNorm2d", 2 * channels, 2 * channels))

    widths = cfg.stage_channels
    stem = (cfg.in_channels, widths[0] // 4, widths[0])
    for i in range(2):
        f, t = _conv_out(f, 3, 2, 1), _conv_out(t, 3, 2, 1)
        conv(f"in_c.{i}.0", stem[i], stem[i + 1], 3, 1, f, t)
        bn(f"in_c.{i}.1", stem[i + 1])
    for spec in cfg.block_specs():
        prefix = f"stages.s{spec.stage + 1}.{spec.name}.block"
        exp = spec.exp_channels
        conv(f"{prefix}.0.0", spec.in_channels, exp, 1, 1, f, t)
        bn(f"{prefix}.0.1", exp)
        f, t = _conv_out(f, 3, spec.stride[0], 1), _conv_out(t, 3, spec.stride[1], 1)
        conv(f"{prefix}.1.0", exp, exp, 3, exp, f, t)
        bn(f"{prefix}.1.1", exp)
        conv(f"{prefix}.2.0", exp, spec.out_channels, 1, 1, f, t)
        bn(f"{prefix}.2.1", spec.out_channels)
    conv("feed_forward.0", widths[-1], cfg.n_classes, 1, 1, f, t)
    bn("feed_forward.1", cfg.n_classes)
    return Complexity(
        params=params,
        param_bytes=params * DTYPE_BYTES[dtype],
        macs=macs,
        param_dtype=dtype,
        input_shape=shape,
        layers=tuple(rows) if rows is not None else (),
        counter="analytic",
        n_kernel=n_kernel,
        n_bias=n_bias,
    )


#: ``cost_student``'s counters: "auto" (analytic rejection, torchinfo confirmation), "analytic", "torchinfo".
COUNTERS = ("auto", "analytic", "torchinfo")


#: torchinfo's counts by architecture (LRU, 4,096 entries): proposals differ in their float ranges but channels are
#: rounded to multiples of 8, so a long search confirms the same few hundred networks again and again (~20-100 ms each).
_CONFIRMED: OrderedDict[tuple, Complexity] = OrderedDict()


def _torchinfo_count(config: Any, shape: tuple[int, ...], dtype: str) -> Complexity:
    """:func:`measure` of the student ``config`` builds (weights do not change the count), cached by architecture:
    widths, every block's channels, expansion and stride, classes, input channels, exposed block, input, dtype."""
    key = (config.stage_channels, config.block_specs(), config.n_classes, config.in_channels,
           config.resolved_embed_block, tuple(shape), dtype)
    if key in _CONFIRMED:
        _CONFIRMED.move_to_end(key)
        return _CONFIRMED[key]
    from .models.student import build_student

    with torch.device("cpu"):
        model = build_student(config, init_weights=False)
    _CONFIRMED[key] = found = measure(model, shape, dtype=dtype)
    if len(_CONFIRMED) > 4096:
        _CONFIRMED.popitem(last=False)
    return found


def cost_student(
    config: Any,
    input_shape: Sequence[int] = (1, 1, 256, 65),
    budget: Budget | None = None,
    counter: str = "auto",
) -> BudgetReport:
    """Cost a student from its config alone (no training) and check it against ``budget`` (default: DCASE's).

    ``config`` is a :class:`asc_search.models.student.StudentConfig` or its dict. With ``counter="auto"`` (what the
    search uses) the analytic count (:func:`student_cost_from_config`, microseconds) decides rejections: an
    over-budget proposal is rejected straight away (report ``counter == "analytic"``). A proposal that passes is
    built and confirmed with torchinfo, the organisers' counter, whose figures the report carries
    (``counter == "torchinfo"``): every trial that trains has been checked by torchinfo, and where the two counts
    ever differed torchinfo's wins (a :class:`RuntimeWarning` says so). ``"analytic"`` / ``"torchinfo"`` force one
    counter (benchmarks, cross-checks).
    """
    if counter not in COUNTERS:
        raise ConfigError(f"unknown complexity counter {counter!r}; valid counters: {', '.join(COUNTERS)}")
    config = _student_config(config)
    budget = budget if budget is not None else Budget()
    shape = _check_student_shape(config, input_shape)
    analytic = None
    if counter != "torchinfo":
        analytic = check_budget(student_cost_from_config(config, shape, dtype=budget.param_dtype), budget)
        if counter == "analytic" or not analytic.passed:
            return analytic
    confirmed = check_budget(_torchinfo_count(config, shape, budget.param_dtype), budget)
    if analytic is not None:
        a, c = analytic.complexity, confirmed.complexity
        if (a.params, a.macs, a.deployed_param_bytes) != (c.params, c.macs, c.deployed_param_bytes):
            warnings.warn(
                f"analytic student count (params {a.params:,}, MACs {a.macs:,}, deployed bytes "
                f"{a.deployed_param_bytes}) differs from torchinfo's and the model's (params {c.params:,}, MACs "
                f"{c.macs:,}, deployed bytes {c.deployed_param_bytes}) for {config.to_dict()} on input {list(shape)}; "
                "torchinfo's figures are used",
                RuntimeWarning,
                stacklevel=2,
            )
    return confirmed
