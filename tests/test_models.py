"""The model zoo: student structure and config validation, teacher, DCASE 2023 baseline, projection head, presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asc_search.complexity import measure
from asc_search.errors import ConfigError
from asc_search.models import (
    PRESETS,
    DCASE2023Baseline,
    ProjectionHead,
    StudentConfig,
    TeacherConfig,
    build_preset,
    build_student,
    build_teacher,
)
from asc_search.models.blocks import InvertedResidual, make_divisible
from asc_search.models.presets import DCASE2024_BASELINE, TEACHER_QUICK

torch.manual_seed(0)


# --------------------------------------------------------------------------------------------------------------
# student
# --------------------------------------------------------------------------------------------------------------
def test_make_divisible_rounds_to_eight_never_more_than_ten_percent_down():
    assert make_divisible(32) == 32
    assert make_divisible(57.6) == 56  # 32 * 1.8
    assert make_divisible(103.68) == 104  # 32 * 1.8**2
    assert make_divisible(67.2) == 64  # 32 * 2.1 expansion
    assert make_divisible(117.6) == 120  # 56 * 2.1
    assert make_divisible(3) == 8  # at least the divisor
    assert make_divisible(10) == 16  # 8 would be > 10 % down


def test_dcase2024_baseline_structure():
    cfg = DCASE2024_BASELINE
    assert cfg.stage_channels == (32, 32, 56, 104)
    specs = {s.name: s for s in cfg.block_specs()}
    assert list(specs) == ["b1", "b2", "b3", "b4", "b5", "b6"]
    assert specs["b3"].stride == (1, 2) and specs["b4"].stride == (2, 1) and specs["b1"].stride == (1, 1)
    assert (specs["b4"].in_channels, specs["b4"].out_channels, specs["b4"].exp_channels) == (32, 56, 64)
    assert specs["b5"].exp_channels == 120
    model = build_student(cfg)
    assert model.block_names == ("b1", "b2", "b3", "b4", "b5", "b6")
    blocks = dict(model._blocks())
    assert isinstance(blocks["b3"].shortcut, nn.AvgPool2d)  # strided residual block: pooled shortcut
    assert blocks["b3"].use_shortcut and blocks["b5"].use_shortcut
    assert not blocks["b4"].use_shortcut and not blocks["b6"].use_shortcut  # width changes: no shortcut
    stem_convs = [m for m in model.in_c.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride) for c in stem_convs] == [(8, (2, 2)), (32, (2, 2))]
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.bias is None  # every conv is followed by BN
    head = model.feed_forward
    assert isinstance(head[0], nn.Conv2d) and head[0].kernel_size == (1, 1) and head[0].out_channels == 10
    assert isinstance(head[1], nn.BatchNorm2d) and isinstance(head[2], nn.AdaptiveAvgPool2d)


def test_residual_block_adds_shortcut():
    block = InvertedResidual(8, 8, 2.0, (1, 1)).eval()
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        expected = torch.relu(block.block(x) + x)
        assert torch.allclose(block(x), expected)


def test_student_forward_and_embedding_shapes():
    cfg = StudentConfig(embed_block="b2")
    model = build_student(cfg).eval()
    x = torch.randn(3, 1, 256, 65)
    with torch.no_grad():
        logits = model(x)
        logits2, emb = model.forward_with_embedding(x)
    assert logits.shape == (3, 10)
    assert torch.allclose(logits, logits2, atol=1e-5)
    assert tuple(emb.shape[1:]) == cfg.embedding_shape((1, 1, 256, 65)) == (32, 64, 17)
    assert model.embedding_channels == 32
    # default embed block = last block
    last = StudentConfig()
    assert last.resolved_embed_block == "b6"
    assert last.embedding_shape((256, 65)) == (104, 32, 9)


def test_student_embedding_is_the_blocks_output():
    model = build_student(StudentConfig(embed_block="b4")).eval()
    captured = {}
    model.stages.s2.b4.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        _, emb = model.forward_with_embedding(torch.randn(2, 1, 64, 32))
    assert torch.equal(emb, captured["out"])


def test_student_config_round_trip_and_equality():
    cfg = StudentConfig(base_channels=24, n_blocks=(2, 1), strides={"b2": 2, "b1": [1, 2]}, embed_block="b1")
    assert cfg.strides == {"b1": (1, 2), "b2": (2, 2)}
    data = cfg.to_dict()
    assert data["strides"] == {"b1": [1, 2], "b2": [2, 2]} and data["n_blocks"] == [2, 1]
    again = StudentConfig.from_dict(data)
    assert again == cfg and hash(again) == hash(cfg)
    assert build_student(data).config == cfg


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"base_channels": 0}, "base_channels must be a positive integer"),
        ({"n_classes": -1}, "n_classes must be a positive integer"),
        ({"expansion_rate": 0.5}, "expansion_rate must be >= 1"),
        ({"channels_multiplier": 0}, "channels_multiplier must be > 0"),
        ({"n_blocks": ()}, "n_blocks must be a non-empty list"),
        ({"n_blocks": (2, 0)}, r"n_blocks\[1\] \(stage 2\) must be a positive integer"),
        ({"n_blocks": (1, 1), "strides": {"b3": (1, 2)}}, "strides names block 'b3'.*valid blocks .*: b1, b2$"),
        ({"strides": {"b2": (0, 1)}}, r"strides\['b2'\] must be"),
        ({"embed_block": "b9"}, "embed_block 'b9' does not exist; valid choices: b1, b2, b3, b4, b5, b6"),
    ],
)
def test_student_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        StudentConfig(**kwargs)


def test_student_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown key.*'width'.*valid keys: n_classes, in_channels"):
        StudentConfig.from_dict({"width": 3})


# --------------------------------------------------------------------------------------------------------------
# teacher
# --------------------------------------------------------------------------------------------------------------
def test_teacher_presets_have_millions_of_params():
    for name in ("teacher", "teacher_quick"):
        model, shape = build_preset(name)
        c = measure(model, shape, dtype="float32")
        assert c.params >= 1_000_000, name
    quick, shape = build_preset("teacher_quick")
    assert measure(quick, shape).macs < 60_000_000  # cheap enough for the CPU demo


def test_teacher_embedding_is_second_to_last_layer_output():
    model = build_teacher(TEACHER_QUICK).eval()
    layer = model.get_submodule(model.embedding_layer)
    captured = {}
    layer.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    x = torch.randn(2, 1, 40, 51)
    with torch.no_grad():
        logits, emb = model.forward_with_embedding(x)
        plain = model(x)
    assert logits.shape == (2, 10) and torch.allclose(logits, plain, atol=1e-5)
    assert torch.equal(emb, captured["out"])
    assert emb.shape[1] == model.embedding_channels == 512
    # the classifier acts on the embedding directly
    with torch.no_grad():
        assert torch.allclose(model.classifier(emb).flatten(1), logits, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"stage_channels": (64, 0)}, r"stage_channels\[1\] must be a positive integer"),
        ({"n_blocks": (1, 1)}, "n_blocks has 2 entries but stage_channels has 4"),
        ({"kernel_sizes": (3, 3, 2, 1)}, "kernel_sizes must be odd"),
        ({"pool_after": (3,)}, "pool_after entries must be"),
        ({"dropout": 1.5}, "dropout must be in"),
    ],
)
def test_teacher_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TeacherConfig(**kwargs)


def test_teacher_config_round_trip():
    cfg = TeacherConfig(stage_channels=(16, 32), n_blocks=(1, 1), kernel_sizes=(3, 1), pool_after=(0,))
    assert TeacherConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown key"):
        TeacherConfig.from_dict({"depth": 3})


# --------------------------------------------------------------------------------------------------------------
# DCASE 2023 baseline
# --------------------------------------------------------------------------------------------------------------
def test_dcase2023_baseline_layers_and_forward():
    model = DCASE2023Baseline().eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 16, (7, 7), "same"),
        (16, 16, (7, 7), "same"),
        (16, 32, (7, 7), "same"),
    ]
    pools = [m.kernel_size for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools == [5, (4, 10)]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3, 0.3, 0.3]
    linears = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [(64, 100), (100, 10)]
    with torch.no_grad():
        logits, emb = model.forward_with_embedding(torch.randn(4, 1, 40, 51))
    assert logits.shape == (4, 10) and emb.shape == (4, 32, 2, 1)


# --------------------------------------------------------------------------------------------------------------
# projection head
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("emb_shape", [(512, 1, 1), (512, 8, 3)])
def test_projection_head_maps_student_map_to_teacher_shape(emb_shape):
    student = build_student(StudentConfig(embed_block="b5"))
    head = ProjectionHead(student.embedding_channels, emb_shape)
    _, emb = student.forward_with_embedding(torch.randn(2, 1, 256, 65))
    out = head(emb)
    assert out.shape == (2, *emb_shape)
    out.square().mean().backward()  # gradients reach the student through the head
    assert student.stages.s2.b5.block[0][0].weight.grad is not None
    # train-only: not a submodule of the student, so never in its cost
    assert all(p is not q for p in head.parameters() for q in student.parameters())
    assert measure(student, (1, 1, 256, 65)).params == sum(p.numel() for p in student.parameters())


def test_projection_head_rejects_bad_shapes():
    with pytest.raises(ConfigError, match=r"embedding_shape must be \(C, H, W\)"):
        ProjectionHead(32, (512,))
    with pytest.raises(ConfigError, match="student_channels"):
        ProjectionHead(0, (8, 1, 1))
    head = ProjectionHead(32, (8, 1, 1))
    with pytest.raises(ValueError, match=r"expects \[B, 32, H, W\]"):
        head(torch.randn(1, 16, 4, 4))


# --------------------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------------------
def test_every_preset_builds_and_runs_on_its_input_shape():
    for name, preset in PRESETS.items():
        model, shape = build_preset(name)
        assert shape == preset.input_shape
        model.eval()
        with torch.no_grad():
            logits, emb = model.forward_with_embedding(torch.zeros(shape))
        assert logits.shape == (1, 10), name
        assert emb.dim() == 4, name


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown model preset 'cp_mobile'; valid presets: dcase2024_baseline"):
        build_preset("cp_mobile")


def test_student_config_accepts_numpy_numbers_from_samplers_as_plain_python():
    import json

    import numpy as np

    cfg = StudentConfig(base_channels=np.int64(24), n_blocks=(np.int64(2), 1), strides={"b2": np.int64(2)},
                        expansion_rate=np.float64(2.5))
    assert type(cfg.base_channels) is int and type(cfg.n_blocks[0]) is int and cfg.strides == {"b2": (2, 2)}
    assert type(cfg.expansion_rate) is float
    json.dumps(cfg.to_dict())  # serialisable
