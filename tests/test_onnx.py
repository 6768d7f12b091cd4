"""asc_search.export.onnx: the student as ONNX, checked against torch with onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from asc_search.export.onnx import export_onnx
from asc_search.models.student import StudentConfig, build_student


def test_onnx_graph_matches_torch_on_any_batch_size(tmp_path):
    torch.manual_seed(0)
    model = build_student(StudentConfig(base_channels=8, n_blocks=(1, 1), strides={"b2": (2, 2)})).eval()
    diff = export_onnx(model, torch.randn(4, 1, 40, 51), tmp_path / "m.onnx")
    assert 0 <= diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"] and [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, 1, 40, 51)
        got = session.run(["logits"], {"x": x.numpy()})[0]
        with torch.no_grad():
            assert np.allclose(got, model(x).numpy(), atol=1e-4)
