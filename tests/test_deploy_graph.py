"""asc_search.deploy.graph: the model as a float32 ONNX graph (both exporters), checked against torch with
onnxruntime, and run on any batch size."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from asc_search.deploy.graph import export_onnx, run_onnx
from asc_search.models.student import StudentConfig, build_student


@pytest.mark.parametrize("fast", [False, True], ids=["dynamo", "torchscript"])
def test_onnx_graph_matches_torch_on_any_batch_size(tmp_path, fast):
    torch.manual_seed(0)
    model = build_student(StudentConfig(base_channels=8, n_blocks=(1, 1), strides={"b2": (2, 2)})).eval()
    diff = export_onnx(model, torch.randn(4, 1, 40, 51), tmp_path / "m.onnx", fast=fast)
    assert 0 <= diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x"] and [o.name for o in session.get_outputs()] == ["logits"]
    for batch in (1, 7):  # the batch axis is dynamic
        x = torch.randn(batch, 1, 40, 51)
        got = session.run(["logits"], {"x": x.numpy()})[0]
        with torch.no_grad():
            assert np.allclose(got, model(x).numpy(), atol=1e-4)
        assert np.allclose(run_onnx(tmp_path / "m.onnx", x.half(), batch_size=3), got, atol=1e-2)  # float16 input
    # every BatchNorm folded into the conv before it: none left in the graph
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
