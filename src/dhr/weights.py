"""Registry of named weights files: where to find them, where to download them, how to check them.

Every pretrained file ``dhr`` can use (generator, encoders, LPIPS parts, face detectors and parsers,
identity networks, edit directions) has a :class:`WeightsEntry` with its file name, download URLs,
sha256, size and licence. :func:`resolve` turns a name into a local path, looking in this order:

1. an explicit ``path`` (a file, or a folder searched recursively for the file name);
2. each folder of ``DHR_WEIGHTS_PATH`` (``os.pathsep``-separated, searched recursively);
3. the user cache ``$DHR_HOME/weights/`` (``DHR_HOME`` defaults to ``~/.cache/dhr``);
4. locations inside installed Python packages (the dlib models of ``face-recognition-models``);
5. a download into the user cache, unless offline (``DHR_OFFLINE=1`` or ``download=False``).

Files found in 2.-4. are checked against the registered size and sha256 (hashes are memoised per
path, size and modification time). Downloads use ``urllib`` only, stream into ``<file>.part``,
resume an existing ``.part`` with an HTTP Range request, check size and sha256, and move the file
into place with :func:`os.replace`; a lock file serialises concurrent downloads of the same file.

Entries whose sha256 cannot be verified carry ``sha256=None, verified=False``: they still download,
with a warning, and the hash computed on first download is recorded next to the file
(``<file>.sha256``) and checked from then on. Entries published with a torchvision-style name carry a
``sha256_prefix`` (the hex digits embedded in the file name) that is checked instead.

Nothing here touches the network or the file system at import time.
"""

from __future__ import annotations

import bz2
import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Literal, get_args

from dhr.errors import ConfigError, WeightsError
from dhr.fileio import sha256_file

__all__ = [
    "KINDS",
    "Kind",
    "WeightsEntry",
    "VerifyResult",
    "Location",
    "WeightsRegistry",
    "DEFAULT_ENTRIES",
    "default_registry",
    "weights_home",
    "cache_dir",
    "search_path",
    "is_offline",
    "sha256_file",
    "get",
    "locate",
    "resolve",
    "fetch",
    "verify",
    "add",
]

logger = logging.getLogger(__name__)

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
_CHUNK = 1 << 20
_USER_AGENT = "dhr-weights/0.1 (+urllib)"


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

def _recorded_hash_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_recorded_hash(path: Path) -> str | None:
    rec = _recorded_hash_file(path)
    if not rec.is_file():
        return None
    text = rec.read_text(encoding="utf-8").split()
    return text[0].lower() if text and len(text[0]) == 64 and set(text[0].lower()) <= _HEX else None


def _record_hash(path: Path, digest: str, origin: str) -> None:
    _recorded_hash_file(path).write_text(f"{digest}  {path.name}\n# recorded from {origin}\n", encoding="utf-8")


def _check(entry: WeightsEntry, path: Path, source: str | None = None) -> VerifyResult:
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
    recorded = _read_recorded_hash(path)
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


# --------------------------------------------------------------------------------------------
# downloading


class _TransferError(Exception):
    """A network transfer failed in a way worth retrying (the .part file is kept)."""


class _UrlFailed(Exception):
    """A URL cannot deliver the file (HTTP error, bad content); move on to the next URL."""


