"""Safety of the output folder: atomic writes, a per-folder lock, unique output names, checks.

Everything a batch command writes goes through :func:`atomic_path` (a temporary file in the same
folder, renamed over the final name once complete), so a kill leaves either the old file or the
new one, never a partial file. One process at a time writes a folder (:class:`FolderLock`). Every
input gets an output name of its own (:func:`assign_names`), stable across runs because the names
are claimed in ``run.json``. :func:`verify_outputs` decides whether the files of a finished photo
are still there and readable, which is what resume trusts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from dhr.errors import ConfigError

__all__ = [
    "FolderLock",
    "NAME_MAX",
    "TMP_MARK",
    "assign_names",
    "atomic_path",
    "check_output_folder",
    "clean_stale_temps",
    "output_files",
    "path_key",
    "safe_stem",
    "verify_outputs",
    "write_text_atomic",
]

NAME_MAX = 255
"""Longest file name (bytes) on common file systems."""
TMP_MARK = ".dhr-tmp-"
"""Marks temporary files (``.<name>.dhr-tmp-<pid>-<n><suffix>``); removed by :func:`clean_stale_temps`."""
LOCK_NAME = ".dhr.lock"
_STEM_MAX = 120  # bytes of an input stem kept in output names (suffixes like _face0_age+2_smile-1.png follow)
_counter = iter(range(1 << 62))


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on success it is renamed over ``path``.

    The temporary name keeps the suffix (writers that pick the format from it still work) and
    starts with a dot. On an exception the temporary file is removed and ``path`` is untouched.

    Example:
        >>> with atomic_path("out/a.png") as tmp:
        ...     image.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # os.replace would fail only after the work, with an errno
        raise ConfigError(f"cannot write {path}: a folder has that name; move it away or choose another output")
    tmp = path.with_name(f".{path.stem[:100]}{TMP_MARK}{os.getpid()}-{next(_counter)}{path.suffix}")
    try:
        yield tmp
        if not tmp.is_file():
            raise OSError(f"nothing was written to {tmp} for {path}")
        with open(tmp, "rb+") as f:  # the data reaches the disk before the name does
            os.fsync(f.fileno())
        # Writers that create private files (safetensors: 0600) get the usual mode (0666 less the umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` (UTF-8) to ``path`` atomically and returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def clean_stale_temps(root: str | os.PathLike) -> list[Path]:
    """Removes temporary files left by killed runs under ``root`` (call it while holding the lock)."""
    removed = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for p in root.rglob(f".*{TMP_MARK}*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                p.unlink()
                removed.append(p)
    return removed


def check_output_folder(out: str | os.PathLike) -> Path:
    """Checks that ``out`` can be an output folder before any work starts; creates it.

    Raises:
        ConfigError: A component name longer than 255 bytes, a file or device in its place, a
            folder that cannot be created or written.
    """
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise ConfigError(f"output folder {str(out)[:80]}...: the name {part[:40]}... is "
                              f"{len(os.fsencode(part))} bytes, more than the {NAME_MAX} a file system allows; "
                              "choose a shorter --out")
    if out.exists() or out.is_symlink():
        try:
            st = out.stat()
        except OSError as e:
            raise ConfigError(f"output folder {out}: {e.strerror or e}; choose another --out") from None
        if not stat.S_ISDIR(st.st_mode):
            kind = "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else \
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a file"
            raise ConfigError(f"output folder {out} is {kind}, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".probe{TMP_MARK}{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"output folder {out} cannot be written ({e.strerror or e}); choose another --out "
                          "or fix its permissions") from None
    record = out / "run.json"  # dhr.records.RUN_JSON, written before and after the work
    if record.is_dir():
        raise ConfigError(f"{record} is a folder, where the run's record goes; move it away or choose another --out")
    return out


class FolderLock:
    """An exclusive lock on an output folder, held for one run (``out/.dhr.lock``).

    The lock is an OS advisory lock (``flock``), released by the OS when the process ends, so a
    killed run never leaves a stale lock. The file holds the holder's pid and command.

    Args:
        root: The output folder.
        what: The command holding it (shown to a second process).

    Raises:
        ConfigError: On :meth:`acquire` when another process holds it (its pid is in the message).
    """

    def __init__(self, root: str | os.PathLike, what: str = "dhr") -> None:
        self.path = Path(root) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_fd(fd)
        except OSError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except (OSError, ValueError):
                holder = {}
            os.close(fd)
            raise ConfigError(
                f"output folder {self.path.parent} is in use by another dhr process (pid "
                f"{holder.get('pid', '?')}, `{holder.get('command', '?')}`); wait for it to finish or choose "
                "another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": self.what}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def safe_stem(stem: str) -> str:
    """``stem`` usable in a file name: control characters and slashes replaced, cut to 120 UTF-8 bytes
    (room for the suffixes dhr appends, under the 255-byte name limit)."""
    stem = re.sub(r"[\x00-\x1f/\\]", "_", stem) or "image"
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) > _STEM_MAX:
        stem = raw[:_STEM_MAX].decode("utf-8", "ignore")
    return stem


def path_key(item: str | os.PathLike) -> str:
    """The key that identifies an input path across runs: its resolved absolute path (the plain
    absolute path when it cannot be resolved, e.g. a symlink loop)."""
    try:
        return str(Path(item).resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(item)


def assign_names(items: Sequence[str], claims: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Gives every input an output name of its own (its file stem, made unique).

    An input keeps the name it had in an earlier run into the same folder (``claims``, from
    ``run.json``). Otherwise it gets its stem (cut to 120 bytes) if no other input has claimed it,
    else ``<stem>-<8 hex of its absolute path>``: stable for the same file, different for two.

    Args:
        items: Input paths, in batch order.
        claims: Output name -> absolute input path, of earlier runs.

    Returns:
        ``(item -> name, notes)``: one note per renamed input.
    """
    taken = {name: path for name, path in (claims or {}).items()}
    by_path = {path: name for name, path in taken.items()}
    names: dict[str, str] = {}
    notes: list[str] = []
    pending = []
    for item in items:
        key = path_key(item)
        if key in by_path:
            names[item] = by_path[key]
        else:
            pending.append((item, key))
    for item, key in pending:
        base = safe_stem(Path(item).stem)
        name = base
        if name.casefold() in {n.casefold() for n in taken}:  # case-insensitive file systems too
            name = f"{base}-{hashlib.sha1(key.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
            other = next(p for n, p in taken.items() if n.casefold() == base.casefold())
            notes.append(f"{item}: output name {name!r} ({base!r} is taken by {other})")
        taken[name] = key
        by_path[key] = name
        names[item] = name
    return names, notes


