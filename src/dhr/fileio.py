"""File helpers every layer shares: the sha256 of a file, and JSON read and written safely.

- :func:`sha256_file`: streaming sha256, optionally memoised on (path, size, mtime) for callers
  that check the same large file again and again (the weights registry).
- :func:`to_jsonable`: any config, record or tensor summary as plain JSON values.
- :func:`read_json` / :func:`write_json_atomic`: a size-limited read that turns every failure
  into one error naming the file, and a write that leaves the old file or the new one, never a
  partial one (:func:`dhr.outputs.atomic_path`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["sha256_file"]

_CHUNK = 1 << 20
_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike[str], *, memo: bool = False) -> str:
    """Lowercase hex sha256 of a file's bytes, read in 1 MiB blocks.

    Args:
        path: The file.
        memo: Reuse the digest computed earlier in this process for the same resolved path, size
            and modification time (ns). Only for files that are replaced, not edited in place
            within one timestamp tick (the weights cache); security checks of files a user may
            have tampered with hash afresh (the default).

    Raises:
        OSError: The file cannot be read.
    """
    p = Path(path)
    key = None
    if memo:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        cached = _MEMO.get(key)
        if cached is not None:
            return cached
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    digest = h.hexdigest()
    if key is not None:
        _MEMO[key] = digest
    return digest
