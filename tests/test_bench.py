"""`asc-search bench`: the per-area runner and the accuracy table."""

from __future__ import annotations

import json

import pytest

from asc_search.bench import runner as B
from asc_search.cli import main
from asc_search.errors import ConfigError, NotFoundError


def test_run_area_passes_quick_sizes_and_reports_failures(monkeypatch):
    out = B.run_area("complexity", quick=True)
    assert out["available"] and "error" not in out, out.get("error")
    assert out["arguments"] == {"n_candidates": 10}
    assert out["result"]["cost_student"]["n_candidates"] == 10
    missing = B.run_area("nonexistent")
    assert not missing["available"] and "no benchmark module" in missing["error"]

    import types

    broken = types.ModuleType("asc_search.bench.broken")
    broken.run = lambda: 1 / 0
    monkeypatch.setitem(__import__("sys").modules, "asc_search.bench.broken", broken)
    failed = B.run_area("broken")
    assert failed["available"] and failed["error"].startswith("ZeroDivisionError")


def test_flatten_names_nested_figures():
    rows = dict(B.flatten({"a": {"b": 1}, "profiles": [{"profile": "quick", "t": 2.0}, {"x": 3}], "l": [1, 2]}))
    assert rows == {"a.b": 1, "profiles.quick.profile": "quick", "profiles.quick.t": 2.0, "profiles.1.x": 3, "l": "[1, 2]"}


def test_bad_bench_inputs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown bench area"):
        B.run_bench(areas=("gpu",), accuracy=False)
    with pytest.raises(NotFoundError, match="holds no finished demo"):
        B.accuracy_table(tmp_path)
    assert main(["bench", "--areas", "complexity", "--no-accuracy", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_accuracy_table_from_a_demo(tiny_demo, tmp_path, capsys):
    """The accuracy table is `compare` on the demo's cache: its references and its export over seeds."""
    target = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--areas", "complexity", "--demo-dir", str(tiny_demo.out_dir),
                 "--json", str(target), "--device", "cpu", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "Accuracy on the built-in data" in out and "baseline_kd_emb" in out and " ± " in out
    acc = json.loads(target.read_text())["accuracy"]
    names = [r["name"] for r in acc["rows"]]
    assert names[:3] == ["baseline_ce", "baseline_kd", "baseline_kd_emb"] and len(names) == 4
    assert acc["seeds"] == [0, 1] and all(len(r["runs"]) == 2 for r in acc["rows"])  # --quick: 2 seeds
    student = acc["rows"][-1]
    # the searched student's row: the export's architecture, retrained with its recipe
    assert student["kind"] == "export" and f"trial {tiny_demo.student['trial_id']}" in student["name"]
    assert student["params"] == tiny_demo.student["params"] and student["macs"] == tiny_demo.student["macs"]
    assert student["within_budget"] is True and student["best_reference"] in names[:3]
    assert acc["rows"][0]["distill"]["kd_weight"] == 0.0 and acc["rows"][1]["distill"]["kd_weight"] == 0.98
    assert acc["rows"][0]["within_budget"] and acc["rows"][0]["params"] < 24_000  # width fitted to quick's budget
    assert acc["teacher"]["params"] > 1_000_000 and acc["teacher"]["test_macro_accuracy"] == pytest.approx(
        tiny_demo.teacher["test_macro_accuracy"])
    assert json.loads(target.read_text())["areas"]["complexity"]["available"]
