"""The registry: named weights files, found locally or downloaded, and the default set of real files.

:class:`WeightsRegistry` addresses :class:`~dhr.weights.entry.WeightsEntry` objects by name and
resolves a name to a checked local file (explicit path, ``DHR_WEIGHTS_PATH``, the cache, an
installed package, then a download). :func:`default_registry` holds the real files, read once
from ``entries.json`` (package data) on first use; the module-level functions act on it.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import resources
from pathlib import Path

from dhr.errors import ConfigError, WeightsError
from dhr.weights.download import download_entry, supply_hint
from dhr.weights.entry import (
    Location,
    VerifyResult,
    WeightsEntry,
    cache_dir,
    check_file,
    is_offline,
    record_hash,
    recorded_hash_path,
    search_path,
)

__all__ = [
    "WeightsRegistry",
    "add",
    "default_entries",
    "default_registry",
    "fetch",
    "get",
    "locate",
    "resolve",
    "verify",
]

logger = logging.getLogger(__name__)

ENTRIES_FILE = "entries.json"
"""The real entries, shipped as package data next to this module."""


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
            result = check_file(entry, candidate, source)
            if result.ok:
                if result.status == "unverified" and source != "cache":  # the cache recorded its hash when added
                    logger.warning("using %s for %s from %s without checking it: no sha256 is registered for %s; "
                                   "run `dhr weights add %s %s` to record its hash once you trust it",
                                   candidate, entry.name, source, entry.filename, entry.name, candidate)
                return Location(entry.name, candidate, source), bad
            if source == "cache":
                logger.warning("deleting bad cached weights: %s", result.message)
                candidate.unlink(missing_ok=True)
                recorded_hash_path(candidate).unlink(missing_ok=True)
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
                f"Searched: {_searched_text(entry)}\n{supply_hint(entry)}"
            )
        if bad:
            logger.warning("downloading %s although files exist locally that fail their check", entry.filename)
        return download_entry(entry, cache_dir(), progress=progress, retries=retries, timeout=timeout)

    def fetch(self, name: str, *, force: bool = False, progress: bool | None = None, retries: int = 2, timeout: float = 30.0) -> Path:
        """Ensures ``name`` is available (downloading into the cache if needed) and returns its path.

        With ``force=True`` the file is downloaded into the cache even if found elsewhere, replacing
        a cached copy.
        """
        entry = self.get(name)
        if not force:
            return self.resolve(name, progress=progress, retries=retries, timeout=timeout)
        if is_offline():
            raise WeightsError(f"cannot fetch {entry.filename!r}: DHR_OFFLINE is set.\n{supply_hint(entry)}")
        cached = cache_dir() / entry.filename
        cached.unlink(missing_ok=True)
        recorded_hash_path(cached).unlink(missing_ok=True)
        return download_entry(entry, cache_dir(), progress=progress, retries=retries, timeout=timeout)

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
                result = check_file(entry, candidate, source)
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
        result = check_file(entry, src)
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
            record_hash(dest, result.actual or "", str(src))
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




@lru_cache(maxsize=1)
def default_entries() -> tuple[WeightsEntry, ...]:
    """The registered real files, read from ``entries.json`` (package data) on first use.

    Raises:
        ConfigError: The file is missing from the installation or an entry is invalid (names the entry).
    """
    try:
        text = resources.files("dhr.weights").joinpath(ENTRIES_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise ConfigError(f"dhr.weights/{ENTRIES_FILE} is missing from this installation ({exc}); "
                          "reinstall dhr (the file is package data)") from None
    doc = json.loads(text)
    entries = []
    for raw in doc["entries"]:
        fields = dict(raw)
        fields["urls"] = tuple(fields.get("urls", ()))
        if fields.get("package") is not None:
            fields["package"] = tuple(fields["package"])
        try:
            entries.append(WeightsEntry(**fields))
        except TypeError as exc:
            raise ConfigError(f"{ENTRIES_FILE}: entry {raw.get('name')!r} has unknown or missing fields ({exc})") from None
    return tuple(entries)


_DEFAULT: WeightsRegistry | None = None


def default_registry() -> WeightsRegistry:
    """The registry of real files (:func:`default_entries`), built on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = WeightsRegistry(default_entries())
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
