"""Complexity accounting: hand-computed counts for small networks, both DCASE presets against an independent
per-layer count written here (not torchinfo), budget checks and bad inputs."""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch import nn

import asc_search.complexity as complexity_module
import asc_search.models.student as student_module
from asc_search.complexity import (
    Complexity,
    check_budget,
    cost_student,
    measure,
    parse_input_shape,
    student_cost_from_config,
)
from asc_search.config import Budget
from asc_search.errors import ConfigError
from asc_search.models.blocks import make_divisible
from asc_search.models.presets import DCASE2024_BASELINE, build_preset
from asc_search.models.student import StudentConfig, build_student


# --------------------------------------------------------------------------------------------------------------
# small networks counted by hand
# --------------------------------------------------------------------------------------------------------------
def test_plain_conv_counts_weights_times_output_positions():
    model = nn.Conv2d(3, 8, kernel_size=3, padding=1, bias=False)
    c = measure(model, (1, 3, 10, 12), dtype="float32")
    assert c.params == 3 * 8 * 3 * 3 == 216
    assert c.macs == 216 * 10 * 12
    assert c.param_bytes == 216 * 4


def test_conv_bias_adds_one_mac_per_output_element():
    model = nn.Conv2d(3, 8, kernel_size=3, padding=0, bias=True)
    c = measure(model, (1, 3, 10, 12))
    out_positions = 8 * 10
    assert c.params == 216 + 8
    assert c.macs == 216 * out_positions + 8 * out_positions


def test_grouped_conv_divides_input_channels_by_groups():
    model = nn.Conv2d(8, 16, kernel_size=3, padding=1, groups=4, bias=False)
    c = measure(model, (1, 8, 6, 6))
    assert c.params == (8 // 4) * 16 * 9 == 288
    assert c.macs == 288 * 6 * 6


def test_depthwise_strided_conv():
    model = nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1, groups=8, bias=False)
    c = measure(model, (1, 8, 7, 9))  # -> 4 x 5
    assert c.params == 72
    assert c.macs == 72 * 4 * 5


def test_pointwise_conv():
    model = nn.Conv2d(8, 4, kernel_size=1, bias=False)
    c = measure(model, (1, 8, 5, 5))
    assert (c.params, c.macs) == (32, 32 * 25)


def test_linear_counts_in_times_out_plus_bias():
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 7))
    c = measure(model, (1, 1, 4, 5))
    assert c.params == 20 * 7 + 7
    assert c.macs == 20 * 7 + 7


def test_batch_norm_costs_two_per_channel_not_per_element():
    model = nn.BatchNorm2d(8)
    c = measure(model, (1, 8, 10, 10))
    assert c.params == 16
    assert c.macs == 16


class _ResidualPool(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, kernel_size=1, bias=False)
        self.act = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(3, stride=1, padding=1)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.act(self.conv(x) + x)  # residual add + activation: free
        return self.gap(self.avgpool(self.maxpool(y)))  # pooling: free


def test_residual_adds_activations_and_pooling_cost_nothing():
    c = measure(_ResidualPool(), (1, 4, 8, 8))
    assert c.params == 16
    assert c.macs == 16 * 8 * 8  # only the 1x1 conv


@pytest.mark.parametrize("dtype,size", [("int8", 1), ("float16", 2), ("float32", 4)])
def test_param_bytes_follow_storage_dtype(dtype, size):
    c = measure(nn.Conv2d(2, 5, 3, bias=False), (1, 2, 5, 5), dtype=dtype)
    assert c.param_bytes == 90 * size
    assert c.param_dtype == dtype
    assert c.with_dtype("float32").param_bytes == 360


def test_measure_leaves_model_mode_and_state_alone():
    model = build_student(StudentConfig(n_blocks=(1,), strides={}))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, (1, 1, 32, 32))
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # BN running stats untouched (eval mode, no grad)


