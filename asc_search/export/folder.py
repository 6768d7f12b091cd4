"""The export folder: its file names, its format version, and reading its description back.

    OUT/student.yaml         architecture, distillation + training settings, complexity, the deployed model,
                             metrics, provenance
    OUT/student.safetensors  the float32 weights (state dict; safetensors never runs code when loaded)
    OUT/student.onnx         THE deployed model, at the budget's param_dtype (int8 QDQ, float16 or float32; input "x"
                             [batch, 1, n_mels, n_frames] float32 -> "logits" float32)
    OUT/student.fp32.onnx    the float32 graph it was made from, the reference (absent when float32 is deployed)
    OUT/report.md            a short human-readable report

``student.yaml`` (format :data:`EXPORT_FORMAT`, ``kind: asc_search.student``) holds ``model`` (``family``,
``config``: the StudentConfig, ``input_shape``, ``labels``, ``feature_profile``), ``distillation``, ``training``,
``complexity`` (the budget report: the DCASE count at param_dtype and the analytic deployed estimate),
``deployed`` (precision, file, reference_file, the weight bytes measured from the deployed file by dtype, scales and
zero points apart, quantisation settings and calibration, QAT, the check against the float32 graph, onnxruntime
version and CPU), ``metrics`` (``test``: the deployed graph run by onnxruntime, scored once; ``test_fp32``: the
float32 model; ``test_drop``; ``validation``: the search's; ``validation_split``: deployed and float32 on the
validation split), ``onnx`` (the float32 graph's check against torch), ``files`` (names and sha256) and
``provenance`` (run, run_dir, trial_id, retrained, dataset, feature cache + fingerprint, teacher cache +
fingerprints, search file + sha256, split, proposal_params, versions, created_utc).

Format 1 (before the deployed model existed: ``student.onnx`` was float32 and the metrics the float32 model's) is
still read: :func:`read_student_yaml` adds ``deployed: {precision: float32, file: student.onnx, legacy: true}`` in
memory and never rewrites the folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError, NotFoundError

__all__ = ["EXPORT_FORMAT", "READABLE_FORMATS", "KIND", "STUDENT_YAML", "WEIGHTS_FILE", "ONNX_FILE", "ONNX_FP32_FILE",
           "REPORT_FILE", "read_student_yaml"]

EXPORT_FORMAT = 2
#: Formats this version reads (1: float32 only, no deployed block).
READABLE_FORMATS = (1, 2)
KIND = "asc_search.student"
STUDENT_YAML = "student.yaml"
WEIGHTS_FILE = "student.safetensors"
ONNX_FILE = "student.onnx"
ONNX_FP32_FILE = "student.fp32.onnx"
REPORT_FILE = "report.md"


def read_student_yaml(export_dir: Path) -> dict[str, Any]:
    """The ``student.yaml`` of an export folder, checked to be one this version reads."""
    import yaml

    meta_file = export_dir / STUDENT_YAML
    if not export_dir.is_dir():
        raise NotFoundError(f"export folder {export_dir} does not exist")
    if not meta_file.is_file():
        raise NotFoundError(
            f"{export_dir} is not an export folder: it has no {STUDENT_YAML} (make one with `asc-search export`)"
        )
    try:
        record = yaml.safe_load(meta_file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DataError(f"{meta_file} is not valid YAML ({exc})") from None
    if not isinstance(record, dict) or record.get("kind") != KIND:
        raise DataError(f"{meta_file} is not an asc-search student description (kind: {KIND} expected)")
    if record.get("format") not in READABLE_FORMATS:
        raise DataError(f"{meta_file} has export format {record.get('format')!r}; this asc-search reads "
                        f"{' and '.join(map(str, READABLE_FORMATS))}")
    if record["format"] == 1:
        record["deployed"] = {"precision": "float32", "file": ONNX_FILE, "reference_file": ONNX_FILE, "legacy": True}
    elif not isinstance(record.get("deployed"), dict) or "file" not in record["deployed"]:
        raise DataError(f"{meta_file} lacks its deployed: block (export format {record['format']})")
    return record
