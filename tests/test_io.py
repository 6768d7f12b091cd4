"""The one atomic writer, the JSON-safe converter and the provenance stamp (asc_search._io), and the event helpers."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from asc_search import __version__
from asc_search._io import atomic_output_dir, atomic_path, jsonable, provenance, write_json_atomic
from asc_search._progress import emit, progress


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_path_gives_ordinary_permissions_and_leaves_nothing_on_error(tmp_path):
    umask = os.umask(0o022)
    try:
        target = tmp_path / "sub" / "file.bin"
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"new")
        assert target.read_bytes() == b"new"
        assert _mode(target) == 0o644  # not mkstemp's private 0600
        with pytest.raises(RuntimeError), atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
        assert target.read_bytes() == b"new"  # the old content survives a failed write
        assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temporary left behind
    finally:
        os.umask(umask)


def test_atomic_output_dir_replaces_whole_folders_or_nothing(tmp_path):
    final = tmp_path / "out"
    with atomic_output_dir(final) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError), atomic_output_dir(final) as tmp:
        (tmp / "b").write_text("2")
        raise ValueError
    assert sorted(p.name for p in final.iterdir()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_jsonable_turns_library_values_into_plain_json():
    @dataclasses.dataclass
    class Cfg:
        x: tuple = (1, 2)

    value = {
        1: np.float32(0.5), "nan": float("nan"), "inf": np.float64("inf"), "t": torch.tensor(3), "arr": np.arange(2),
        "path": Path("/a/b"), "cfg": Cfg(), "flag": np.bool_(True), "none": None, "nested": [(1, np.int64(2))],
    }
    out = jsonable(value)
    assert out == {"1": 0.5, "nan": None, "inf": None, "t": 3, "arr": [0, 1], "path": "/a/b", "cfg": {"x": [1, 2]},
                   "flag": True, "none": None, "nested": [[1, 2]]}
    json.dumps(out, allow_nan=False)  # strictly valid JSON


def test_write_json_atomic_and_provenance_stamp(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"score": math.nan, **provenance(run="x")})
    data = json.loads(path.read_text())
    assert data["score"] is None and data["run"] == "x"
    assert data["asc_search_version"] == __version__
    assert {"python", "torch", "numpy", "pyarrow"} <= set(data["versions"])
    assert data["created_utc"].endswith("+00:00")


def test_progress_events_count_weighted_units_and_a_failing_renderer_is_ignored():
    seen = []
    items = list(progress([3, 4, 5], "work", lambda e, i: seen.append((e, i["done"], i["total"])), total=12,
                          weight=lambda n: n))
    assert items == [3, 4, 5]
    assert seen == [("progress", 0, 12), ("progress", 3, 12), ("progress", 7, 12), ("progress", 12, 12)]

    def broken(event, info):
        raise RuntimeError("display broke")

    emit(broken, "log", message="still fine")  # must not raise
