"""asc_search.training.qat: quantisation-aware fine-tuning through the package's fit loop, folded back into a plain
student that exports and quantises like any other."""

from __future__ import annotations

import pytest
import torch

from asc_search.models.heads import ProjectionHead
from asc_search.models.student import StudentConfig, build_student
from asc_search.training.config import TrainConfig
from asc_search.training.data import TensorData
from asc_search.training.losses import DistillConfig
from asc_search.training.qat import QatStudent, fold_back, prepare_qat, qat_finetune

CFG = StudentConfig(base_channels=8, channels_multiplier=1.5, expansion_rate=2.0, n_blocks=(1, 1), n_classes=4,
                    strides={"b2": (2, 2)})


def _data(model: torch.nn.Module, n: int = 64, seed: int = 3) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 40, 51, generator=gen), torch.randint(0, 4, (n,), generator=gen)
    with torch.no_grad():
        logits, fmap = model.eval().forward_with_embedding(x)
    return x, y, logits, fmap.mean((2, 3), keepdim=True)


@pytest.mark.parametrize("emb", [False, True], ids=["kd", "kd+embedding"])
def test_qat_returns_a_plain_student_with_its_fake_quant_weights(emb):
    torch.manual_seed(2)
    model = build_student(CFG).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, teacher, temb = _data(model)
    distill = DistillConfig(kd_weight=0.5, emb_weight=1.0 if emb else 0.0)
    head = ProjectionHead(model.embedding_channels, tuple(temb.shape[1:])) if emb else None
    train = TensorData(x, y, teacher, temb if emb else None)
    tuned, result, diff = qat_finetune(model, train, TensorData(x[:32], y[:32]), TrainConfig(batch_size=16,
                                       device="cpu", seed=1), epochs=2, lr=1e-3, distill=distill, head=head)
    assert type(tuned) is type(model) and not tuned.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is left untouched
    changed = [k for k, v in tuned.state_dict().items() if k.endswith("weight") and not torch.equal(before[k], v)]
    assert len(changed) == len([k for k in before if k.endswith("weight")])  # every conv and BN weight trained
    assert len(result.history) == 2 and all("train_kd" in h for h in result.history)  # fit ran the trial's losses
    assert ("train_emb" in result.history[0]) is emb
    assert diff <= 1e-4 and 1 <= result.best_epoch <= 2


def test_the_fake_quantised_model_quantises_weights_and_activations():
    torch.manual_seed(0)
    model = build_student(CFG).eval()
    x = torch.randn(16, 1, 40, 51)
    qat = prepare_qat(model, x)
    assert isinstance(qat, QatStudent)
    names = [type(m).__name__ for m in qat.prepared.modules()]
    assert "ConvBnReLU2d" in names and "ConvBn2d" in names  # conv + BatchNorm (+ ReLU) fused: the folded weight
    fake = [m for m in qat.prepared.modules() if type(m).__name__ == "FakeQuantize"]
    weights = [m for m in fake if m.qscheme == torch.per_channel_symmetric]
    assert weights and all((m.quant_min, m.quant_max) == (-64, 64) for m in weights)  # onnxruntime's 7-bit grid
    assert len(fake) > len(weights)  # and activations
    folded, diff = fold_back(qat, model, x)  # nothing trained yet: the folded copy computes what the model does
    assert diff <= 1e-4
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)
    qat.train()
    qat(x)
    scale = weights[0].scale.clone()
    qat.eval()
    qat(x * 100)  # observers do not move outside training (validation clips never set ranges)
    assert torch.equal(weights[0].scale, scale)
    with torch.no_grad():  # fake quantisation really changes the output
        assert not torch.allclose(qat(x), folded_after(qat, model, x)(x), atol=1e-6)


def folded_after(qat: QatStudent, model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The plain student of the QAT model as it is now (its BatchNorm statistics moved in the training pass)."""
    return fold_back(qat, model, x)[0]
