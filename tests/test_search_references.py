"""Reference arms in a real search (local Ray): present in trials.parquet, trained to their full epochs while ASHA
stops sampled trials, never over budget, counted apart from num_samples; and a search whose sampled trials are all
worse makes the reference the winner, which search, results and export say."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from asc_search.search.driver import run_search

ROOT = Path(__file__).resolve().parents[1]


def _space(tmp_path) -> Path:
    """Sampled proposals that cannot learn (learning rate ~1e-7: they stay at their random initialisation, ~chance;
    2 epochs, ASHA from epoch 1) against two references with a working recipe (lr 5e-3, batch 16, 10 epochs)."""
    raw = yaml.safe_load((ROOT / "search_spaces" / "quick.yaml").read_text())
    raw["train"].update(epochs=2, min_steps=0, batch_size=32,
                        lr={"type": "float", "low": 1.0e-7, "high": 2.0e-7, "log": True})
    raw["search"].update(num_samples=2, n_startup_trials=2,
                         asha={"enabled": True, "grace_period": 1, "reduction_factor": 2})
    recipe = {"lr": 5.0e-3, "epochs": 10, "batch_size": 16}
    raw["references"] = [
        {"name": "ce", "student": {"preset": "dcase2024_baseline", "width": "fit"}, "train": recipe},
        {"name": "kd", "student": {"preset": "dcase2024_baseline", "width": "fit"},
         "distill": {"kd_weight": 0.98, "temperature": 2.0}, "train": recipe},
        {"name": "huge", "student": {"preset": "dcase2024_baseline", "width": 64}},  # over budget: reported
    ]
    path = tmp_path / "refs.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.ray
def test_references_train_in_full_and_win_when_nothing_beats_them(quick_cache, teacher_cache, ray_local, tmp_path,
                                                                   capsys):
    from asc_search.cli import main
    from asc_search.export.export import export_run

    events = []
    result = run_search(quick_cache, _space(tmp_path), teacher_cache=teacher_cache, name="refs",
                        results_dir=tmp_path / "results", on_event=lambda e, i: events.append((e, i)))
    run = result.run_dir
    table = pd.read_parquet(run / "trials.parquet")
    refs = table[table["kind"] == "reference"].set_index("reference")
    sampled = table[table["kind"] == "search"]
    # every reference was proposed first, under its name; the over-budget one rejected, never trained
    assert list(refs.index) == ["ce", "kd", "huge"] and list(refs["trial_id"]) == [0, 1, 2]
    assert refs.loc["huge", "status"] == "rejected_budget" and refs.loc["huge", "epochs"] == 0
    assert any(e == "warning" and "'huge' does not fit the budget" in i["message"] for e, i in events)
    # the others trained to their full epochs (ASHA never stops them), within budget
    for name in ("ce", "kd"):
        assert refs.loc[name, "status"] == "completed" and refs.loc[name, "epochs"] == 10
        assert refs.loc[name, "param_bytes"] <= 24_000 and refs.loc[name, "macs"] <= 2_000_000
    # num_samples counts the sampled trials; every trained one within budget
    trained = sampled[sampled["status"].isin(["completed", "early_stopped", "failed"])]
    assert len(trained) == 2 and (trained["param_bytes"] <= 24_000).all() and (trained["macs"] <= 2_000_000).all()
    assert (trained["epochs"] <= 2).all()
    # the reference wins: the search, run.json, results and export say so
    shown = table[["trial_id", "kind", "reference", "status", "epochs", "val_macro_accuracy", "val_log_loss"]]
    print(shown.to_string())
    assert result.best["kind"] == "reference" and result.best["reference"] in ("ce", "kd"), shown.to_string()
    assert "itself" in result.margin["text"]
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["num_samples"] == 2
    assert [r["status"] for r in info["references"]] == ["planned", "planned", "over_budget"]
    said = [m for m in info["warnings"] if "the winner is reference" in m]
    assert len(said) == 1 and result.best["reference"] in said[0]
    assert any(e == "warning" and "the winner is reference" in i["message"] for e, i in events)
    assert main(["results", str(run), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "the winner is reference" in out and "references included" in out
    summary = export_run(run, tmp_path / "export", device="cpu")
    assert summary.trial_id == str(int(refs.loc[result.best["reference"], "trial_id"]))
    record = yaml.safe_load((tmp_path / "export" / "student.yaml").read_text())
    assert any("the winner is reference" in m for m in record["warnings"])
    assert record["against_reference"]["reference"] == result.best["reference"]
    assert "the winner is reference" in (tmp_path / "export" / "report.md").read_text()
