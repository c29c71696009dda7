"""File helpers every layer shares: the sha256 of a file, and JSON read and written safely.

- :func:`sha256_file`: streaming sha256, optionally memoised on (path, size, mtime) for callers
  that check the same large file again and again (the weights registry).
- :func:`to_jsonable`: any config, record or tensor summary as plain JSON values.
- :func:`read_json` / :func:`write_json_atomic`: a size-limited read that turns every failure
  into one error naming the file, and a write that leaves the old file or the new one, never a
  partial one (:func:`dhr.outputs.atomic_path`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dhr.outputs import write_text_atomic

__all__ = ["read_json", "sha256_file", "to_jsonable", "write_json_atomic"]

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


def to_jsonable(x: Any, *, max_items: int = 64) -> Any:
    """``x`` as plain JSON values, recursively.

    Mappings become dicts with string keys; lists, tuples and sets become lists; dataclass instances
    their fields; paths strings. Tensors, arrays and numpy scalars with at most ``max_items``
    elements become (nested) lists or numbers, larger ones a summary ``"<tensor [shape]>"``. Floats
    stay floats, NaN and infinities included (``json`` writes and reads them). Anything else becomes
    its ``repr``, so a record can always be written.
    """
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v, max_items=max_items) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [to_jsonable(v, max_items=max_items) for v in x]
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    if isinstance(x, Path):
        return str(x)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return to_jsonable(dataclasses.asdict(x), max_items=max_items)
    if hasattr(x, "tolist") and hasattr(x, "shape"):  # torch / numpy, without importing them here
        size = x.numel() if callable(getattr(x, "numel", None)) else int(x.size)
        return x.tolist() if size <= max_items else f"<tensor {list(x.shape)}>"
    return repr(x)


def read_json(path: str | os.PathLike[str], *, max_bytes: int | None = None) -> Any:
    """The JSON document in a UTF-8 file.

    Args:
        path: The file.
        max_bytes: Refuse a larger file before reading it (None: no limit).

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: Larger than ``max_bytes``, not UTF-8 or not JSON (the message is ``<path>:
            <reason>``). Callers turn both into their own :class:`~dhr.errors.DHRError`.
    """
    p = Path(path)
    if max_bytes is not None and p.stat().st_size > max_bytes:
        raise ValueError(f"{p}: {p.stat().st_size:,} bytes, more than the {max_bytes:,} allowed")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    except RecursionError:
        raise ValueError(f"{p}: JSON nested too deeply to read") from None


def write_json_atomic(path: str | os.PathLike[str], doc: Any, *, indent: int | None = 2,
                      sort_keys: bool = False) -> Path:
    """Writes ``doc`` (JSON-ready data; see :func:`to_jsonable`) to ``path`` atomically, with a final
    newline, and returns the path. A kill leaves the old file or the new one, never a partial one."""
    return write_text_atomic(path, json.dumps(doc, indent=indent, sort_keys=sort_keys) + "\n")