def output_files(outputs: Any) -> list[str]:
    """Every file path listed in a face's ``outputs`` (bundles give their two files)."""
    files: list[str] = []

    def walk(x: Any, key: str = "") -> None:
        if isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, k)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v, key)
        elif isinstance(x, str) and key not in ("strengths",):
            if key == "bundle":
                files.extend([x + ".safetensors", x + ".json"])
            else:
                files.append(x)

    walk(outputs)
    return files


def _readable(path: Path) -> str | None:
    """None when ``path`` is a non-empty regular file that parses as what its suffix says."""
    try:
        st = path.stat()
    except OSError:
        return f"{path} is missing"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_size == 0:
        return f"{path} is empty"
    suffix = path.suffix.lower()
    try:
        if suffix in (".png", ".jpg", ".jpeg", ".gif", ".webp"):
            from PIL import Image

            with Image.open(path) as im:
                im.verify()
        elif suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif suffix == ".safetensors":
            with open(path, "rb") as f:
                head = f.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else -1
                if not 0 < n <= st.st_size - 8:
                    return f"{path} is not a complete safetensors file"
                header = json.loads(f.read(n))
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
                if 8 + n + end != st.st_size:  # the tensors' bytes are cut off (or followed by junk)
                    return f"{path} is not a complete safetensors file ({st.st_size:,} bytes, header says {8 + n + end:,})"
    except Exception as e:  # noqa: BLE001 - any failure to parse means "not readable"
        return f"{path} does not read back ({type(e).__name__})"
    return None


def verify_outputs(faces: Sequence[Mapping[str, Any]]) -> str | None:
    """Checks that every output file of a finished input exists, is non-empty and reads back.

    Returns:
        None when all are fine, else the first problem (a sentence).
    """
    if not faces:
        return "the record lists no face"
    for face in faces:
        files = output_files(face.get("outputs", {}))
        if not files:
            return "the record lists no output file"
        for f in files:
            problem = _readable(Path(f))
            if problem:
                return problem
    return None
