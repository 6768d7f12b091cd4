"""asc_search.deploy: int8 / float16 graphs with onnxruntime, the bytes a graph stores, and the analytic deployed
count (asc_search.complexity) agreeing with the bytes measured from the file."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from asc_search.complexity import measure, student_cost_from_config
from asc_search.deploy import (
    calibration_sample,
    convert_float16,
    deploy_model,
    export_onnx,
    onnx_session,
    quantize_int8,
    run_onnx,
    weight_bytes,
)
from asc_search.errors import ConfigError, QuantizationError
from asc_search.models.presets import DCASE2024_BASELINE
from asc_search.models.student import StudentConfig, build_student

SHAPE = (1, 1, 40, 51)
CFG = StudentConfig(base_channels=8, channels_multiplier=1.5, expansion_rate=2.0, n_blocks=(1, 1), n_classes=4,
                    strides={"b2": (2, 2)})


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, as training leaves them: a freshly initialised student folds to all-zero
    biases, which the exporter drops, and a byte count would then miss the biases."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def _student(cfg: StudentConfig = CFG, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return trained_like(build_student(cfg), seed)


def _bn_channels(model: torch.nn.Module) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graphs")
    model = _student()
    x = torch.randn(64, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    fp32, fp16, int8 = tmp / "s.fp32.onnx", tmp / "s.fp16.onnx", tmp / "s.int8.onnx"
    export_onnx(model, x[:8], fp32, fast=True)
    convert_float16(fp32, fp16)
    info = quantize_int8(fp32, int8, x, max_clips=32, seed=0)
    return {"model": model, "x": x, "fp32": fp32, "fp16": fp16, "int8": int8, "info": info, "tmp": tmp}


def test_fp32_bytes_count_every_parameter_after_batchnorm_folding(graphs):
    model, wb = graphs["model"], weight_bytes(graphs["fp32"])
    params = measure(model, SHAPE).params  # torchinfo: conv weights + BN weight and bias
    n_bn = _bn_channels(model)
    assert wb["n_bias"] == n_bn  # every BatchNorm became one bias per channel of the conv before it
    assert wb["n_weights"] == params - n_bn
    assert wb["by_dtype"] == {"float32": 4 * wb["n_weights"]}
    assert wb["scales_bytes"] == wb["zero_points_bytes"] == 0


def test_int8_graph_stores_int8_kernels_int32_biases_and_reports_metadata_apart(graphs):
    fp32, int8 = weight_bytes(graphs["fp32"]), weight_bytes(graphs["int8"])
    assert int8["n_kernel"] == fp32["n_kernel"] and int8["n_bias"] == fp32["n_bias"]
    assert int8["by_dtype"] == {"int8": int8["n_kernel"], "int32": 4 * int8["n_bias"]}
    assert int8["weights_bytes"] == int8["n_kernel"] + 4 * int8["n_bias"]
    # per channel: a float32 scale per output channel for the weights and again for the biases, at least
    assert int8["scales_bytes"] >= 2 * 4 * int8["n_bias"] and int8["zero_points_bytes"] > 0
    info = graphs["info"]
    assert info["calibration"]["clips"] == 32 and info["weights"] == {"dtype": "int8", "symmetric": True,
                                                                       "per_channel": True, "reduce_range": True}
    # every weight initializer a conv reads is int8 on the 7-bit grid
    model = onnx.load(str(graphs["int8"]))
    kernels = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8
               and len(t.dims) == 4]
    assert kernels and all(np.abs(k).max() <= 64 for k in kernels)


def test_int8_logits_follow_fp32_and_kernels_match_the_qdq_reference(graphs):
    x = graphs["x"]
    ref = run_onnx(graphs["fp32"], x)
    got = run_onnx(graphs["int8"], x)
    plain = run_onnx(onnx_session(graphs["int8"], optimize=False), x)
    span = float(ref.max() - ref.min())
    assert got.shape == ref.shape
    assert 0 < np.abs(got - ref).max() < 0.1 * span  # really quantised, and quantisation error, not garbage
    # 7-bit weights (reduce_range): the fused int8 kernels compute what the QDQ graph specifies, on any CPU
    assert np.abs(got - plain).max() < 0.02 * span


def test_float16_graph_keeps_float32_io_and_halves_the_bytes(graphs):
    g = onnx.load(str(graphs["fp16"])).graph
    assert [i.type.tensor_type.elem_type for i in (*g.input, *g.output)] == [onnx.TensorProto.FLOAT] * 2
    wb, wb32 = weight_bytes(graphs["fp16"]), weight_bytes(graphs["fp32"])
    assert wb["by_dtype"] == {"float16": 2 * wb32["n_weights"]} and 2 * wb["weights_bytes"] == wb32["weights_bytes"]
    ref, got = run_onnx(graphs["fp32"], graphs["x"]), run_onnx(graphs["fp16"], graphs["x"])
    assert np.abs(got - ref).max() < 1e-2 * max(1.0, float(np.abs(ref).max()))


def test_an_operator_onnxruntime_cannot_quantise_is_a_one_line_error(tmp_path):
    class PReLUNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = torch.nn.Conv2d(1, 4, 3), torch.nn.PReLU(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(x)).mean((2, 3))

    x = torch.randn(8, *SHAPE[1:])
    export_onnx(PReLUNet().eval(), x, tmp_path / "p.onnx", fast=True)
    with pytest.raises(QuantizationError) as info:
        quantize_int8(tmp_path / "p.onnx", tmp_path / "p8.onnx", x)
    assert "PRelu" in str(info.value) and "would stay float" in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "p8.onnx").exists()  # no half-written graph
    assert info.value.exit_code == 2


def test_bad_calibration_clips_and_precisions_are_refused(graphs, tmp_path):
    with pytest.raises(QuantizationError, match="calibration clips"):
        quantize_int8(graphs["fp32"], tmp_path / "bad.onnx", np.zeros((0, 1, 40, 51), np.float32))
    with pytest.raises(ConfigError, match="precision 'int4' cannot be deployed; the exporter writes float32, "
                                          "float16, int8"):
        deploy_model(graphs["model"], tmp_path, "int4", example=graphs["x"][:2])
    with pytest.raises(ConfigError, match="int8 needs calibration clips"):
        deploy_model(graphs["model"], tmp_path, "int8", example=graphs["x"][:2])
    assert not list(tmp_path.iterdir())


def test_calibration_sample_is_seeded_and_capped():
    a, b, c = calibration_sample(100, 10, 0), calibration_sample(100, 10, 0), calibration_sample(100, 10, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == 10 and np.all(np.diff(a) > 0)
    assert len(calibration_sample(5, 10, 0)) == 5


def test_torchscript_and_dynamo_exporters_give_the_same_deployed_graph(tmp_path):
    """The in-trial scoring exports with the TorchScript exporter (fast), the export with dynamo: same weights,
    same int8 bytes, the same logits within quantisation noise."""
    model, x = _student(seed=3), torch.randn(48, *SHAPE[1:], generator=torch.Generator().manual_seed(4))
    (tmp_path / "fast").mkdir()
    (tmp_path / "dynamo").mkdir()
    fast = deploy_model(model, tmp_path / "fast", "int8", example=x[:16], calibration_x=x, fast=True)
    slow = deploy_model(model, tmp_path / "dynamo", "int8", example=x[:16], calibration_x=x)
    assert fast.onnx_max_abs_diff < 1e-4 and slow.onnx_max_abs_diff < 1e-4  # both checked against torch
    for key in ("weights_bytes", "by_dtype", "n_kernel", "n_bias"):  # (activation scales differ by a tensor or two)
        assert fast.bytes[key] == slow.bytes[key], key
    a, b = run_onnx(fast.path, x), run_onnx(slow.path, x)
    assert np.abs(a - b).max() < 0.05 * float(a.max() - a.min())


def _random_configs(n: int, seed: int) -> list[StudentConfig]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        n_blocks = tuple(int(b) for b in rng.integers(1, 3, size=int(rng.integers(1, 4))))
        out.append(StudentConfig(base_channels=int(rng.choice([8, 16, 24])),
                                 channels_multiplier=float(rng.uniform(1.2, 2.2)),
                                 expansion_rate=float(rng.uniform(1.5, 3.0)), n_blocks=n_blocks,
                                 strides={"b2": (2, 2)} if sum(n_blocks) >= 2 else {}))
    return out


@pytest.mark.parametrize("precision", ["int8", "float16"])
def test_the_analytic_deployed_count_is_what_the_graph_stores(precision, tmp_path):
    """The counter the search rejects proposals with (from the config alone) = the model's count = the bytes measured
    from the exported graph, on the DCASE 2024 baseline and on random students."""
    cases = [(DCASE2024_BASELINE, (1, 1, 256, 65))] + [(c, SHAPE) for c in _random_configs(3, seed=7)]
    for i, (cfg, shape) in enumerate(cases):
        model = _student(cfg, seed=i)
        x = torch.randn(8, *shape[1:], generator=torch.Generator().manual_seed(i))
        graph = deploy_model(model, tmp_path, precision, example=x[:2], calibration_x=x, fast=True,
                             name=f"{i}.onnx", reference_name=f"{i}.fp32.onnx")
        analytic = student_cost_from_config(cfg, shape, dtype=precision).deployed_param_bytes
        assert graph.weights_bytes == analytic == measure(model, shape, dtype=precision).deployed_param_bytes, cfg
    # the published figures: the DCASE 2024 baseline deploys as 119,588 B at float16, 63,856 B at int8
    baseline = student_cost_from_config(DCASE2024_BASELINE, (1, 1, 256, 65), dtype=precision)
    assert baseline.deployed_param_bytes == {"float16": 119_588, "int8": 63_856}[precision]
