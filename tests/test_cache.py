"""Parquet helpers and the feature-cache reader."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from asc_search._io import atomic_output_dir, fingerprint_file, fingerprint_json, write_json_atomic
from asc_search.config import SplitConfig
from asc_search.data.cache import (
    MANIFEST,
    array_to_list_array,
    list_column_to_numpy,
    list_column_to_tensor,
    load_features,
    read_parquet_metadata,
    write_parquet,
)
from asc_search.errors import CacheError


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_tensor_round_trip_through_parquet_in_several_chunks(tmp_path, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 3, 4, 5)).astype(dtype)
    table = pa.table({"i": np.arange(37), "x": array_to_list_array(x)})
    write_parquet(table, tmp_path / "t.parquet", {"shape": [3, 4, 5]}, row_group_size=10)
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.column("x").num_chunks > 1 or len(back.column("x").chunks[0]) == 37
    got = list_column_to_numpy(back.column("x"), (3, 4, 5))
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x)
    assert read_parquet_metadata(tmp_path / "t.parquet") == {"shape": [3, 4, 5]}


def test_list_column_respects_slices_and_chunks():
    x = np.arange(60, dtype=np.float32).reshape(6, 2, 5)
    arr = array_to_list_array(torch.from_numpy(x))
    chunked = pa.chunked_array([arr.slice(1, 2), arr.slice(4, 2)])
    got = list_column_to_tensor(chunked, (2, 5))
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), x[[1, 2, 4, 5]])


def test_list_column_rejects_wrong_width():
    arr = array_to_list_array(np.zeros((2, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="width 6"):
        list_column_to_numpy(arr, (2, 4))


def test_fingerprints_follow_content(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"hello")
    first = fingerprint_file(a)
    assert first == fingerprint_file(a) and len(first) == 16
    a.write_bytes(b"hellp")
    assert fingerprint_file(a) != first
    assert fingerprint_json({"b": 1, "a": [1, 2]}) == fingerprint_json({"a": [1, 2], "b": 1})
    assert fingerprint_json({"a": 1}) != fingerprint_json({"a": 2})


def test_atomic_output_dir_leaves_nothing_on_error_and_replaces_on_success(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(final) as tmp:
            (tmp / "half.parquet").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_output_dir(final) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()  # nothing visible until done
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_load_features_gives_aligned_tensors(quick_cache):
    fs = load_features(quick_cache)
    n = len(fs.table)
    assert fs.x.shape == (n, 1, 40, 51) and fs.x.dtype == torch.float16
    assert fs.profile.name == "quick" and len(fs.labels) == 10
    assert fs.y.dtype == torch.int64 and fs.y.shape == (n,)
    assert fs.input_shape == (1, 1, 40, 51)
    # row i of x is row i of the Parquet files in manifest order
    first = pq.read_table(quick_cache / fs.meta["files"][0]["name"])
    k = min(5, first.num_rows)
    np.testing.assert_array_equal(
        list_column_to_numpy(first.column("x").slice(0, k), (1, 40, 51)), fs.x[:k].numpy()
    )
    assert first.column("filename").to_pylist()[:k] == fs.table["filename"].tolist()[:k]


def test_split_is_location_disjoint_and_row_aligned(quick_cache):
    fs = load_features(quick_cache)
    parts = fs.split(SplitConfig(val_fraction=0.25, seed=3))
    assert set(parts) == {"train", "val", "test"}
    ids = {k: set(t["identifier"]) for k, (_, _, t) in parts.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert sum(len(t) for (_, _, t) in parts.values()) == len(fs.table)
    position = {name: i for i, name in enumerate(fs.table["filename"])}
    for x, y, table in parts.values():
        rows = [position[name] for name in table["filename"]]
        assert torch.equal(x, fs.x[rows])
        assert torch.equal(y, fs.y[rows])


def test_split_indices_partition_the_rows_and_match_split(quick_cache):
    fs = load_features(quick_cache)
    cfg = SplitConfig(val_fraction=0.25, seed=3)
    indices = fs.split_indices(cfg)
    every = np.concatenate([idx for idx, _ in indices.values()])
    assert np.array_equal(np.sort(every), np.arange(len(fs.table)))  # disjoint and complete
    for name, (x, _, table) in fs.split(cfg).items():
        idx, part = indices[name]
        assert list(part["filename"]) == list(fs.table["filename"].iloc[idx]) == list(table["filename"])
        assert torch.equal(x, fs.x[torch.from_numpy(idx)])


def test_load_features_refuses_broken_caches(quick_cache, tmp_path):
    with pytest.raises(CacheError, match="no such feature cache"):
        load_features(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="no _manifest.json"):
        load_features(tmp_path / "empty")

    broken = tmp_path / "broken"
    shutil.copytree(quick_cache, broken)
    manifest = json.loads((broken / MANIFEST).read_text())
    first = manifest["files"][0]["name"]
    manifest["files"][0]["rows"] += 1
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="its n_clips says"):
        load_features(broken)
    manifest["n_clips"] += 1
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match=f"{first}: holds"):
        load_features(broken)

    manifest["files"][0]["rows"] -= 1
    manifest["n_clips"] -= 1
    manifest["fingerprint"] = "0" * 16
    (broken / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CacheError, match="another build"):
        load_features(broken)

    manifest = json.loads((quick_cache / MANIFEST).read_text())
    (broken / MANIFEST).write_text(json.dumps(manifest))
    (broken / first).unlink()
    with pytest.raises(CacheError, match="missing"):
        load_features(broken)
