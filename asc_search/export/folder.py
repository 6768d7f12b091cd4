"""The export folder: its file names, its format version, and reading its description back.

    OUT/student.yaml         architecture, distillation + training settings, complexity, metrics, provenance
    OUT/student.safetensors  the weights (state dict; safetensors never runs code when loaded)
    OUT/student.onnx         the model as ONNX (input "x" [batch, 1, n_mels, n_frames] -> "logits")
    OUT/report.md            a short human-readable report

``student.yaml`` (format :data:`EXPORT_FORMAT`, ``kind: asc_search.student``) holds ``model`` (``family``,
``config``: the StudentConfig, ``input_shape``, ``labels``, ``feature_profile``), ``distillation``, ``training``,
``complexity`` (the budget report), ``metrics`` (``test``: scored once; ``validation``: the search's),
``onnx`` (file, max_abs_diff, check_clips, input, output), ``files`` (names and sha256 of the weights and the ONNX
graph) and ``provenance`` (run, run_dir, trial_id, retrained, dataset, feature cache + fingerprint, teacher cache +
fingerprints, search file + sha256, split, proposal_params, versions, created_utc).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DataError, NotFoundError

__all__ = ["EXPORT_FORMAT", "KIND", "STUDENT_YAML", "WEIGHTS_FILE", "ONNX_FILE", "REPORT_FILE", "read_student_yaml"]

EXPORT_FORMAT = 1
KIND = "asc_search.student"
STUDENT_YAML = "student.yaml"
WEIGHTS_FILE = "student.safetensors"
ONNX_FILE = "student.onnx"
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
    if record.get("format") != EXPORT_FORMAT:
        raise DataError(f"{meta_file} has export format {record.get('format')!r}; this asc-search reads {EXPORT_FORMAT}")
    return record
