"""The teacher cache: exact Parquet round trip, join by filename, refusal of mismatched caches and broken imports.

Uses an in-memory feature set (no audio) so each test takes milliseconds; test_teacher.py covers the real caches.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from asc_search.config import DCASE_LABELS, get_profile
from asc_search.data.cache import FeatureSet
from asc_search.data.teacher_cache import (
    default_teacher_cache_dir,
    import_teacher_cache,
    load_teacher_targets,
    read_teacher_cache_meta,
    teacher_cache_path,
    write_teacher_cache,
)
from asc_search.errors import CacheError


def _features(cache_dir: Path, n: int = 30, fingerprint: str = "feat-fp") -> FeatureSet:
    table = pd.DataFrame(
        {
            "filename": [f"audio/park-x-{i}-0-a.wav" for i in range(n)],
            "label": np.arange(n) % 10,
            "device": "a",
            "split": "train",
        }
    )
    return FeatureSet(table, torch.zeros(n, 1, 4, 5), DCASE_LABELS, get_profile("quick"), fingerprint, cache_dir, {})


def _targets(n, shape=(6, 2, 1), k=10, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, *shape)).astype(np.float32), g.standard_normal((n, k)).astype(np.float32)


def _meta(fs):
    return {"feature_fingerprint": fs.fingerprint, "labels": list(fs.labels), "layer": "l", "teacher_fingerprint": "t"}


def test_round_trip_is_exact_and_joins_by_filename_not_row_order(tmp_path):
    fs = _features(tmp_path / "cache", n=30)
    emb, logits = _targets(30)
    order = np.random.default_rng(1).permutation(30)  # write the rows shuffled, in 4 files
    names = fs.table["filename"].to_numpy()[order]
    write_teacher_cache(tmp_path / "cache-teacher", names, emb[order], logits[order], _meta(fs), shard_rows=8)
    assert len(list((tmp_path / "cache-teacher").glob("part-*.parquet"))) == 4
    tt = load_teacher_targets(fs)  # default location: CACHE_DIR-teacher, beside the feature cache
    assert tt.embeddings.dtype == torch.float32 and tt.embedding_shape == (6, 2, 1)
    assert torch.equal(tt.embeddings, torch.from_numpy(emb))  # bit-exact, aligned to the feature table
    assert torch.equal(tt.logits, torch.from_numpy(logits))
    meta = read_teacher_cache_meta(tmp_path / "cache-teacher")
    assert meta["embedding_shape"] == [6, 2, 1] and meta["n_rows"] == 30 and meta["feature_fingerprint"] == "feat-fp"


def test_mismatched_cache_is_refused(tmp_path):
    fs = _features(tmp_path / "cache", n=12)
    emb, logits = _targets(12)
    write_teacher_cache(tmp_path / "cache-teacher", fs.table["filename"], emb, logits, _meta(fs))
    other = _features(tmp_path / "cache", n=12, fingerprint="another-fp")
    with pytest.raises(CacheError, match="fingerprint 'feat-fp'.*another-fp"):
        load_teacher_targets(other)
    bigger = _features(tmp_path / "cache", n=15)  # same fingerprint claimed, but 3 clips the teacher cache lacks
    with pytest.raises(CacheError, match=r"3 clip\(s\) of the feature cache are missing, e.g. audio/park-x-12-0-a.wav"):
        load_teacher_targets(bigger)
    with pytest.raises(CacheError, match="no teacher cache"):
        load_teacher_targets(fs, tmp_path / "nowhere")


def _write_external(path, names, emb, logits, list_type=True):
    emb_col = pa.array([list(r) for r in emb.reshape(len(emb), -1)]) if list_type else emb
    pq.write_table(pa.table({"filename": list(names), "embedding": emb_col, "logits": pa.array([list(r) for r in logits])}), path)
    return path


def test_import_adopts_a_valid_file(tmp_path):
    fs = _features(tmp_path / "cache", n=20)
    emb, logits = _targets(21, shape=(7, 1, 1))
    names = list(fs.table["filename"])[::-1] + ["audio/extra-clip.wav"]  # other order + one clip we lack
    src = _write_external(tmp_path / "ext.parquet", names, emb, logits)
    out = import_teacher_cache(fs, src)
    assert out == tmp_path / "cache-teacher" == teacher_cache_path(fs.cache_dir)
    tt = load_teacher_targets(fs)
    assert torch.equal(tt.embeddings[:, :, 0, 0], torch.from_numpy(emb[:20][::-1, :, 0, 0].copy()))
    assert torch.equal(tt.logits, torch.from_numpy(logits[:20][::-1].copy()))
    assert tt.meta["source"] == "import" and tt.meta["import"]["ignored_rows"] == 1
    assert len(tt.meta["import"]["sha256"]) == 64


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_column", r"missing column\(s\) logits"),
        ("wrong_logit_width", "'logits' has 9 values per row, expected 10"),
        ("ragged_embedding", "row 0 has 7 values, row 3 has 6"),
        ("nan", r"NaN or infinite values in 1 row\(s\), first row 5 \(filename audio/park-x-5-0-a.wav\)"),
        ("missing_clips", r"2 clip\(s\) of the feature cache are missing, e.g. audio/park-x-18-0-a.wav"),
        ("duplicate", "appear more than once, e.g. audio/park-x-0-0-a.wav"),
        ("not_parquet", "not a readable Parquet file"),
    ],
)
def test_import_refuses_broken_files(tmp_path, case, message):
    fs = _features(tmp_path / "cache", n=20)
    emb, logits = _targets(20, shape=(7, 1, 1))
    names = list(fs.table["filename"])
    path = tmp_path / "ext.parquet"
    rows_emb = [list(r) for r in emb.reshape(20, -1)]
    rows_log = [list(r) for r in logits]
    if case == "wrong_logit_width":
        rows_log = [r[:9] for r in rows_log]
    if case == "ragged_embedding":
        rows_emb[3] = rows_emb[3][:6]
    if case == "nan":
        rows_emb[5][2] = float("nan")
    if case == "missing_clips":
        names, rows_emb, rows_log = names[:18], rows_emb[:18], rows_log[:18]
    if case == "duplicate":
        names[1] = names[0]
    cols = {"filename": names, "embedding": rows_emb, "logits": rows_log}
    if case == "missing_column":
        del cols["logits"]
    if case == "not_parquet":
        path.write_text("filename,embedding\n")
    else:
        pq.write_table(pa.table(cols), path)
    with pytest.raises(CacheError, match=message) as info:
        import_teacher_cache(fs, path)
    assert str(path) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ext.parquet"]  # nothing half-written


def test_default_location_is_beside_the_feature_cache_and_the_older_layout_is_still_read(tmp_path, monkeypatch):
    cache = tmp_path / "data" / "cache-quick"
    assert teacher_cache_path(cache) == tmp_path / "data" / "cache-quick-teacher"
    assert teacher_cache_path(str(cache) + "/") == tmp_path / "data" / "cache-quick-teacher"
    cache.mkdir(parents=True)
    monkeypatch.chdir(cache)
    assert teacher_cache_path(".") == tmp_path / "data" / "cache-quick-teacher"  # "." names the folder it is

    fs = _features(cache, n=10)
    emb, logits = _targets(10)
    write_teacher_cache(cache / "teacher", fs.table["filename"], emb, logits, _meta(fs))  # the older layout
    assert default_teacher_cache_dir(cache) == cache / "teacher"
    assert torch.equal(load_teacher_targets(fs).logits, torch.from_numpy(logits))  # found there when alone
    write_teacher_cache(teacher_cache_path(cache), fs.table["filename"], emb + 1, logits + 1, _meta(fs))
    assert default_teacher_cache_dir(cache) == teacher_cache_path(cache)  # the current location wins
    assert torch.equal(load_teacher_targets(fs).logits, torch.from_numpy(logits + 1))


def test_teacher_cache_folder_reads_as_one_table(tmp_path):
    import pyarrow.dataset as ds

    fs = _features(tmp_path / "cache", n=20)
    emb, logits = _targets(20)
    out = write_teacher_cache(teacher_cache_path(fs.cache_dir), fs.table["filename"], emb, logits, _meta(fs),
                              shard_rows=8)
    frame = pd.read_parquet(out)
    assert list(frame["filename"]) == list(fs.table["filename"])
    np.testing.assert_array_equal(np.stack(frame["logits"].to_numpy()), logits)
    table = ds.dataset(out).to_table()
    assert table.num_rows == 20 and table.column_names == ["filename", "embedding", "logits"]
    assert b"asc_search" in pq.read_schema(sorted(out.glob("*.parquet"))[-1]).metadata  # every footer has it
