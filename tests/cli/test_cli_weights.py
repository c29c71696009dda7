"""Tests of ``dhr weights`` (list / fetch / add / verify) on a test registry."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dhr import weights as W
from dhr.cli.weights import app

runner = CliRunner()

GOOD = b"good weights " * 1000
OTHER = b"something else"


def _entry(name: str, data: bytes, filename: str, urls=()) -> W.WeightsEntry:
    return W.WeightsEntry(name, filename, urls, hashlib.sha256(data).hexdigest(), len(data),
                          "test licence", "test file", "directions")


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "remote.bin").write_bytes(GOOD)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def registry(tmp_path, monkeypatch, served):
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DHR_OFFLINE", raising=False)
    wp = tmp_path / "wp"
    (wp / "nested").mkdir(parents=True)
    (wp / "nested" / "present.bin").write_bytes(GOOD)
    (wp / "corrupt.bin").write_bytes(OTHER)
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(wp))
    reg = W.WeightsRegistry([
        _entry("present", GOOD, "present.bin"),
        _entry("corrupt", GOOD, "corrupt.bin"),
        _entry("remote", GOOD, "remote.bin", [served + "/remote.bin"]),
    ])
    monkeypatch.setattr(W, "default_registry", lambda: reg)
    return reg


def test_list_table_and_json(registry, tmp_path):
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0, res.output
    assert "present" in res.output and "missing" in res.output and "test licence" in res.output
    res = runner.invoke(app, ["list", "--json"])
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["present"]["path"] == str(tmp_path / "wp" / "nested" / "present.bin")
    assert rows["present"]["source"] == "DHR_WEIGHTS_PATH"
    assert rows["remote"]["path"] is None and rows["remote"]["size"] == len(GOOD)


def test_verify_exit_codes(registry):
    res = runner.invoke(app, ["verify", "present"])
    assert res.exit_code == 0 and res.stdout.startswith("ok")
    res = runner.invoke(app, ["verify", "corrupt", "--json"])
    assert res.exit_code == 1
    payload = json.loads(res.stdout)
    assert payload["ok"] is False and payload["results"][0]["status"] == "mismatch"
    assert payload["results"][0]["actual"] == hashlib.sha256(OTHER).hexdigest()
    res = runner.invoke(app, ["verify", "remote"])  # a named file that is missing fails
    assert res.exit_code == 1 and "missing" in res.stdout
    res = runner.invoke(app, ["verify"])  # all: missing is reported, the corrupt file fails
    assert res.exit_code == 1 and "mismatch" in res.stdout
    res = runner.invoke(app, ["verify", "nonexistent-name"])
    assert res.exit_code == 1 and "unknown weights name" in res.stderr


def test_fetch_downloads_then_verify_all_passes(registry, tmp_path, monkeypatch):
    res = runner.invoke(app, ["fetch", "remote", "--no-progress"])
    assert res.exit_code == 0, res.output
    path = Path(res.stdout.strip())
    assert path == tmp_path / "home" / "weights" / "remote.bin" and path.read_bytes() == GOOD
    (tmp_path / "wp" / "corrupt.bin").unlink()
    res = runner.invoke(app, ["verify"])
    assert res.exit_code == 0, res.output  # 'corrupt' now missing: not a failure when checking all


def test_fetch_offline_fails_with_instructions(registry, monkeypatch):
    monkeypatch.setenv("DHR_OFFLINE", "1")
    res = runner.invoke(app, ["fetch", "remote"])
    assert res.exit_code == 1
    assert "remote.bin" in res.stderr and "dhr weights add remote" in res.stderr and "DHR_WEIGHTS_PATH" in res.stderr


def test_add_good_and_bad(registry, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(OTHER)
    res = runner.invoke(app, ["add", "remote", str(bad)])
    assert res.exit_code == 1 and "nothing was copied" in res.stderr
    good = tmp_path / "dl.bin"
    good.write_bytes(GOOD)
    res = runner.invoke(app, ["add", "remote", str(good)])
    assert res.exit_code == 0
    assert Path(res.stdout.strip()).read_bytes() == GOOD
    assert runner.invoke(app, ["verify", "remote"]).exit_code == 0
    assert os.environ["DHR_HOME"] in res.stdout
