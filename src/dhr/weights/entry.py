"""The pieces of the weights registry: an entry, where its file was found, and checking a file.

:class:`WeightsEntry` is one registered file (the real ones are ``entries.json`` beside this module);
:func:`check_file` compares a local file with an entry (size, then the full sha256, the published
prefix, or the hash recorded next to the file on first download). The folders searched are read
from the environment on every call (``DHR_WEIGHTS_PATH``, ``DHR_HOME``, ``DHR_OFFLINE``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from dhr.errors import ConfigError
from dhr.fileio import sha256_file

__all__ = [
    "KINDS",
    "Kind",
    "Location",
    "VerifyResult",
    "WeightsEntry",
    "cache_dir",
    "check_file",
    "is_offline",
    "read_recorded_hash",
    "record_hash",
    "recorded_hash_path",
    "search_path",
    "weights_home",
]

Kind = Literal[
    "generator",
    "encoder",
    "lpips-backbone",
    "lpips-linear",
    "face-detector",
    "face-landmarks",
    "face-parser",
    "identity",
    "directions",
]
KINDS: tuple[str, ...] = get_args(Kind)

_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class WeightsEntry:
    """One registered weights file.

    Attributes:
        name: registry key, e.g. ``"lpips-alex"``.
        filename: file name on disk (also what ``DHR_WEIGHTS_PATH`` folders are searched for).
        urls: download URLs, tried in order; the first that delivers a correct file is used. May be
            empty when no stable public URL is known (the file must then be supplied by the user).
        sha256: full lowercase hex sha256 of the file, or ``None`` when it could not be verified.
        size: file size in bytes, or ``None`` when unknown.
        licence: licence of the file (and restrictions inherited from its training data).
        description: what the file is and where it comes from (provenance).
        kind: one of :data:`KINDS`.
        verified: ``True`` exactly when ``sha256`` is known; must be given explicitly as ``False``
            together with ``sha256=None``.
        sha256_prefix: leading hex digits of the sha256 known from the published file name
            (torchvision convention); checked when ``sha256`` is ``None``.
        compression: ``"bz2"`` when the URLs serve a bzip2-compressed copy; ``sha256``/``size``
            always describe the decompressed file.
        package: ``(import name, sub-folder)`` of an installed Python package that ships the file.
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    licence: str
    description: str
    kind: Kind
    verified: bool = True
    sha256_prefix: str | None = None
    compression: Literal["bz2"] | None = None
    package: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "urls", tuple(self.urls))
        where = f"weights entry {self.name!r}"
        if not self.name or not self.filename or "/" in self.filename or "\\" in self.filename:
            raise ConfigError(f"{where}: name and filename must be non-empty and filename a bare file name, got {self.filename!r}")
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.sha256 is not None and (len(self.sha256) != 64 or not set(self.sha256) <= _HEX):
            raise ConfigError(f"{where}: sha256 must be 64 lowercase hex digits or None, got {self.sha256!r}")
        if self.sha256_prefix is not None and (len(self.sha256_prefix) < 6 or not set(self.sha256_prefix) <= _HEX):
            raise ConfigError(f"{where}: sha256_prefix must be at least 6 lowercase hex digits, got {self.sha256_prefix!r}")
        if self.verified != (self.sha256 is not None):
            raise ConfigError(
                f"{where}: verified={self.verified} contradicts sha256={self.sha256!r}; "
                "use verified=True with a full sha256, or sha256=None with verified=False"
            )
        if self.size is not None and self.size < 0:
            raise ConfigError(f"{where}: size must be >= 0 bytes, got {self.size}")
        if self.compression not in (None, "bz2"):
            raise ConfigError(f"{where}: compression must be None or 'bz2', got {self.compression!r}")
        for url in self.urls:
            if not url.startswith(("https://", "http://")):
                raise ConfigError(f"{where}: URL {url!r} must start with http:// or https://")

    @property
    def checksum(self) -> str:
        """Human-readable statement of what is checked (``sha256 <hex>``, a prefix, or nothing)."""
        if self.sha256 is not None:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix is not None:
            return f"sha256 prefix {self.sha256_prefix} (full hash unknown)"
        return "no known sha256 (unverified)"


