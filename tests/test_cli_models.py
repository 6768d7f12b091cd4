"""``asc-search complexity``: the report, its JSON, and bad inputs (non-zero exit, one-line message, no traceback)."""

from __future__ import annotations

import json

import pytest

from asc_search.cli import main


def _run(capsys, *argv):
    code = main(["complexity", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_report_for_dcase2024_baseline(capsys):
    code, out, err = _run(capsys, "--preset", "dcase2024_baseline", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["params"], data["param_bytes"], data["macs"]) == (61_148, 122_296, 29_419_156)
    assert data["param_dtype"] == "float16"  # the preset's storage dtype
    assert data["passed"] is True
    assert data["limits"]["max_param_bytes"] == 128_000 and data["limits"]["max_macs"] == 30_000_000
    assert "excluded" in data["note"]


def test_table_report_says_pass_and_excludes_train_only_parts(capsys):
    code, out, _ = _run(capsys, "--preset", "dcase2024_baseline", "--dtype", "int8")
    assert code == 0
    assert "61,148" in out and "29,419,156" in out and "128,000" in out
    assert "pass" in out and "within budget" in out
    assert "projection head" in out and "excluded" in out


def test_the_baseline_preset_deploys_at_float16_within_the_dcase_budget(capsys):
    code, out, _ = _run(capsys, "--preset", "dcase2024_baseline", "--json")
    data = json.loads(out)
    assert code == 0 and data["param_dtype"] == "float16" and data["passed"] is True
    # what `asc-search export` measures from the float16 graph (tests/test_deploy.py holds the two equal)
    assert data["param_bytes"] == 122_296 and data["deployed_param_bytes"] == 119_588 <= 128_000
    assert [r["figure"] for r in data["rows"]] == ["params", "param_bytes", "deployed_param_bytes", "macs"]


def test_limits_from_options_and_strict_exit(capsys):
    code, out, _ = _run(capsys, "--preset", "dcase2024_baseline", "--json", "--max-macs", "1000000",
                        "--max-param-bytes", "100000", "--input-shape", "1,1,256,65", "--dtype", "float32")
    data = json.loads(out)
    assert code == 0
    assert data["passed"] is False and data["param_bytes"] == 61_148 * 4
    assert {r["figure"] for r in data["rows"] if not r["ok"]} == {"params", "param_bytes", "deployed_param_bytes",
                                                                  "macs"}
    # the deployed graph at float32: 58,440 kernel + 1,354 folded-BatchNorm bias numbers, 4 bytes each
    assert data["deployed_param_bytes"] == (58_440 + 1_354) * 4
    code, out, _ = _run(capsys, "--preset", "dcase2024_baseline", "--max-macs", "1000000", "--strict")
    assert code == 1 and "FAIL" in out and "over budget" in out


def test_input_shape_changes_macs_not_params(capsys):
    _, out, _ = _run(capsys, "--preset", "dcase2024_baseline", "--json", "--input-shape", "1,1,40,51")
    data = json.loads(out)
    assert data["params"] == 61_148 and data["macs"] < 5_000_000 and data["input_shape"] == [1, 1, 40, 51]


def test_student_config_file(capsys, tmp_path):
    path = tmp_path / "student.yaml"
    path.write_text("student:\n  base_channels: 16\n  n_blocks: [1, 1]\n  strides: {b2: [2, 2]}\n")
    code, out, err = _run(capsys, "--config", str(path), "--json", "--input-shape", "1,1,40,51")
    assert code == 0, err
    data = json.loads(out)
    assert data["param_dtype"] == "int8" and data["passed"] is True and data["params"] > 0


def test_layers_view(capsys):
    code, out, _ = _run(capsys, "--preset", "dcase2023_baseline", "--layers", "--json")
    data = json.loads(out)
    assert code == 0
    assert sum(layer["params"] for layer in data["layers"]) == data["params"]
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--preset", "nope"], "unknown model preset 'nope'; valid presets: dcase2024_baseline"),
        (["--preset", "teacher", "--dtype", "fp8"], "unknown --dtype 'fp8'; valid dtypes: int8, float16, float32"),
        (["--preset", "dcase2024_baseline", "--input-shape", "256x65"], "expected 4 positive integers"),
        (["--preset", "dcase2024_baseline", "--input-shape", "1,1,a,65"], "not a list of integers"),
        (["--preset", "dcase2023_baseline", "--input-shape", "1,1,8,8"], r"cannot take input shape \[1, 1, 8, 8\]"),
        (["--preset", "dcase2024_baseline", "--max-macs", "-5"], "--max-macs must be a positive integer"),
        (["--preset", "dcase2024_baseline", "--max-param-bytes", "lots"], "--max-param-bytes must be a positive"),
        (["--config", "/nonexistent/student.yaml"], "does not exist"),
    ],
)
def test_bad_inputs_exit_nonzero_with_one_line(capsys, argv, message):
    import re

    code, out, err = _run(capsys, *argv)
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("asc-search complexity: error: ")
    assert re.search(message, lines[0]), lines[0]


def test_bad_student_config_file_names_file_and_key(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("n_blocks: [1, 1]\nstrides: {b7: [1, 2]}\n")
    code, _, err = _run(capsys, "--config", str(path))
    assert code == 2
    assert str(path) in err and "b7" in err and "valid blocks" in err and "b1, b2" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("n_blocks: [1, 1\n")
    code, _, err = _run(capsys, "--config", str(broken))
    assert code == 2 and str(broken) in err and len(err.strip().splitlines()) == 1
