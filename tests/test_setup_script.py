"""scripts/setup.sh chooses the torch build: the CPU wheel index without an NVIDIA GPU, the default
index when that index does not answer, the default (CUDA) build with a GPU. Checked with
``--torch-plan``, which prints the choice and installs nothing."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"

if shutil.which("bash") is None:
    pytest.skip("needs bash", allow_module_level=True)


def _plan(tmp_path: Path, gpu_tool: bool | None, index: str, proc: Path | None = None) -> str:
    """Runs ``setup.sh --torch-plan`` with a stand-in ``nvidia-smi`` (True: lists a GPU, False: fails,
    None: none on PATH ahead of the system's)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    if gpu_tool is not None:
        tool.write_text("#!/bin/sh\n" + ("echo 'GPU 0: Fake (UUID: x)'\nexit 0\n" if gpu_tool else "exit 9\n"))
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "DHR_TORCH_CPU_INDEX": index, "DHR_SETUP_PROBE_TIMEOUT": "3",
           "DHR_NVIDIA_PROC": str(proc or tmp_path / "no-such-driver")}
    env.pop("DHR_TORCH_INDEX", None)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), "--torch-plan"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 20
    return r.stdout.strip()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_gpu_and_unreachable_index_falls_back_to_default(tmp_path):
    out = _plan(tmp_path, False, f"http://127.0.0.1:{_closed_port()}/whl/cpu")
    assert out.startswith("setup: torch index: default:") and "did not answer" in out and "no NVIDIA GPU" in out


def test_no_gpu_and_reachable_index_takes_the_cpu_build(tmp_path):
    root = tmp_path / "www"
    (root / "whl" / "cpu" / "torch").mkdir(parents=True)
    (root / "whl" / "cpu" / "torch" / "index.html").write_text("<a href='torch-2.13.0+cpu.whl'>torch</a>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
        out = _plan(tmp_path, None if shutil.which("nvidia-smi") is None else False, index)
        assert out == f"setup: torch index: {index}: no NVIDIA GPU (no nvidia-smi, no {tmp_path / 'no-such-driver'}), " \
                      "so the CPU-only build (no CUDA packages)"
    finally:
        server.shutdown()


def test_gpu_keeps_the_default_build(tmp_path):
    out = _plan(tmp_path, True, f"http://127.0.0.1:{_closed_port()}/whl/cpu")
    assert out.startswith("setup: torch index: default: an NVIDIA GPU is present")
    proc = tmp_path / "nvidia"
    proc.mkdir()
    out = _plan(tmp_path, False, f"http://127.0.0.1:{_closed_port()}/whl/cpu", proc=proc)
    assert "an NVIDIA GPU is present" in out
