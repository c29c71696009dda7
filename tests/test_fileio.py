"""Tests of dhr.fileio: the one sha256_file and the JSON helpers."""

from __future__ import annotations

import hashlib
import os

from dhr.fileio import sha256_file


def test_sha256_file_matches_hashlib_across_blocks(tmp_path):
    data = os.urandom((1 << 20) + 123)  # more than one read block
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path), memo=True) == hashlib.sha256(data).hexdigest()


def test_sha256_file_rehashes_a_tampered_file_unless_memoised(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"a" * 64)
    st = path.stat()
    good = sha256_file(path, memo=True)
    path.write_bytes(b"b" * 64)  # same size; put the old timestamp back, as a fast in-place edit can
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file(path) == hashlib.sha256(b"b" * 64).hexdigest() != good  # the default never trusts a memo
    assert sha256_file(path, memo=True) == good  # the memo is keyed on (path, size, mtime) only


def test_to_jsonable_plain_values_and_summaries():
    import dataclasses
    from pathlib import Path

    import numpy as np
    import torch

    from dhr.fileio import to_jsonable

    @dataclasses.dataclass
    class Cfg:
        steps: int = 3
        sizes: tuple[int, ...] = (4, 8)

    doc = to_jsonable({1: Cfg(), "p": Path("a/b"), "t": torch.arange(3), "n": np.float32(0.5),
                       "big": torch.zeros(65), "s": {2}, "nan": float("nan"), "obj": object})
    assert doc["1"] == {"steps": 3, "sizes": [4, 8]} and doc["p"] == "a/b"
    assert doc["t"] == [0, 1, 2] and doc["n"] == 0.5 and doc["s"] == [2]
    assert doc["big"] == "<tensor [65]>" and doc["nan"] != doc["nan"]  # NaN stays a float
    assert doc["obj"] == repr(object)


def test_json_round_trip_is_atomic_and_read_errors_name_the_file(tmp_path):
    import pytest

    from dhr.fileio import read_json, write_json_atomic

    path = write_json_atomic(tmp_path / "sub" / "a.json", {"b": [1, 2]})
    assert path.read_text(encoding="utf-8").endswith("\n") and read_json(path) == {"b": [1, 2]}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary file left
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        read_json(bad)
    with pytest.raises(ValueError, match="more than the 1 allowed"):
        read_json(path, max_bytes=1)
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ValueError, match="deep.json: JSON nested too deeply"):
        read_json(deep)
    deep.write_bytes(b"\xee\x82")
    with pytest.raises(ValueError, match="deep.json: not UTF-8"):
        read_json(deep)
