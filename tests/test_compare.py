"""`asc-search compare` (asc_search.compare over asc_search.training.seeds): references and an exported student
trained over seeds on the tests' tiny cache; mean ± sd and paired differences recomputed from the per-seed runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from asc_search.cli import main
from asc_search.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _space(tmp_path) -> Path:
    raw = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    raw["train"].update(epochs=1, min_steps=0)
    raw["references"] = [
        {"name": "ce", "student": {"preset": "dcase2024_baseline", "width": "fit"}, "distill": {"kd_weight": 0.0}},
        {"name": "kd", "student": {"base_channels": 8, "n_blocks": [1, 1]}, "distill": {"kd_weight": 0.98}},
    ]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _export(tmp_path, quick_cache) -> Path:
    """An export folder of a tiny student whose recorded recipe is 1 epoch of cross-entropy."""
    from asc_search.config import Budget
    from asc_search.data.cache import load_features
    from asc_search.export.export import write_export
    from asc_search.models.student import StudentConfig, build_student
    from asc_search.training import DistillConfig, TrainConfig

    fs = load_features(quick_cache)
    cfg = StudentConfig(base_channels=8, n_blocks=(1, 1, 1), strides={"b2": (1, 1), "b3": (2, 2)})
    test = (fs.table["split"] == "test").to_numpy(copy=True)
    out = tmp_path / "export"
    write_export(out, build_student(cfg), student_config=cfg, profile=fs.profile, labels=fs.labels,
                 budget=Budget(24_000, "int8", 2_000_000), test_x=fs.x[torch.from_numpy(test)], test_y=fs.y[test],
                 test_table=fs.table[test].reset_index(drop=True), distill=DistillConfig().to_dict(),
                 train=TrainConfig(epochs=1, batch_size=32).to_dict(), provenance={"run": "r", "trial_id": "4"},
                 calibration_x=fs.x[torch.from_numpy(~test)][:64].float(), device="cpu")
    return out


def test_compare_two_seeds_gives_mean_sd_and_paired_differences(quick_cache, teacher_cache, tmp_path):
    from asc_search.compare import compare
    from asc_search.search.space import load_space

    space = _space(tmp_path)
    export = _export(tmp_path, quick_cache)
    result = compare(quick_cache, teacher_cache=teacher_cache, space=space, seeds=2, exports=[export], threads=1,
                     device="cpu")
    rows = result["rows"]
    assert [r["name"] for r in rows] == ["ce", "kd", "export (trial 4 of r)"]
    # quick.yaml trains with device impulse responses (dir_p 0.6): the references draw from the generic bank
    assert _ce_proposal(load_space(space)).train.dir_p == 0.6 and result["dir_bank"]["source"] == "generic"
    assert result["seeds"] == [0, 1] and all([run["seed"] for run in r["runs"]] == [0, 1] for r in rows)
    spec = load_space(space)
    for r in rows:
        for metric in ("val_macro_accuracy", "test_macro_accuracy", "test_unseen_macro_accuracy"):
            values = np.array([run[metric] for run in r["runs"]])
            assert 0.0 <= values.min() and values.max() <= 1.0
            assert r["summary"][metric]["mean"] == pytest.approx(values.mean())
            assert r["summary"][metric]["sd"] == pytest.approx(values.std(ddof=1))
            diffs = values - np.array([run[metric] for run in rows[0]["runs"]])
            assert r["paired_vs_first"][metric]["mean"] == pytest.approx(diffs.mean())
            assert r["paired_vs_first"][metric]["sd"] == pytest.approx(diffs.std(ddof=1))
        assert all(run["epochs"] == 1 for run in r["runs"])
    ce = rows[0]
    assert ce["within_budget"] and ce["params"] == spec.cost(_ce_proposal(spec).student).params
    assert rows[1]["distill"]["kd_weight"] == 0.98 and rows[2]["kind"] == "export"
    best_ref = max(rows[:2], key=lambda r: r["summary"]["val_macro_accuracy"]["mean"])["name"]
    assert rows[2]["best_reference"] == best_ref and "paired_vs_best_reference" not in rows[0]
    # the seeds are real: two seeds of one configuration train differently
    assert ce["runs"][0]["val_macro_accuracy"] != ce["runs"][1]["val_macro_accuracy"] or \
        ce["runs"][0]["test_log_loss"] != ce["runs"][1]["test_log_loss"]


def _ce_proposal(spec):
    from asc_search.search.references import reference_proposal

    return reference_proposal(spec, spec.references[0], 10)


def test_cli_compare_prints_mean_sd_and_writes_json(quick_cache, tmp_path, capsys):
    export = _export(tmp_path, quick_cache)
    target = tmp_path / "cmp.json"
    assert main(["compare", str(quick_cache), "--space", str(_space(tmp_path)), "--seeds", "2", "--no-references",
                 "--export", str(export), "--threads", "1", "--device", "cpu", "--json", str(target)]) == 0
    out = capsys.readouterr().out
    assert "export (trial 4 of r)" in out and " ± " in out and "seeds [0, 1]" in out
    saved = json.loads(target.read_text())
    assert len(saved["rows"]) == 1 and saved["rows"][0]["summary"]["test_macro_accuracy"]["n"] == 2


def test_compare_refuses_bad_inputs(quick_cache, tmp_path, capsys):
    from asc_search.compare import compare

    with pytest.raises(ConfigError, match="seeds must be a positive integer"):
        compare(quick_cache, seeds=0)
    with pytest.raises(ConfigError, match="nothing to compare"):
        compare(quick_cache, references=False)
    with pytest.raises(SystemExit):  # argparse: usage + one line
        main(["compare", str(quick_cache), "--seeds", "0"])
    assert "argument --seeds: expected a positive integer, got '0'" in capsys.readouterr().err
    other = tmp_path / "other"  # an export for other labels is refused, naming it
    other.mkdir()
    record = {"format": 1, "kind": "asc_search.student",
              "model": {"labels": ["a", "b"], "feature_profile": {"name": "quick"}, "config": {}}}
    (other / "student.yaml").write_text(yaml.safe_dump(record))
    assert main(["compare", str(quick_cache), "--no-references", "--export", str(other)]) == 2
    err = capsys.readouterr().err
    assert f"export {other} is for profile 'quick' and labels ['a', 'b']" in err and "Traceback" not in err
