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
path, size and modification time). Downloads (:mod:`dhr.weights.download`, which says why it is
not ``torch.hub``) stream into ``<file>.part``, resume an existing ``.part`` with an HTTP Range
request, check size and sha256, and move the file into place with :func:`os.replace`; a lock file
serialises concurrent downloads of the same file.

Entries whose sha256 cannot be verified carry ``sha256=None, verified=False``: they still download,
with a warning, and the hash computed on first download is recorded next to the file
(``<file>.sha256``) and checked from then on. Entries published with a torchvision-style name carry a
``sha256_prefix`` (the hex digits embedded in the file name) that is checked instead.

The package: :mod:`~dhr.weights.entry` (an entry, a location, checking a file),
:mod:`~dhr.weights.download` (the resumable client), :mod:`~dhr.weights.registry` (the registry
and the functions below) and ``entries.json`` (the real files, as data: edit it to register one).

Nothing here touches the network or the file system at import time (``entries.json`` is read on
first use of the default registry).
"""

from __future__ import annotations

from typing import Any

from dhr.fileio import sha256_file
from dhr.weights.entry import (
    KINDS,
    Kind,
    Location,
    VerifyResult,
    WeightsEntry,
    cache_dir,
    is_offline,
    search_path,
    weights_home,
)
from dhr.weights.registry import (
    WeightsRegistry,
    _package_dir,  # noqa: F401 - tests find installed packages' files with it
    add,
    default_entries,
    default_registry,
    fetch,
    get,
    locate,
    resolve,
    verify,
)

__all__ = [
    "KINDS",
    "Kind",
    "WeightsEntry",
    "VerifyResult",
    "Location",
    "WeightsRegistry",
    "DEFAULT_ENTRIES",
    "default_entries",
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


def __getattr__(name: str) -> Any:
    # DEFAULT_ENTRIES (documented) is read from entries.json on first access, not at import.
    if name == "DEFAULT_ENTRIES":
        return default_entries()
    raise AttributeError(f"module 'dhr.weights' has no attribute {name!r}")