@contextlib.contextmanager
def _lock(lock_path: Path, timeout: float) -> Iterator[bool]:
    """Exclusive advisory lock on ``lock_path``; yields False (no lock) where fcntl is unavailable."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX platforms fall back to unique temp names
        yield False
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+b") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise WeightsError(
                        f"timed out after {timeout:.0f} s waiting for another process downloading into {lock_path.parent} "
                        f"(lock file {lock_path}); if no other dhr process is running, delete the lock file and retry"
                    ) from None
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def _transfer(url: str, part: Path, *, expected_total: int | None, progress: bool, timeout: float, label: str) -> None:
    """Streams ``url`` into ``part``, resuming from its current size with a Range request.

    Raises:
        _TransferError: connection problems or a short transfer (retry may resume).
        _UrlFailed: the server answered with an error status.
    """
    have = part.stat().st_size if part.exists() else 0
    if expected_total is not None and have > expected_total:
        part.unlink()
        have = 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            # Range not satisfiable: the part is complete already (or garbage); let the caller check it.
            if expected_total is not None and have == expected_total:
                return
            part.unlink()
            raise _TransferError(f"server refused to resume at byte {have} (HTTP 416); restarting") from exc
        raise _UrlFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, socket.timeout, ConnectionError, HTTPException, OSError) as exc:
        raise _TransferError(f"cannot connect: {exc}") from exc
    with response:
        status = getattr(response, "status", 200)
        if response.headers.get_content_type() == "text/html":
            # e.g. a login, quota or virus-scan page instead of the file; never store it as weights
            raise _UrlFailed("the server returned an HTML page instead of the file (download it in a browser and use `dhr weights add`)")
        if have and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                part.unlink()
                raise _TransferError(f"server resumed at the wrong offset ({content_range!r}); restarting")
            mode = "ab"
        else:
            if have:
                logger.info("server ignored the Range request for %s; downloading from the start", url)
            have = 0
            mode = "wb"
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None and length.isdigit() else None
        total = have + remaining if remaining is not None else expected_total
        got = 0
        with _progress_bar(progress) as bar, part.open(mode) as out:
            task = bar.add_task(label, total=total, completed=have)
            try:
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    bar.advance(task, len(block))
            except (socket.timeout, ConnectionError, HTTPException, OSError) as exc:
                raise _TransferError(f"transfer interrupted after {have + got} bytes: {exc}") from exc
        if remaining is not None and got < remaining:
            raise _TransferError(f"connection closed after {have + got} of {have + remaining} bytes")


def _finish(entry: WeightsEntry, part: Path, dest: Path, url: str) -> None:
    """Decompresses if needed, checks size and hash, and moves the file into place."""
    candidate = part
    if entry.compression == "bz2":
        candidate = part.with_name(part.name + ".unpacked")
        try:
            with bz2.open(part, "rb") as src, candidate.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
        except (OSError, EOFError, ValueError) as exc:
            candidate.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
            raise _UrlFailed(f"not a valid bzip2 file ({exc}); the download was deleted") from exc
    result = _check(entry, candidate)
    candidate_size = candidate.stat().st_size
    if result.status == "mismatch":
        candidate.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
        size_note = "" if entry.size is None else f" (size {candidate_size} bytes, expected {entry.size})"
        raise _UrlFailed(
            f"checksum mismatch for {entry.filename!r}: expected {result.expected}, got {result.actual}{size_note}; "
            "the bad download was deleted"
        )
    os.replace(candidate, dest)
    if candidate is not part:
        part.unlink(missing_ok=True)
    if result.status == "unverified":
        _record_hash(dest, result.actual or "", url)
        logger.warning(
            "%s (%s) has no registered sha256; downloaded from %s with sha256 %s (recorded in %s). "
            "Check it against a trusted source before relying on it.",
            entry.filename, entry.name, url, result.actual, _recorded_hash_file(dest),
        )
    elif result.status == "prefix-ok":
        logger.warning(
            "%s (%s): only the published sha256 prefix %s could be checked; full sha256 %s",
            entry.filename, entry.name, entry.sha256_prefix, result.actual,
        )


def _download(entry: WeightsEntry, dest_dir: Path, *, progress: bool | None, retries: int, timeout: float) -> Path:
    if not entry.urls:
        raise WeightsError(f"{entry.filename!r} ({entry.name}) has no registered download URL.\n{_supply_hint(entry)}")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / entry.filename
    show = sys.stderr.isatty() if progress is None else progress
    lock_dir = dest_dir / ".locks"
    with _lock(lock_dir / (entry.filename + ".lock"), timeout=max(600.0, timeout * 20)) as locked:
        if dest.is_file():  # another process may have finished while we waited for the lock
            if _check(entry, dest).ok:
                return dest
            dest.unlink()
        part = dest.with_name(entry.filename + ".part") if locked else dest.with_name(f"{entry.filename}.{uuid.uuid4().hex}.part")
        failures: list[str] = []
        for url in entry.urls:
            attempt = 0
            while True:
                try:
                    logger.info("downloading %s from %s", entry.filename, url)
                    _transfer(url, part, expected_total=None if entry.compression else entry.size,
                              progress=show, timeout=timeout, label=entry.filename)
                    _finish(entry, part, dest, url)
                    return dest
                except _TransferError as exc:
                    attempt += 1
                    if attempt > retries:
                        failures.append(f"{url}: {exc} (gave up after {attempt} attempts; partial file kept for resume: {part})")
                        break
                    logger.warning("%s: %s; retrying (%d/%d)", url, exc, attempt, retries)
                except _UrlFailed as exc:
                    part.unlink(missing_ok=True)
                    failures.append(f"{url}: {exc}")
                    break
        if not locked:
            part.unlink(missing_ok=True)
    detail = "\n".join(f"  - {f}" for f in failures)
    raise WeightsError(f"could not download {entry.filename!r} ({entry.name}):\n{detail}\n{_supply_hint(entry)}")


def _supply_hint(entry: WeightsEntry) -> str:
    urls = "\n".join(f"    {u}" for u in entry.urls) or "    (no public URL registered; see `dhr weights list` and docs/weights.md)"
    return (
        f"Download URL(s):\n{urls}\n"
        f"Supply the file ({entry.filename}, {entry.checksum}) in one of three ways:\n"
        f"  1. pass its path explicitly (--weights /path/to/{entry.filename}, or path=... in the API);\n"
        f"  2. put it in a folder listed in DHR_WEIGHTS_PATH (searched recursively; separate folders with {os.pathsep!r});\n"
        f"  3. run `dhr weights add {entry.name} /path/to/{entry.filename}` to check it and copy it into {cache_dir()}, "
        f"or `dhr weights fetch {entry.name}` with network access (DHR_HOME={weights_home()})."
    )


# --------------------------------------------------------------------------------------------
# the registry


class WeightsRegistry:
    """A set of :class:`WeightsEntry` addressed by name.

    Args:
        entries: the entries; names must be unique. Tests build a registry of their own entries
            (e.g. pointing at a local HTTP server); :func:`default_registry` holds the real files.
    """

    def __init__(self, entries: Iterable[WeightsEntry]) -> None:
        self._entries: dict[str, WeightsEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise ConfigError(f"duplicate weights entry name {entry.name!r}")
            self._entries[entry.name] = entry

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def get(self, name: str) -> WeightsEntry:
        """The entry called ``name``.

        Raises:
            WeightsError: unknown name (the message lists close matches and all names).
        """
        try:
            return self._entries[name]
        except KeyError:
            import difflib

            close = difflib.get_close_matches(name, self._entries, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise WeightsError(
                f"unknown weights name {name!r}.{hint} Known names: {', '.join(self._entries)}"
            ) from None

    # -- finding ----------------------------------------------------------------------------

    def _candidates(self, entry: WeightsEntry) -> Iterator[tuple[Path, str]]:
        for folder in search_path():
            if folder.is_dir():
                direct = folder / entry.filename
                if direct.is_file():
                    yield direct, "DHR_WEIGHTS_PATH"
                for found in sorted(folder.rglob(entry.filename)):
                    if found != direct and found.is_file():
                        yield found, "DHR_WEIGHTS_PATH"
            else:
                logger.debug("DHR_WEIGHTS_PATH entry %s is not a folder; skipped", folder)
        cached = cache_dir() / entry.filename
        if cached.is_file():
            yield cached, "cache"
        if entry.package is not None:
            pkg_dir = _package_dir(entry.package[0])
            if pkg_dir is not None:
                shipped = pkg_dir / entry.package[1] / entry.filename
                if shipped.is_file():
                    yield shipped, "package"

    def _explicit(self, entry: WeightsEntry, path: str | Path) -> Path:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if p.is_dir():
            found = sorted(p.rglob(entry.filename))
            if found:
                return found[0]
            raise WeightsError(f"{entry.filename!r} ({entry.name}) not found in the folder {p} given explicitly (searched recursively)")
        raise WeightsError(f"weights file for {entry.name!r} given explicitly does not exist: {p}")

    def _locate(self, entry: WeightsEntry, path: str | Path | None, check: bool) -> tuple[Location | None, list[VerifyResult]]:
        if path is not None:
            return Location(entry.name, self._explicit(entry, path), "explicit"), []
        bad: list[VerifyResult] = []
        for candidate, source in self._candidates(entry):
            if not check:
                return Location(entry.name, candidate, source), bad
            result = _check(entry, candidate, source)
            if result.ok:
                return Location(entry.name, candidate, source), bad
            if source == "cache":
                logger.warning("deleting bad cached weights: %s", result.message)
                candidate.unlink(missing_ok=True)
                _recorded_hash_file(candidate).unlink(missing_ok=True)
            else:
                logger.warning("ignoring bad weights file: %s", result.message)
            bad.append(result)
        return None, bad

    def locate(self, name: str, path: str | Path | None = None, *, check: bool = True) -> Location | None:
        """Finds a local file for ``name`` without downloading.

        Args:
            name: registry key.
            path: explicit file or folder; returned as given (not hash-checked: the caller chose it).
            check: verify size/sha256 of candidates and skip bad ones (a bad cached file is deleted).
                With ``check=False`` the first existing candidate is returned unchecked.

        Returns:
            The first good :class:`Location`, or ``None`` if there is none.

        Raises:
            WeightsError: unknown name, or the explicit path does not exist.
        """
        return self._locate(self.get(name), path, check)[0]

    def resolve(
        self,
        name: str,
        path: str | Path | None = None,
        *,
        download: bool = True,
        progress: bool | None = None,
        retries: int = 2,
        timeout: float = 30.0,
    ) -> Path:
        """Local path of the weights file ``name``, downloading it into the cache if needed.

        Args:
            name: registry key, e.g. ``"lpips-alex"``.
            path: explicit file (or folder to search); wins over everything else.
            download: allow downloading; the ``DHR_OFFLINE=1`` environment variable also forbids it.
            progress: show a progress bar; ``None`` shows one only when stderr is a terminal.
            retries: extra attempts per URL after an interrupted transfer (each resumes the ``.part``).
            timeout: socket timeout in seconds.

        Returns:
            Path to a file whose size and sha256 match the entry (or the explicit path).

        Raises:
            WeightsError: unknown name, file missing while offline, every URL failed, checksum mismatch,
                or only bad files were found. Messages name the file, URLs and the ways to supply it.
        """
        entry = self.get(name)
        found, bad = self._locate(entry, path, check=True)
        if found is not None:
            logger.debug("weights %s -> %s (%s)", name, found.path, found.source)
            return found.path
        offline = is_offline() or not download
        if offline:
            reason = "DHR_OFFLINE is set" if is_offline() else "download=False"
            bad_text = "".join(f"\n  bad file skipped: {b.message}" for b in bad)
            raise WeightsError(
                f"weights file {entry.filename!r} ({entry.name}, {entry.kind}) is not available locally "
                f"and downloading is disabled ({reason}).{bad_text}\n"
                f"Searched: {_searched_text(entry)}\n{_supply_hint(entry)}"
            )
        if bad:
            logger.warning("downloading %s although files exist locally that fail their check", entry.filename)
        return _download(entry, cache_dir(), progress=progress, retries=retries, timeout=timeout)

    def fetch(self, name: str, *, force: bool = False, progress: bool | None = None, retries: int = 2, timeout: float = 30.0) -> Path:
        """Ensures ``name`` is available (downloading into the cache if needed) and returns its path.

        With ``force=True`` the file is downloaded into the cache even if found elsewhere, replacing
        a cached copy.
        """
        entry = self.get(name)
        if not force:
            return self.resolve(name, progress=progress, retries=retries, timeout=timeout)
        if is_offline():
            raise WeightsError(f"cannot fetch {entry.filename!r}: DHR_OFFLINE is set.\n{_supply_hint(entry)}")
        cached = cache_dir() / entry.filename
        cached.unlink(missing_ok=True)
        _recorded_hash_file(cached).unlink(missing_ok=True)
        return _download(entry, cache_dir(), progress=progress, retries=retries, timeout=timeout)

    def verify(self, name: str | None = None) -> list[VerifyResult]:
        """Checks local files (never downloads).

        Args:
            name: one registry key, or ``None`` for every entry.

        Returns:
            One :class:`VerifyResult` per entry; for an entry with several local copies, the first
            good one (or the first bad one when none is good).
        """
        entries = [self.get(name)] if name is not None else list(self)
        results: list[VerifyResult] = []
        for entry in entries:
            first_bad: VerifyResult | None = None
            chosen: VerifyResult | None = None
            for candidate, source in self._candidates(entry):
                result = _check(entry, candidate, source)
                if result.ok:
                    chosen = result
                    break
                first_bad = first_bad or result
            if chosen is None:
                chosen = first_bad or VerifyResult(
                    entry.name, "missing", None, None, entry.sha256 or entry.sha256_prefix, None,
                    f"{entry.filename} not found (searched {_searched_text(entry)})",
                )
            results.append(chosen)
        return results

    def add(self, name: str, file: str | Path) -> Path:
        """Checks ``file`` against the entry and copies it into the cache (``$DHR_HOME/weights``).

        Returns:
            The cached path.

        Raises:
            WeightsError: ``file`` missing, or its size/sha256 differ (nothing is copied).
        """
        entry = self.get(name)
        src = Path(file).expanduser()
        if not src.is_file():
            raise WeightsError(f"cannot add {name!r}: {src} is not a file")
        result = _check(entry, src)
        if result.status == "mismatch":
            raise WeightsError(
                f"cannot add {name!r}: {src} does not match {entry.filename!r}: expected {result.expected}, "
                f"got {result.actual} ({result.message}); nothing was copied"
            )
        dest_dir = cache_dir()
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / entry.filename
        if dest.exists() and dest.resolve() == src.resolve():
            return dest
        tmp = dest.with_name(f"{entry.filename}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        if result.status == "unverified":
            _record_hash(dest, result.actual or "", str(src))
            logger.warning("%s has no registered sha256; added with computed sha256 %s", entry.filename, result.actual)
        return dest


def _searched_text(entry: WeightsEntry) -> str:
    places = [f"DHR_WEIGHTS_PATH={os.environ.get('DHR_WEIGHTS_PATH', '') or '(unset)'}", f"cache {cache_dir()}"]
    if entry.package is not None:
        places.append(f"package {entry.package[0]}/{entry.package[1]}")
    return "; ".join(places)


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --------------------------------------------------------------------------------------------
# the real entries

_GANINVERTER = "https://github.com/caopulan/GANInverter/releases/download/v0.1/"
_LPIPS_RAW = "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/"
_E4E_RAW = "https://raw.githubusercontent.com/omertov/encoder4editing/main/editings/"
_DLIB = "http://dlib.net/files/"
_NC = "non-commercial research only"

DEFAULT_ENTRIES: tuple[WeightsEntry, ...] = (
    # -- generator and encoders (GANInverter release v0.1, reference doc section 5.4) ---------
    WeightsEntry(
        "stylegan2-ffhq-config-f", "stylegan2-ffhq-config-f.pt", (_GANINVERTER + "stylegan2-ffhq-config-f.pt",),
        None, None, f"NVIDIA Source Code License-NC ({_NC}); FFHQ images CC BY-NC-SA 4.0",
        "Official StyleGAN2 FFHQ 1024 config-f generator in rosinality layout (dict with g_ema, latent_avg); "
        "convert with dhr.models.convert.rosinality_to_native.",
        "generator", verified=False,
    ),
    WeightsEntry(
        "e4e-ffhq", "e4e_ffhq_r50_wp_official.pt", (_GANINVERTER + "e4e_ffhq_r50_wp_official.pt",),
        None, None, f"MIT (encoder4editing code); contains the StyleGAN2 FFHQ decoder: {_NC}",
        "Official e4e encoder (IR-SE50 body, W+) for FFHQ, repackaged by GANInverter (state_dict, latent_avg, opts).",
        "encoder", verified=False,
    ),
    WeightsEntry(
        "psp-ffhq", "psp_ffhq_r50_wp_official.pt", (_GANINVERTER + "psp_ffhq_r50_wp_official.pt",),
        None, None, f"MIT (pixel2style2pixel code); contains the StyleGAN2 FFHQ decoder: {_NC}",
        "Official pSp encoder (IR-SE50 body, W+) for FFHQ, repackaged by GANInverter.",
        "encoder", verified=False,
    ),
    # -- identity networks ------------------------------------------------------------------------
    WeightsEntry(
        "ir-se50", "model_ir_se50.pth", (_GANINVERTER + "model_ir_se50.pth",),
        None, None, f"MIT (TreB1eN/InsightFace_Pytorch code); trained on MS-Celeb-1M: {_NC}",
        "IR-SE50 ArcFace backbone (112 px) used for the identity loss and to initialise e4e/pSp encoders.",
        "identity", verified=False,
    ),
    WeightsEntry(
        "curricularface", "CurricularFace_Backbone.pth", (),
        None, None, "licence not stated with the weights (HuangYG123/CurricularFace); treat as research only",
        "CurricularFace IR-101 backbone, identity-similarity metric only. No stable public URL is known "
        "(the authors distribute it via cloud drives): supply it yourself.",
        "identity", verified=False,
    ),
    # -- face parsing / detection -----------------------------------------------------------------
    WeightsEntry(
        "bisenet-79999", "79999_iter.pth",
        ("https://drive.usercontent.google.com/download?id=154JgKpzCPW82qINcVieuPH3fZ2e0P812&export=download&confirm=t",),
        None, None, f"MIT (zllrunning/face-parsing.PyTorch code); trained on CelebAMask-HQ: {_NC}",
        "BiSeNet face parser (19 CelebAMask-HQ labels) from zllrunning/face-parsing.PyTorch, author's Google Drive "
        "file; used by the SAM baseline only.",
        "face-parser", verified=False,
    ),
    WeightsEntry(
        "farl-celebm-448", "face_parsing.farl.celebm.main_ema_181500_jit.pt",
        ("https://github.com/FacePerceiver/facer/releases/download/models-v1/face_parsing.farl.celebm.main_ema_181500_jit.pt",),
        None, None, f"MIT (FacePerceiver/facer); fine-tuned on CelebAMask-HQ: {_NC}",
        "FaRL face parser fine-tuned on CelebAMask-HQ (448 px, 19 classes), TorchScript; DHR's parsing mask.",
        "face-parser", verified=False,
    ),
    WeightsEntry(
        "retinaface-mobilenet0.25", "mobilenet0.25_Final.pth",
        ("https://github.com/elliottzheng/face-detection/releases/download/0.0.1/mobilenet0.25_Final.pth",),
        None, None, "MIT (biubug6/Pytorch_Retinaface); trained on WIDER FACE (research use)",
        "RetinaFace detector with a MobileNet-0.25 backbone, used by facer before FaRL parsing.",
        "face-detector", verified=False,
    ),
    # -- dlib models (shipped in the pip package face-recognition-models 0.3.0) --------------------
    WeightsEntry(
        "dlib-landmarks-68", "shape_predictor_68_face_landmarks.dat", (_DLIB + "shape_predictor_68_face_landmarks.dat.bz2",),
        "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f", 99693937,
        f"released into the public domain by Davis King, but trained on iBUG 300-W whose licence excludes commercial use: {_NC}",
        "dlib 68-point face landmark shape predictor (FFHQ alignment). Hash from face-recognition-models 0.3.0; "
        "dlib.net serves it bzip2-compressed.",
        "face-landmarks", compression="bz2", package=("face_recognition_models", "models"),
    ),
    WeightsEntry(
        "dlib-landmarks-5", "shape_predictor_5_face_landmarks.dat", (_DLIB + "shape_predictor_5_face_landmarks.dat.bz2",),
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", 9150489,
        "public domain (Davis King; images annotated by him)",
        "dlib 5-point face landmark shape predictor. Hash from face-recognition-models 0.3.0.",
        "face-landmarks", compression="bz2", package=("face_recognition_models", "models"),
    ),
    WeightsEntry(
        "dlib-mmod", "mmod_human_face_detector.dat", (_DLIB + "mmod_human_face_detector.dat.bz2",),
        "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6", 729940,
        "public domain (Davis King; publicly available images annotated by him)",
        "dlib CNN (MMOD) face detector. Hash from face-recognition-models 0.3.0.",
        "face-detector", compression="bz2", package=("face_recognition_models", "models"),
    ),
    WeightsEntry(
        "dlib-resnet-v1", "dlib_face_recognition_resnet_model_v1.dat", (_DLIB + "dlib_face_recognition_resnet_model_v1.dat.bz2",),
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", 22466066,
        "public domain (Davis King); training data under Creative Commons licences",
        "dlib ResNet face descriptor (128-D). Hash from face-recognition-models 0.3.0.",
        "identity", compression="bz2", package=("face_recognition_models", "models"),
    ),
    # -- LPIPS ------------------------------------------------------------------------------------
    WeightsEntry(
        "lpips-alex", "alex.pth", (_LPIPS_RAW + "alex.pth",),
        "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", 6009,
        "BSD-2-Clause (richzhang/PerceptualSimilarity)",
        "LPIPS v0.1 linear layers for AlexNet (lin0..4.model.1.weight).", "lpips-linear",
    ),
    WeightsEntry(
        "lpips-vgg", "vgg.pth", (_LPIPS_RAW + "vgg.pth",),
        "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", 7289,
        "BSD-2-Clause (richzhang/PerceptualSimilarity)",
        "LPIPS v0.1 linear layers for VGG16 (lin0..4.model.1.weight).", "lpips-linear",
    ),
    WeightsEntry(
        "lpips-squeeze", "squeeze.pth", (_LPIPS_RAW + "squeeze.pth",),
        "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76", 10811,
        "BSD-2-Clause (richzhang/PerceptualSimilarity)",
        "LPIPS v0.1 linear layers for SqueezeNet-1.1 (lin0..6.model.1.weight).", "lpips-linear",
    ),
    WeightsEntry(
        "squeezenet1_1", "squeezenet1_1_features.safetensors", (),
        "f5dee06b109843494213e100e80d6381b9081b8bca219cfd053cb9b355dec663", 2894704,
        "BSD-3-Clause (torchvision ImageNet weights); SqueezeNet architecture BSD-2-Clause; "
        "ONNX source BSD-2-Clause-Patent (lusoris/vmaf)",
        "SqueezeNet-1.1 `features.*` (torchvision key names, float32) extracted bit-identically from the "
        "backbone initialisers of lpips_sq.onnx (lusoris/vmaf, exported from lpips.LPIPS(net='squeeze')). "
        "Not a torchvision download: the full torchvision model is "
        "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth (not compared). No URL serves this file.",
        "lpips-backbone",
    ),
    WeightsEntry(
        "alexnet", "alexnet-owt-7be5be79.pth", ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
        None, None, "BSD-3-Clause (torchvision); trained on ImageNet",
        "torchvision AlexNet ImageNet weights (LPIPS-alex backbone; only features.* are used). The file name "
        "carries the sha256 prefix 7be5be79, which is what is checked.",
        "lpips-backbone", verified=False, sha256_prefix="7be5be79",
    ),
    WeightsEntry(
        "vgg16", "vgg16-397923af.pth", ("https://download.pytorch.org/models/vgg16-397923af.pth",),
        None, None, "BSD-3-Clause (torchvision); trained on ImageNet",
        "torchvision VGG16 ImageNet weights (LPIPS-vgg backbone; only features.* are used). The file name "
        "carries the sha256 prefix 397923af, which is what is checked.",
        "lpips-backbone", verified=False, sha256_prefix="397923af",
    ),
    # -- edit directions for the FFHQ StyleGAN2 (encoder4editing, MIT) ------------------------------
    WeightsEntry(
        "direction-age", "age.pt", (_E4E_RAW + "interfacegan_directions/age.pt",),
        "50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0", 2808, "MIT (omertov/encoder4editing)",
        "InterFaceGAN age direction in W, tensor [1, 512] float32, unit norm; for stylegan2-ffhq-config-f.",
        "directions",
    ),
    WeightsEntry(
        "direction-smile", "smile.pt", (_E4E_RAW + "interfacegan_directions/smile.pt",),
        "817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653", 2808, "MIT (omertov/encoder4editing)",
        "InterFaceGAN smile direction in W, tensor [1, 512] float32, unit norm; for stylegan2-ffhq-config-f.",
        "directions",
    ),
    WeightsEntry(
        "direction-pose", "pose.pt", (_E4E_RAW + "interfacegan_directions/pose.pt",),
        "736e0eacc8488fa0b020a2e7bd256b957284c364191dfea693705e5d06d43e7d", 37624, "MIT (omertov/encoder4editing)",
        "InterFaceGAN pose direction, tensor [1, 18, 512] (identical rows), saved from CUDA: load with "
        "map_location='cpu'; for stylegan2-ffhq-config-f.",
        "directions",
    ),
    WeightsEntry(
        "ganspace-ffhq-pca", "ffhq_pca.pt", (_E4E_RAW + "ganspace_pca/ffhq_pca.pt",),
        "4d7f9df1c96180d9026b9cb8d04753579fbf385f321a9d0e263641601c5e5d36", 167562, "MIT (omertov/encoder4editing)",
        "GANSpace PCA of W for the FFHQ StyleGAN2: dict with mean, comp, std; edits are (component, first "
        "layer, last layer exclusive, strength).",
        "directions",
    ),
)

_DEFAULT: WeightsRegistry | None = None


def default_registry() -> WeightsRegistry:
    """The registry of real files (:data:`DEFAULT_ENTRIES`), built on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = WeightsRegistry(DEFAULT_ENTRIES)
    return _DEFAULT


