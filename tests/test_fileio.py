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
