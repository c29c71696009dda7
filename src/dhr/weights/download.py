"""Downloads of registered weights files: resumable, checked, one process per file.

The client streams into ``<file>.part``, resumes an existing ``.part`` with an HTTP Range request
(and restarts cleanly when the server ignores or refuses it), treats a short transfer as an error
worth a retry, refuses HTML pages (login, quota or virus-scan pages served instead of the file),
decompresses bzip2 copies, checks size and sha256 (:func:`~dhr.weights.entry.check_file`) and
moves the file into place with :func:`os.replace`; an ``fcntl`` lock serialises concurrent
downloads of the same file.

Why not ``torch.hub.download_url_to_file`` (the maintained downloader we already depend on)?
Measured with torch 2.13 against the loopback server of ``tests/test_weights.py``
(``python scripts/probe_torch_hub_download.py``): when the connection closes half way, it returns
normally and leaves a file of 150,000 of 300,000 bytes under the final name (nothing compares the
received bytes with ``Content-Length``), and a second call starts again from byte 0 (it writes a
fresh ``<file>.<uuid>.partial`` each call, deletes it on error and sends no ``Range`` header); it
also sets no socket timeout and checks only a hash prefix. Resume of large files (the FFHQ
generator and encoders are 300-1,200 MB) and the checks above are what this module exists for,
so it keeps a small ``urllib`` client (``huggingface_hub`` resumes, but is not a dependency and
none of the registered files is on the Hugging Face Hub).
"""

from __future__ import annotations

import bz2
import contextlib
import logging
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.client import HTTPException
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from dhr.errors import WeightsError
from dhr.weights.entry import WeightsEntry, cache_dir, check_file, record_hash, recorded_hash_path, weights_home

__all__ = ["download_entry", "supply_hint"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_USER_AGENT = "dhr-weights/0.1 (+urllib)"


class _TransferError(Exception):
    """A network transfer failed in a way worth retrying (the .part file is kept)."""


class _UrlFailed(Exception):
    """A URL cannot deliver the file (HTTP error, bad content); move on to the next URL."""


@contextlib.contextmanager
def _lock(lock_path: Path, timeout: float) -> Iterator[bool]:
    """Exclusive advisory lock on ``lock_path``; yields False (no lock) where fcntl is unavailable."""
    try:  # lazy: fcntl exists on POSIX only
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


def _progress_bar(enabled: bool) -> Progress:
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
    result = check_file(entry, candidate)
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
        record_hash(dest, result.actual or "", url)
        logger.warning(
            "%s (%s) has no registered sha256; downloaded from %s with sha256 %s (recorded in %s). "
            "Check it against a trusted source before relying on it.",
            entry.filename, entry.name, url, result.actual, recorded_hash_path(dest),
        )
    elif result.status == "prefix-ok":
        logger.warning(
            "%s (%s): only the published sha256 prefix %s could be checked; full sha256 %s",
            entry.filename, entry.name, entry.sha256_prefix, result.actual,
        )


def download_entry(entry: WeightsEntry, dest_dir: Path, *, progress: bool | None, retries: int, timeout: float) -> Path:
    if not entry.urls:
        raise WeightsError(f"{entry.filename!r} ({entry.name}) has no registered download URL.\n{supply_hint(entry)}")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create the weights cache {dest_dir} to download {entry.filename!r} into "
                           f"({e.strerror or e}); set DHR_HOME to a writable folder (now {weights_home()})") from None
    dest = dest_dir / entry.filename
    show = sys.stderr.isatty() if progress is None else progress
    lock_dir = dest_dir / ".locks"
    with _lock(lock_dir / (entry.filename + ".lock"), timeout=max(600.0, timeout * 20)) as locked:
        if dest.is_file():  # another process may have finished while we waited for the lock
            if check_file(entry, dest).ok:
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
                        kept = f"; partial file kept for resume: {part}" if locked and part.exists() else ""
                        failures.append(f"{url}: {exc} (gave up after {attempt} attempts{kept})")
                        break
                    logger.warning("%s: %s; retrying (%d/%d)", url, exc, attempt, retries)
                except _UrlFailed as exc:
                    part.unlink(missing_ok=True)
                    failures.append(f"{url}: {exc}")
                    break
        if not locked:
            part.unlink(missing_ok=True)
    detail = "\n".join(f"  - {f}" for f in failures)
    raise WeightsError(f"could not download {entry.filename!r} ({entry.name}):\n{detail}\n{supply_hint(entry)}")


def supply_hint(entry: WeightsEntry) -> str:
    urls = "\n".join(f"    {u}" for u in entry.urls) or "    (no public URL registered; see `dhr weights list` and docs/weights.md)"
    return (
        f"Download URL(s):\n{urls}\n"
        f"Supply the file ({entry.filename}, {entry.checksum}) in one of three ways:\n"
        f"  1. run `dhr weights add {entry.name} /path/to/{entry.filename}` to check it and copy it into {cache_dir()};\n"
        f"  2. put it in a folder listed in DHR_WEIGHTS_PATH (searched recursively; separate folders with {os.pathsep!r});\n"
        f"  3. run `dhr weights fetch {entry.name}` on a machine with network access (DHR_HOME={weights_home()}) "
        f"and copy the file over (from Python: dhr.weights.resolve('{entry.name}', path=...) checks a file you have)."
    )


