"""The deployable student: export a run's best trial, load an export back, predict on audio files.

* :mod:`.folder`: the export folder's file names, format version and its student.yaml;
* :mod:`.export`: ``export_run`` (choose the trial, restore or retrain it, score it once) and ``write_export``;
* :mod:`.inputs`: what an export reads from a run (the splits, the trial's model from its checkpoint or retrained);
* :mod:`.deployed`: the deployed graph in an export (measured bytes, onnxruntime scores, its student.yaml block);
* :mod:`.qat`: the export's quantisation-aware fine-tuning step (``qat_epochs``: auto, N or 0);
* :mod:`.report`: report.md;
* :mod:`.load`: ``load_export`` -> :class:`ExportedStudent`;
* :mod:`.predict`: running an export on audio files.
"""

from .export import ExportSummary, export_run, write_export
from .folder import (
    EXPORT_FORMAT,
    ONNX_FILE,
    ONNX_FP32_FILE,
    READABLE_FORMATS,
    REPORT_FILE,
    STUDENT_YAML,
    WEIGHTS_FILE,
    read_student_yaml,
)
from .inputs import ExportInputs, split_tensors
from .load import ExportedStudent, load_export
from .predict import FilePrediction, Prediction, collect_audio, predict_files, read_audio, windows, write_csv
from .report import report_markdown

__all__ = [
    "EXPORT_FORMAT",
    "READABLE_FORMATS",
    "ONNX_FP32_FILE",
    "STUDENT_YAML",
    "WEIGHTS_FILE",
    "ONNX_FILE",
    "REPORT_FILE",
    "read_student_yaml",
    "ExportSummary",
    "export_run",
    "write_export",
    "split_tensors",
    "ExportInputs",
    "report_markdown",
    "ExportedStudent",
    "load_export",
    "FilePrediction",
    "Prediction",
    "collect_audio",
    "read_audio",
    "windows",
    "predict_files",
    "write_csv",
]