# --------------------------------------------------------------------------------------------------------------
# the presets against an independent per-layer count
# --------------------------------------------------------------------------------------------------------------
def _out(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1


def _conv(cin, cout, k, h, w, groups=1, bias=False):
    """(params, macs) of a conv whose OUTPUT is h x w."""
    weights = (cin // groups) * cout * k * k
    params = weights + (cout if bias else 0)
    return params, weights * h * w + (cout * h * w if bias else 0)


def _bn(c):
    return 2 * c, 2 * c


def _count_cp_mobile(cfg: StudentConfig, f: int, t: int) -> tuple[int, int]:
    """The simplified CP-Mobile of dcase-task1.md counted layer by layer from its description."""
    p = m = 0

    def add(pm):
        nonlocal p, m
        p += pm[0]
        m += pm[1]

    base = make_divisible(cfg.base_channels, 8)
    widths = [base] + [make_divisible(base * cfg.channels_multiplier**i, 8) for i in range(len(cfg.n_blocks))]
    # stem: two 3x3 stride-2 conv-BN-ReLU, base/4 then base channels
    f, t = _out(f, 3, 2, 1), _out(t, 3, 2, 1)
    add(_conv(cfg.in_channels, base // 4, 3, f, t))
    add(_bn(base // 4))
    f, t = _out(f, 3, 2, 1), _out(t, 3, 2, 1)
    add(_conv(base // 4, base, 3, f, t))
    add(_bn(base))
    block = 0
    cin = widths[0]
    for stage, n in enumerate(cfg.n_blocks):
        cout = widths[stage + 1]
        for _ in range(n):
            block += 1
            sf, st = cfg.strides.get(f"b{block}", (1, 1))
            exp = make_divisible(cin * cfg.expansion_rate, 8)
            add(_conv(cin, exp, 1, f, t))  # 1x1 expand
            add(_bn(exp))
            f, t = _out(f, 3, sf, 1), _out(t, 3, st, 1)
            add(_conv(exp, exp, 3, f, t, groups=exp))  # depthwise
            add(_bn(exp))
            add(_conv(exp, cout, 1, f, t))  # 1x1 project
            add(_bn(cout))
            cin = cout  # residual add / avg-pool shortcut / ReLU: free
    add(_conv(cin, cfg.n_classes, 1, f, t))  # head: 1x1 conv, no bias
    add(_bn(cfg.n_classes))
    return p, m


def test_dcase2024_baseline_matches_independent_count_and_published_figures():
    model, shape = build_preset("dcase2024_baseline")
    c = measure(model, shape, dtype="float16")
    assert (c.params, c.macs) == _count_cp_mobile(DCASE2024_BASELINE, 256, 65)
    # the organisers' README: 61,148 parameters and 29,419,156 MACs; 122,296 bytes as float16
    assert (c.params, c.macs, c.param_bytes) == (61_148, 29_419_156, 122_296)
    assert check_budget(c, Budget(param_dtype="float16")).passed


@pytest.mark.parametrize(
    "cfg,f,t",
    [
        (StudentConfig(base_channels=24, channels_multiplier=2.0, expansion_rate=3.0, n_blocks=(1, 2),
                       strides={"b1": (2, 2), "b3": (1, 2)}), 40, 51),
        (StudentConfig(n_blocks=(2, 2, 2, 1), strides={"b2": 2, "b5": (2, 1)}, n_classes=7), 128, 44),
    ],
)
def test_other_students_match_independent_count(cfg, f, t):
    c = measure(build_student(cfg), (1, 1, f, t))
    assert (c.params, c.macs) == _count_cp_mobile(cfg, f, t)


def test_dcase2023_baseline_matches_independent_count():
    model, shape = build_preset("dcase2023_baseline")
    assert shape == (1, 1, 40, 51)
    c = measure(model, shape)
    p = m = 0
    for pm in (
        _conv(1, 16, 7, 40, 51, bias=True), _bn(16),  # padding same
        _conv(16, 16, 7, 40, 51, bias=True), _bn(16),
        # MaxPool 5x5 -> 8 x 10
        _conv(16, 32, 7, 8, 10, bias=True), _bn(32),
        # MaxPool (4, 10) -> 2 x 1 -> 64 features
        (64 * 100 + 100, 64 * 100 + 100),
        (100 * 10 + 10, 100 * 10 + 10),
    ):
        p += pm[0]
        m += pm[1]
    assert (c.params, c.macs) == (p, m)
    assert c.params == 46_118
    assert 29_000_000 < c.macs < 30_000_000  # the organisers quote 29.23 M MACs (their TFLite counter)


# --------------------------------------------------------------------------------------------------------------
# budget
# --------------------------------------------------------------------------------------------------------------
def test_check_budget_pass_and_fail_rows():
    c = Complexity(params=100_000, param_bytes=100_000, macs=20_000_000, param_dtype="int8")
    ok = check_budget(c, Budget())
    assert ok.passed and ok.failures == ()
    assert [r[0] for r in ok.rows] == ["params", "param_bytes", "macs"]
    # same model stored as float16: 200,000 bytes > 128,000
    fp16 = check_budget(c, Budget(param_dtype="float16"))
    assert not fp16.passed
    assert fp16.complexity.param_bytes == 200_000
    assert any("param_bytes 200,000 > 128,000" in f for f in fp16.failures)
    macs = check_budget(c, Budget(max_macs=10_000_000))
    assert not macs.passed
    assert [name for name, _, _, ok_ in macs.rows if not ok_] == ["macs"]
    d = macs.to_dict()
    assert d["passed"] is False and d["params"] == 100_000 and d["limits"]["max_macs"] == 10_000_000


def test_cost_student_from_config_alone():
    report = cost_student(DCASE2024_BASELINE, (1, 1, 256, 65), Budget(param_dtype="float16"))
    assert report.passed
    assert report.complexity.macs == 29_419_156
    wide = StudentConfig(base_channels=64, channels_multiplier=2.0, expansion_rate=3.0)
    over = cost_student(wide.to_dict(), (1, 1, 256, 65), Budget())
    assert not over.passed
    assert {name for name, _, _, ok in over.rows if not ok} >= {"macs"}


def test_bad_inputs_raise_config_error_listing_valid_choices():
    with pytest.raises(ConfigError, match="int8, float16, float32"):
        measure(nn.Conv2d(1, 1, 1), (1, 1, 4, 4), dtype="int4")
    with pytest.raises(ConfigError, match="batch must be 1"):
        measure(nn.Conv2d(1, 1, 1), (2, 1, 4, 4))
    with pytest.raises(ConfigError, match="B,C,F,T"):
        parse_input_shape("1,1,256")
    with pytest.raises(ConfigError, match="not a list of integers"):
        parse_input_shape("1,a,256,65")
    model, _ = build_preset("dcase2023_baseline")
    with pytest.raises(ConfigError, match=r"cannot take input shape \[1, 1, 12, 12\]"):
        measure(model, (1, 1, 12, 12))
    with pytest.raises(ConfigError, match="in_channels=1"):
        cost_student(StudentConfig(), (1, 2, 256, 65))


def test_measure_restores_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        measure(nn.Conv2d(1, 2, 3), (1, 1, 8, 8))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------------------------
# the analytic student counter against torchinfo, and cost_student's two-step check
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 40, 51), (1, 1, 256, 65)], ids=["quick", "dcase"])
def test_analytic_count_equals_torchinfo_on_dcase2024_baseline(shape):
    analytic = student_cost_from_config(DCASE2024_BASELINE, shape, dtype="float16", layers=True)
    torchinfo = measure(build_student(DCASE2024_BASELINE), shape, dtype="float16", layers=True)
    assert analytic.counter == "analytic" and torchinfo.counter == "torchinfo"
    assert analytic.layers == torchinfo.layers  # layer by layer, names included: a mismatch names the layer
    assert (analytic.params, analytic.param_bytes, analytic.macs) == (torchinfo.params, torchinfo.param_bytes, torchinfo.macs)
    assert analytic.input_shape == shape
    if shape[2] == 256:
        assert (analytic.params, analytic.macs) == (61_148, 29_419_156)


def _random_student(rng: random.Random) -> StudentConfig:
    """Varied stages, blocks, strides (1..3, per axis), expansion, widths, classes, embed block."""
    n_blocks = tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 4)))
    names = [f"b{i + 1}" for i in range(sum(n_blocks))]
    strides = {n: (rng.choice((1, 1, 2, 3)), rng.choice((1, 1, 2, 3))) for n in rng.sample(names, rng.randint(0, min(3, len(names))))}
    return StudentConfig(
        n_classes=rng.choice((2, 7, 10)),
        in_channels=rng.choice((1, 1, 1, 2)),
        base_channels=rng.choice((8, 12, 16, 24, 32, 40)),
        channels_multiplier=round(rng.uniform(0.8, 2.2), 2),
        expansion_rate=round(rng.uniform(1.0, 3.5), 2),
        n_blocks=n_blocks,
        strides=strides,
        embed_block=rng.choice(names + [None]),
    )


def test_analytic_count_equals_torchinfo_on_random_students():
    rng = random.Random(20241)
    shapes = [(40, 51), (256, 65), (37, 23), (9, 5)]  # odd sizes exercise PyTorch's floor in strided outputs
    for i in range(40):
        cfg = _random_student(rng)
        f, t = shapes[i % len(shapes)]
        shape = (1, cfg.in_channels, f, t)
        analytic = student_cost_from_config(cfg, shape, layers=True)
        torchinfo = measure(build_student(cfg, init_weights=False), shape, layers=True)
        assert analytic.layers == torchinfo.layers, (i, cfg, shape)
        assert (analytic.params, analytic.macs) == (torchinfo.params, torchinfo.macs), (i, cfg, shape)


def test_over_budget_student_is_rejected_without_building_a_model(monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("build_student called for a proposal the analytic count rejects")

    monkeypatch.setattr(student_module, "build_student", no_build)
    monkeypatch.setattr(complexity_module, "measure", no_build)
    wide = StudentConfig(base_channels=64, channels_multiplier=2.0, expansion_rate=3.0)
    report = cost_student(wide, (1, 1, 256, 65), Budget())
    assert not report.passed and report.counter == "analytic"
    assert report.to_dict()["counter"] == "analytic"
    assert "macs" in {name for name, _, _, ok in report.rows if not ok}
    # one MAC over the limit is enough to reject; exactly at the limit passes (then torchinfo confirms)
    macs = student_cost_from_config(DCASE2024_BASELINE, (1, 1, 256, 65)).macs
    tight = cost_student(DCASE2024_BASELINE, (1, 1, 256, 65), Budget(param_dtype="float16", max_macs=macs - 1))
    assert not tight.passed and tight.counter == "analytic" and tight.failures == (f"macs {macs:,} > {macs - 1:,}",)


def test_feasible_student_is_confirmed_by_torchinfo(monkeypatch):
    from collections import OrderedDict

    monkeypatch.setattr(complexity_module, "_CONFIRMED", OrderedDict())  # nothing confirmed yet
    built = []
    real_build = student_module.build_student
    monkeypatch.setattr(student_module, "build_student", lambda *a, **k: built.append(1) or real_build(*a, **k))
    macs = 29_419_156
    report = cost_student(DCASE2024_BASELINE, (1, 1, 256, 65), Budget(param_dtype="float16", max_macs=macs))
    assert report.passed and report.counter == "torchinfo" and built == [1]
    assert report.complexity.macs == macs and report.to_dict()["counter"] == "torchinfo"
    # the forced counters
    assert cost_student(DCASE2024_BASELINE, (1, 1, 256, 65), counter="analytic").counter == "analytic"
    assert built == [1]
    forced = cost_student(StudentConfig(base_channels=64, expansion_rate=3.0), (1, 1, 40, 51), counter="torchinfo")
    assert forced.counter == "torchinfo" and built == [1, 1]
    # the same network again (other floats, the same widths after rounding to 8): torchinfo's count is reused
    again = cost_student(StudentConfig(base_channels=64, expansion_rate=3.01), (1, 1, 40, 51), counter="torchinfo")
    assert again.complexity == forced.complexity and built == [1, 1]
    wider = cost_student(StudentConfig(base_channels=64, expansion_rate=3.2), (1, 1, 40, 51), counter="torchinfo")
    assert wider.complexity.params > forced.complexity.params and built == [1, 1, 1]
    other_input = cost_student(StudentConfig(base_channels=64, expansion_rate=3.0), (1, 1, 40, 60), counter="torchinfo")
    assert other_input.complexity.macs > forced.complexity.macs and built == [1, 1, 1, 1]
    with pytest.raises(ConfigError, match="valid counters: auto, analytic, torchinfo"):
        cost_student(DCASE2024_BASELINE, counter="fast")


def test_torchinfo_wins_when_the_counts_differ(monkeypatch):
    real = complexity_module.student_cost_from_config

    def undercount(*args, **kwargs):  # an analytic count that is wrong (too low) but passes
        c = real(*args, **kwargs)
        return Complexity(params=c.params - 1, param_bytes=c.param_bytes - 1, macs=c.macs - 100,
                          param_dtype=c.param_dtype, input_shape=c.input_shape, counter="analytic")

    monkeypatch.setattr(complexity_module, "student_cost_from_config", undercount)
    with pytest.warns(RuntimeWarning, match="torchinfo's figures are used"):
        report = cost_student(DCASE2024_BASELINE, (1, 1, 256, 65), Budget(param_dtype="float16", max_macs=29_419_100))
    assert report.counter == "torchinfo" and not report.passed  # torchinfo's 29,419,156 > the limit
    assert report.complexity.macs == 29_419_156
    monkeypatch.setattr(complexity_module, "student_cost_from_config", real)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the real counts agree: no warning
        cost_student(DCASE2024_BASELINE, (1, 1, 256, 65), Budget(param_dtype="float16"))


def test_analytic_counter_bad_inputs():
    with pytest.raises(ConfigError, match="in_channels=1"):
        student_cost_from_config(StudentConfig(), (1, 2, 256, 65))
    with pytest.raises(ConfigError, match="batch must be 1"):
        student_cost_from_config(StudentConfig(), (4, 1, 256, 65))
    with pytest.raises(ConfigError, match="int8, float16, float32"):
        student_cost_from_config(StudentConfig(), (1, 1, 256, 65), dtype="int4")
    with pytest.raises(ConfigError, match="unknown key"):
        student_cost_from_config({"base_channel": 32}, (1, 1, 40, 51))
