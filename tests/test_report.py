"""report.md of an export (asc_search.export.report): what it says about distillation."""

from __future__ import annotations

from asc_search.export.report import report_markdown


def _record(**distill):
    return {
        "metrics": {"test": {"macro_accuracy": 0.5, "accuracy": 0.5, "log_loss": 1.2, "n": 10}},
        "complexity": {"rows": [], "param_dtype": "int8", "input_shape": [1, 1, 40, 51]},
        "provenance": {"trial_id": 3, "run": "r", "created_utc": "2026-01-01T00:00:00Z", "asc_search_version": "0",
                       "retrained": False},
        "distillation": {"kd_weight": 0.5, "temperature": 2.0, "emb_loss": "mse", **distill},
        "training": {},
        "onnx": {"max_abs_diff": 1e-6, "check_clips": 8},
        "deployed": {"file": "student.onnx", "precision": "float32", "reference_file": "student.fp32.onnx",
                     "runtime": {"onnxruntime": "1"}, "weights_bytes": 400, "by_dtype": {"float32": 400},
                     "max_param_bytes": 1000, "counted_param_bytes": 440, "estimated_param_bytes": 400,
                     "scales_bytes": 0, "zero_points_bytes": 0, "file_bytes": 900, "n_weights": 100,
                     "check": {"clips": 8, "max_abs_logit_diff_vs_fp32": 0.0, "argmax_agreement_vs_fp32": 1.0}},
    }


def test_embedding_matching_is_named_only_when_it_was_used():
    off = report_markdown(_record(emb_weight=0.0))
    assert "no embedding matching (emb_weight 0)" in off and "(mse)" not in off
    on = report_markdown(_record(emb_weight=0.3, emb_loss="cosine"))
    assert "kd_weight 0.5, temperature 2.0, emb_weight 0.3 (cosine)" in on