def _reg(registry: WeightsRegistry | None) -> WeightsRegistry:
    return registry if registry is not None else default_registry()


def get(name: str, *, registry: WeightsRegistry | None = None) -> WeightsEntry:
    """The :class:`WeightsEntry` called ``name`` (see :meth:`WeightsRegistry.get`)."""
    return _reg(registry).get(name)


def locate(name: str, path: str | Path | None = None, *, check: bool = True, registry: WeightsRegistry | None = None) -> Location | None:
    """Local file for ``name`` without downloading (see :meth:`WeightsRegistry.locate`)."""
    return _reg(registry).locate(name, path, check=check)


def resolve(
    name: str,
    path: str | Path | None = None,
    *,
    download: bool = True,
    progress: bool | None = None,
    retries: int = 2,
    timeout: float = 30.0,
    registry: WeightsRegistry | None = None,
) -> Path:
    """Local path of the weights file ``name`` (see :meth:`WeightsRegistry.resolve`).

    Example:
        >>> from dhr import weights
        >>> weights.resolve("lpips-alex")  # doctest: +SKIP
        PosixPath('/home/me/.cache/dhr/weights/alex.pth')
    """
    return _reg(registry).resolve(name, path, download=download, progress=progress, retries=retries, timeout=timeout)


def fetch(name: str, *, force: bool = False, progress: bool | None = None, registry: WeightsRegistry | None = None) -> Path:
    """Downloads ``name`` into the cache if it is not available (see :meth:`WeightsRegistry.fetch`)."""
    return _reg(registry).fetch(name, force=force, progress=progress)


def verify(name: str | None = None, *, registry: WeightsRegistry | None = None) -> list[VerifyResult]:
    """Checks local files of one or all entries (see :meth:`WeightsRegistry.verify`)."""
    return _reg(registry).verify(name)


def add(name: str, file: str | Path, *, registry: WeightsRegistry | None = None) -> Path:
    """Checks ``file`` and copies it into the cache (see :meth:`WeightsRegistry.add`)."""
    return _reg(registry).add(name, file)
