"""Measures what ``torch.hub.download_url_to_file`` does with a transfer cut half way.

Why it exists: ``dhr.weights.download`` keeps its own resumable client instead of torch.hub's
downloader; this script is the measurement behind that choice. It serves a 300,000-byte file on
127.0.0.1 with the loopback server of ``tests/test_weights.py`` (mode ``truncate-once``: the first
response closes after half the body), calls torch.hub twice and prints what it left on disk and
which requests it made (path, Range header). No network beyond the loopback interface.

Usage (from the repository root)::

    PYTHONPATH=src python scripts/probe_torch_hub_download.py
"""

from __future__ import annotations

import http.server
import sys
import tempfile
import threading
from pathlib import Path

import torch.hub

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.test_weights import Route, _Handler, _payload  # noqa: E402 - after the path is set


def main() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.log = {}, []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/t.bin"
    data = _payload()
    httpd.routes["/t.bin"] = Route(data, mode="truncate-once")
    folder = Path(tempfile.mkdtemp())
    dst = folder / "t.bin"
    try:
        torch.hub.download_url_to_file(url, str(dst), progress=False)
        print(f"first call returned normally; {dst.name} has {dst.stat().st_size:,} of {len(data):,} bytes")
    except Exception as exc:  # noqa: BLE001 - report whatever torch.hub raises
        print(f"first call raised {type(exc).__name__}: {exc}")
    print("files after the first call:", sorted(p.name for p in folder.iterdir()))
    torch.hub.download_url_to_file(url, str(dst), progress=False)
    print(f"second call: {dst.stat().st_size:,} bytes; requests (path, Range): {httpd.log}")
    httpd.shutdown()


if __name__ == "__main__":
    main()