@dataclass(frozen=True)
class Location:
    """A file found for an entry without downloading: ``path`` and where it was found.

    ``source`` is one of ``"explicit"``, ``"DHR_WEIGHTS_PATH"``, ``"cache"``, ``"package"``.
    """

    name: str
    path: Path
    source: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of checking one entry's local file.

    Attributes:
        name: registry key.
        status: ``"ok"`` (full sha256 matches), ``"prefix-ok"`` (only the known prefix matches),
            ``"unverified"`` (no reference hash; ``actual`` is the computed one), ``"mismatch"``
            (size or sha256 differ) or ``"missing"`` (no local file).
        path: the file checked, or ``None`` when missing.
        source: where the file was found (see :class:`Location`), or ``None``.
        expected: the reference hash (full, prefix, or recorded on first download), if any.
        actual: the computed sha256, if the file was hashed.
        message: one-line explanation.
    """

    name: str
    status: Literal["ok", "prefix-ok", "unverified", "mismatch", "missing"]
    path: Path | None = None
    source: str | None = None
    expected: str | None = None
    actual: str | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when a file is present and nothing contradicts it."""
        return self.status in ("ok", "prefix-ok", "unverified")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dictionary (paths as strings)."""
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.ok,
            "path": None if self.path is None else str(self.path),
            "source": self.source,
            "expected": self.expected,
            "actual": self.actual,
            "message": self.message,
        }


# --------------------------------------------------------------------------------------------
# environment


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def is_offline() -> bool:
    """True when ``DHR_OFFLINE`` is set to 1/true/yes/on."""
    return _truthy(os.environ.get("DHR_OFFLINE"))


def weights_home() -> Path:
    """``$DHR_HOME`` (default ``~/.cache/dhr``), expanded; not created."""
    raw = os.environ.get("DHR_HOME")
    return Path(raw).expanduser() if raw else Path("~/.cache/dhr").expanduser()


def cache_dir() -> Path:
    """Folder where downloaded and added weights live: ``$DHR_HOME/weights``; not created."""
    return weights_home() / "weights"


def search_path() -> list[Path]:
    """Folders listed in ``DHR_WEIGHTS_PATH`` (``os.pathsep``-separated, empty items skipped)."""
    raw = os.environ.get("DHR_WEIGHTS_PATH", "")
    return [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]


# --------------------------------------------------------------------------------------------
# hashing and checking

def recorded_hash_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_recorded_hash(path: Path) -> str | None:
    rec = recorded_hash_path(path)
    if not rec.is_file():
        return None
    text = rec.read_text(encoding="utf-8").split()
    return text[0].lower() if text and len(text[0]) == 64 and set(text[0].lower()) <= _HEX else None


def record_hash(path: Path, digest: str, origin: str) -> None:
    recorded_hash_path(path).write_text(f"{digest}  {path.name}\n# recorded from {origin}\n", encoding="utf-8")


def check_file(entry: WeightsEntry, path: Path, source: str | None = None) -> VerifyResult:
    """Checks one file against an entry (size first, then the hash)."""
    size = path.stat().st_size
    actual = sha256_file(path, memo=True)
    if entry.size is not None and size != entry.size:
        return VerifyResult(
            entry.name, "mismatch", path, source, entry.sha256 or entry.sha256_prefix, actual,
            f"{path} has {size} bytes, expected {entry.size} for {entry.filename!r} (sha256 {actual})",
        )
    if entry.sha256 is not None:
        if actual == entry.sha256:
            return VerifyResult(entry.name, "ok", path, source, entry.sha256, actual, "sha256 matches")
        return VerifyResult(
            entry.name, "mismatch", path, source, entry.sha256, actual,
            f"{path}: sha256 {actual}, expected {entry.sha256}",
        )
    if entry.sha256_prefix is not None:
        if actual.startswith(entry.sha256_prefix):
            return VerifyResult(
                entry.name, "prefix-ok", path, source, entry.sha256_prefix, actual,
                f"sha256 starts with the published prefix {entry.sha256_prefix} (full hash not registered)",
            )
        return VerifyResult(
            entry.name, "mismatch", path, source, entry.sha256_prefix, actual,
            f"{path}: sha256 {actual} does not start with the published prefix {entry.sha256_prefix}",
        )
    recorded = read_recorded_hash(path)
    if recorded is not None and recorded != actual:
        return VerifyResult(
            entry.name, "mismatch", path, source, recorded, actual,
            f"{path}: sha256 {actual} differs from the hash {recorded} recorded when it was first downloaded",
        )
    note = " (matches the hash recorded on first download)" if recorded else ""
    return VerifyResult(
        entry.name, "unverified", path, source, recorded, actual,
        f"no registered sha256; computed {actual}{note}",
    )
