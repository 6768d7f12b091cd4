"""The deployed form of a model: the ONNX graph at the budget's precision (float32, float16 or int8), what it really
stores, and running it with onnxruntime. A building block (no run folders, no Ray): the export and the search's
``score_precision: deployed`` both use it.

* :mod:`.graph`: the float32 ONNX graph (checked against torch), onnxruntime sessions, logits of a graph;
* :mod:`.quantize`: int8 (static post-training quantisation, QDQ) and float16 graphs with onnxruntime's tools;
* :mod:`.measure`: the bytes a graph stores, by role (kernels, biases, scales, zero points) and dtype;
* :mod:`.build`: ``deploy_model``: model -> float32 graph -> deployed graph, measured and compared.
"""

from .build import DeployedGraph, check_precision, deploy_model
from .graph import ONNX_CHECK_CLIPS, ONNX_INPUT, ONNX_OUTPUT, ONNX_TOLERANCE, export_onnx, onnx_session, run_onnx
from .measure import float_parameters, weight_bytes
from .quantize import CALIBRATION_CLIPS, PRECISIONS, QUANTIZED_OPS, calibration_sample, convert_float16, quantize_int8

__all__ = [
    "ONNX_TOLERANCE",
    "ONNX_CHECK_CLIPS",
    "ONNX_INPUT",
    "ONNX_OUTPUT",
    "export_onnx",
    "onnx_session",
    "run_onnx",
    "PRECISIONS",
    "CALIBRATION_CLIPS",
    "QUANTIZED_OPS",
    "calibration_sample",
    "quantize_int8",
    "convert_float16",
    "weight_bytes",
    "float_parameters",
    "DeployedGraph",
    "check_precision",
    "deploy_model",
]
