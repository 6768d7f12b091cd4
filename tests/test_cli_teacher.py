"""`asc-search teacher train | embed | import`: success paths print their results; user mistakes end with exit code 2
and a one-line message, no traceback, nothing half-written."""

import json

import pyarrow.parquet as pq
import pytest

from asc_search.cli import main
from asc_search.data.teacher_cache import read_teacher_cache_meta


@pytest.mark.slow
def test_train_cli_trains_prints_and_refuses_to_overwrite(quick_cache, tmp_path, capsys):
    out = tmp_path / "teacher"
    code = main(["teacher", "train", str(quick_cache), "--out", str(out), "--epochs", "1", "--device", "cpu",
                 "--no-mixup", "--no-roll", "--batch-size", "32"])
    text = capsys.readouterr().out
    assert code == 0
    assert "epoch   1/1" in text and "accuracy per device" in text and "unseen*" in text and "macro acc" in text
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["train_config"]["mixup_alpha"] == 0.0 and meta["train_config"]["time_roll"] == 0
    assert meta["train_config"]["freq_mixstyle_p"] == 0.4  # left on
    assert meta["dir_bank"] is None and meta["split"]["subset"] is None
    code = main(["teacher", "train", str(quick_cache), "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists and is not empty" in err and "--force" in err and "Traceback" not in err


@pytest.mark.slow
def test_train_cli_with_device_responses_on_the_training_subset(quick_cache, tmp_path):
    out = tmp_path / "teacher"
    assert main(["teacher", "train", str(quick_cache), "--out", str(out), "--epochs", "1", "--device", "cpu",
                 "--batch-size", "32", "--dir-p", "0.5", "--subset", "50"]) == 0
    meta = json.loads((out / "teacher.json").read_text())
    assert meta["train_config"]["dir_p"] == 0.5 and meta["dir_bank"]["source"] == "generic"
    assert meta["split"]["subset"] == 50
    metrics = json.loads((out / "metrics.json").read_text())
    from asc_search.data.cache import load_features

    table = load_features(quick_cache, columns_only=True).table
    in50 = int(((table["split"] == "train") & (table["subset_pct"] <= 50).fillna(False)).sum())
    assert metrics["split_sizes"]["train"] + metrics["split_sizes"]["val"] == in50


@pytest.mark.parametrize(
    "argv, message",
    [
        (["teacher", "train", "{missing}", "--out", "{tmp}/t"], "no such feature cache folder"),
        (["teacher", "train", "{cache}", "--out", "{tmp}/t", "--preset", "dcase2024_baseline"], "is not a teacher"),
        (["teacher", "train", "{cache}", "--out", "{tmp}/t", "--preset", "nope"], "unknown model preset 'nope'"),
        (["teacher", "embed", "{cache}", "--teacher", "{tmp}/none", "--out", "{tmp}/c"], "no such teacher folder"),
        (["teacher", "embed", "{cache}", "--teacher", "{teacher}", "--pool", "2by2", "--out", "{tmp}/c"], "--pool must be HxW"),
        (["teacher", "import", "{cache}", "{tmp}/absent.parquet", "--out", "{tmp}/c"], "absent.parquet: no such file"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, message, quick_cache, teacher_dir, tmp_path, capsys):
    fill = {"missing": str(tmp_path / "nocache"), "tmp": str(tmp_path), "cache": str(quick_cache), "teacher": str(teacher_dir)}
    code = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.startswith("asc-search teacher: error:") and "Traceback" not in err
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def test_embed_and_import_cli(quick_cache, teacher_dir, teacher_cache, tmp_path, capsys):
    out = tmp_path / "emb"
    assert main(["teacher", "embed", str(quick_cache), "--teacher", str(teacher_dir), "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "wrote teacher cache" in capsys.readouterr().out
    assert read_teacher_cache_meta(out)["n_rows"] == read_teacher_cache_meta(teacher_cache)["n_rows"]

    # round trip through import: the embed output is itself a valid external file
    src = sorted(out.glob("part-*.parquet"))[0]
    assert main(["teacher", "import", str(quick_cache), str(src), "--out", str(tmp_path / "imp")]) == 0
    assert read_teacher_cache_meta(tmp_path / "imp")["source"] == "import"

    broken = tmp_path / "broken.parquet"
    table = pq.read_table(src)
    pq.write_table(table.drop_columns(["logits"]), broken)
    code = main(["teacher", "import", str(quick_cache), str(broken), "--out", str(tmp_path / "imp2")])
    err = capsys.readouterr().err
    assert code == 2 and "missing column(s) logits" in err and str(broken) in err
    assert not (tmp_path / "imp2").exists()
