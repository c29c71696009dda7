"""Tests of the weights registry: resolution order, downloads from a local HTTP server, checks."""

from __future__ import annotations

import bz2
import hashlib
import http.server
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from dhr import weights as W
from dhr.errors import ConfigError, WeightsError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"


# ----------------------------------------------------------------------------------------------
# a local HTTP server with Range support and failure modes


@dataclass
class Route:
    data: bytes
    mode: str = "good"  # good | 404 | truncate-once | no-range | html
    served: int = 0


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        rng = self.headers.get("Range")
        server.log.append((self.path, rng))
        route = server.routes.get(self.path)
        if route is None or route.mode == "404":
            self.send_error(404, "Not Found")
            return
        data, start = route.data, 0
        if rng and route.mode != "no-range":
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "text/html; charset=utf-8" if route.mode == "html" else "application/octet-stream")
        self.end_headers()
        route.served += 1
        if route.mode == "truncate-once" and route.served == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes = {}
    httpd.log = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DHR_WEIGHTS_PATH", raising=False)
    monkeypatch.delenv("DHR_OFFLINE", raising=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _payload(n: int = 300_000, seed: int = 0) -> bytes:
    # deterministic, incompressible-ish bytes, larger than one read chunk of the server buffer
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _entry(name: str, data: bytes | None, urls=(), *, filename=None, **kw) -> W.WeightsEntry:
    sha = None if data is None else _sha(data)
    kw.setdefault("verified", sha is not None)
    return W.WeightsEntry(
        name=name, filename=filename or f"{name}.bin", urls=list(urls), sha256=sha,
        size=None if data is None else len(data), licence="test", description="test file", kind="generator", **kw,
    )


def _cache() -> Path:
    return Path(os.environ["DHR_HOME"]) / "weights"


# ----------------------------------------------------------------------------------------------
# downloads


def test_download_good_file(server):
    data = _payload()
    server.routes["/good.bin"] = Route(data)
    reg = W.WeightsRegistry([_entry("good", data, [server.base + "/good.bin"])])
    path = reg.resolve("good", progress=False)
    assert path == _cache() / "good.bin"
    assert path.read_bytes() == data
    assert not list(_cache().glob("*.part"))
    # second call finds the cached copy without touching the network
    n = len(server.log)
    assert reg.resolve("good", progress=False) == path
    assert len(server.log) == n


def test_download_checksum_mismatch_deletes_file(server):
    data = _payload()
    server.routes["/bad.bin"] = Route(data[:-1] + b"\x00")
    reg = W.WeightsRegistry([_entry("bad", data, [server.base + "/bad.bin"])])
    with pytest.raises(WeightsError) as info:
        reg.resolve("bad", progress=False)
    msg = str(info.value)
    assert "bad.bin" in msg and _sha(data) in msg and _sha(data[:-1] + b"\x00") in msg
    assert "deleted" in msg
    assert not _cache().joinpath("bad.bin").exists()
    assert not list(_cache().glob("bad.bin*"))


def test_truncated_transfer_resumes_on_retry(server):
    data = _payload()
    server.routes["/t.bin"] = Route(data, mode="truncate-once")
    reg = W.WeightsRegistry([_entry("t", data, [server.base + "/t.bin"])])
    path = reg.resolve("t", progress=False, retries=2)
    assert path.read_bytes() == data
    assert server.log[0] == ("/t.bin", None)
    assert server.log[1] == ("/t.bin", f"bytes={len(data) // 2}-")
    assert len(server.log) == 2


def test_truncated_transfer_keeps_part_and_next_call_resumes(server):
    data = _payload()
    server.routes["/t.bin"] = Route(data, mode="truncate-once")
    reg = W.WeightsRegistry([_entry("t", data, [server.base + "/t.bin"])])
    with pytest.raises(WeightsError, match="connection closed after"):
        reg.resolve("t", progress=False, retries=0)
    part = _cache() / "t.bin.part"
    assert part.stat().st_size == len(data) // 2
    path = reg.resolve("t", progress=False, retries=0)
    assert path.read_bytes() == data and not part.exists()
    assert server.log[-1] == ("/t.bin", f"bytes={len(data) // 2}-")


def test_server_ignoring_range_restarts_cleanly(server):
    data = _payload()
    server.routes["/n.bin"] = Route(data, mode="no-range")
    reg = W.WeightsRegistry([_entry("n", data, [server.base + "/n.bin"])])
    _cache().mkdir(parents=True)
    (_cache() / "n.bin.part").write_bytes(b"garbage that is not a prefix")
    assert reg.resolve("n", progress=False).read_bytes() == data


def test_404_then_second_url(server):
    data = _payload()
    server.routes["/mirror.bin"] = Route(data)
    reg = W.WeightsRegistry([_entry("m", data, [server.base + "/gone.bin", server.base + "/mirror.bin"])])
    assert reg.resolve("m", progress=False).read_bytes() == data
    assert [p for p, _ in server.log] == ["/gone.bin", "/mirror.bin"]


def test_all_urls_fail_lists_each(server):
    reg = W.WeightsRegistry([_entry("x", b"abc", [server.base + "/a", server.base + "/b"])])
    with pytest.raises(WeightsError) as info:
        reg.resolve("x", progress=False)
    msg = str(info.value)
    assert "/a: HTTP 404" in msg and "/b: HTTP 404" in msg and "dhr weights add x" in msg


def test_unverified_entry_downloads_with_warning_and_records_hash(server, caplog):
    data = _payload()
    server.routes["/u.bin"] = Route(data)
    reg = W.WeightsRegistry([_entry("u", None, [server.base + "/u.bin"], verified=False)])
    with caplog.at_level(logging.WARNING, logger="dhr.weights"):
        path = reg.resolve("u", progress=False)
    assert path.read_bytes() == data
    assert _sha(data) in caplog.text
    assert (_cache() / "u.bin.sha256").read_text().split()[0] == _sha(data)
    (res,) = reg.verify("u")
    assert res.status == "unverified" and res.actual == _sha(data) and res.ok
    path.write_bytes(data + b"tampered")
    (res,) = reg.verify("u")
    assert res.status == "mismatch" and res.expected == _sha(data)


def test_prefix_entry(server):
    data = _payload()
    server.routes["/p.bin"] = Route(data)
    good = W.WeightsEntry("p", "p.bin", [server.base + "/p.bin"], None, None, "t", "d", "lpips-backbone",
                          verified=False, sha256_prefix=_sha(data)[:8])
    assert W.WeightsRegistry([good]).resolve("p", progress=False).read_bytes() == data
    assert W.WeightsRegistry([good]).verify("p")[0].status == "prefix-ok"
    (_cache() / "p.bin").unlink()
    wrong = W.WeightsEntry("p", "p.bin", [server.base + "/p.bin"], None, None, "t", "d", "lpips-backbone",
                           verified=False, sha256_prefix="00000000" if not _sha(data).startswith("0") else "ffffffff")
    with pytest.raises(WeightsError, match="prefix"):
        W.WeightsRegistry([wrong]).resolve("p", progress=False)
    assert not (_cache() / "p.bin").exists()


def test_bz2_entry_is_decompressed(server):
    data = _payload()
    server.routes["/c.bin.bz2"] = Route(bz2.compress(data))
    reg = W.WeightsRegistry([_entry("c", data, [server.base + "/c.bin.bz2"], compression="bz2")])
    path = reg.resolve("c", progress=False)
    assert path.read_bytes() == data
    assert sorted(p.name for p in _cache().iterdir() if p.is_file()) == ["c.bin"]


def test_concurrent_resolves_share_one_download(server):
    data = _payload(1_000_000)
    server.routes["/cc.bin"] = Route(data)
    reg = W.WeightsRegistry([_entry("cc", data, [server.base + "/cc.bin"])])
    results, errors = [], []

    def work():
        try:
            results.append(reg.resolve("cc", progress=False))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(results) == 4 and all(p.read_bytes() == data for p in results)
    assert len(server.log) == 1  # the lock made the others wait and reuse the finished file


# ----------------------------------------------------------------------------------------------
# local resolution


def test_weights_path_recursive_and_order(tmp_path, monkeypatch):
    data = b"weights-bytes"
    a, b = tmp_path / "a", tmp_path / "b"
    (b / "deep" / "er").mkdir(parents=True)
    a.mkdir()
    (b / "deep" / "er" / "w.bin").write_bytes(data)
    reg = W.WeightsRegistry([_entry("w", data, filename="w.bin")])
    monkeypatch.setenv("DHR_WEIGHTS_PATH", os.pathsep.join([str(a), str(tmp_path / "nonexistent"), str(b)]))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    assert reg.resolve("w") == b / "deep" / "er" / "w.bin"
    # an earlier folder wins
    (a / "w.bin").write_bytes(data)
    loc = reg.locate("w")
    assert loc.path == a / "w.bin" and loc.source == "DHR_WEIGHTS_PATH"


def test_weights_path_wins_over_cache_and_bad_files_are_skipped(tmp_path, monkeypatch, caplog):
    data = b"the real file"
    folder = tmp_path / "wp"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"the fake file")
    _cache().mkdir(parents=True)
    (_cache() / "w.bin").write_bytes(data)
    reg = W.WeightsRegistry([_entry("w", data, filename="w.bin")])
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(folder))
    with caplog.at_level(logging.WARNING, logger="dhr.weights"):
        loc = reg.locate("w")
    assert loc.source == "cache" and "ignoring bad weights file" in caplog.text
    (folder / "w.bin").write_bytes(data)
    assert reg.locate("w").source == "DHR_WEIGHTS_PATH"


def test_cache_resolution_and_bad_cache_deleted(monkeypatch):
    data = b"cached"
    _cache().mkdir(parents=True)
    (_cache() / "c.bin").write_bytes(data)
    reg = W.WeightsRegistry([_entry("c", data, filename="c.bin")])
    assert reg.resolve("c", download=False) == _cache() / "c.bin"
    (_cache() / "c.bin").write_bytes(b"corrupt")
    with pytest.raises(WeightsError):
        reg.resolve("c", download=False)
    assert not (_cache() / "c.bin").exists()


def test_explicit_path(tmp_path):
    reg = W.WeightsRegistry([_entry("e", b"x", filename="e.bin")])
    f = tmp_path / "mine.pt"
    f.write_bytes(b"my own fine-tuned weights")
    assert reg.resolve("e", f) == f  # explicit files are the caller's choice: not hash-checked
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.bin").write_bytes(b"x")
    assert reg.resolve("e", tmp_path) == tmp_path / "sub" / "e.bin"
    with pytest.raises(WeightsError, match="does not exist"):
        reg.resolve("e", tmp_path / "nope.pt")


@pytest.mark.parametrize("how", ["env", "arg"])
def test_offline_error_message(monkeypatch, how):
    url = "https://example.invalid/models/off.bin"
    reg = W.WeightsRegistry([_entry("off", b"abc", [url], filename="off.bin")])
    if how == "env":
        monkeypatch.setenv("DHR_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        reg.resolve("off", download=(how != "arg"))
    msg = str(info.value)
    assert "off.bin" in msg and url in msg
    assert "DHR_WEIGHTS_PATH" in msg and "dhr weights add off" in msg and "dhr weights fetch off" in msg
    assert "--weights" not in msg  # no command has such an option: the advice must be one the user can follow
    assert ("DHR_OFFLINE" in msg) == (how == "env")
    assert str(_cache()) in msg


def test_no_url_entry_explains():
    reg = W.WeightsRegistry([_entry("nourl", b"abc", filename="n.bin")])
    with pytest.raises(WeightsError, match="no registered download URL"):
        reg.resolve("nourl", progress=False)


def test_add_checks_and_copies(tmp_path):
    data = b"real weights"
    reg = W.WeightsRegistry([_entry("a", data, filename="a.bin")])
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"other weights")
    with pytest.raises(WeightsError) as info:
        reg.add("a", bad)
    assert "a.bin" in str(info.value) and _sha(data) in str(info.value) and _sha(b"other weights") in str(info.value)
    assert not (_cache() / "a.bin").exists()
    good = tmp_path / "download.bin"
    good.write_bytes(data)
    dest = reg.add("a", good)
    assert dest == _cache() / "a.bin" and dest.read_bytes() == data
    assert reg.verify("a")[0].status == "ok"


def test_verify_missing_and_all():
    data = b"v"
    _cache().mkdir(parents=True)
    (_cache() / "v1.bin").write_bytes(data)
    reg = W.WeightsRegistry([_entry("v1", data, filename="v1.bin"), _entry("v2", data, filename="v2.bin")])
    results = {r.name: r for r in reg.verify()}
    assert results["v1"].status == "ok" and results["v1"].source == "cache"
    assert results["v2"].status == "missing" and not results["v2"].ok


def test_entry_validation_and_unknown_names():
    with pytest.raises(ConfigError, match="verified"):
        W.WeightsEntry("x", "x.bin", (), None, None, "l", "d", "generator")  # verified defaults True
    with pytest.raises(ConfigError, match="kind"):
        W.WeightsEntry("x", "x.bin", (), None, None, "l", "d", "nonsense", verified=False)
    with pytest.raises(ConfigError, match="sha256"):
        W.WeightsEntry("x", "x.bin", (), "abc", None, "l", "d", "generator")
    with pytest.raises(ConfigError, match="duplicate"):
        W.WeightsRegistry([_entry("d", b"1"), _entry("d", b"2")])
    with pytest.raises(WeightsError, match="lpips-alex"):
        W.default_registry().get("lpips-alx")


def test_default_registry_contents():
    reg = W.default_registry()
    for name in ("alexnet", "vgg16", "squeezenet1_1", "lpips-alex", "lpips-vgg", "lpips-squeeze",
                 "stylegan2-ffhq-config-f", "e4e-ffhq", "psp-ffhq", "ir-se50", "curricularface", "bisenet-79999",
                 "farl-celebm-448", "dlib-landmarks-68", "dlib-mmod", "dlib-resnet-v1",
                 "direction-age", "direction-smile", "direction-pose", "ganspace-ffhq-pca"):
        assert name in reg
    assert {e.kind for e in reg} == set(W.KINDS)
    for e in reg:
        assert e.verified == (e.sha256 is not None)
        assert e.licence and e.description
    assert reg.get("alexnet").sha256_prefix == "7be5be79"
    assert reg.get("vgg16").sha256_prefix == "397923af"


def test_dlib_models_found_in_package(monkeypatch):
    pkg = W._package_dir("face_recognition_models")
    if pkg is None:
        pytest.skip("face-recognition-models is not installed")
    monkeypatch.setenv("DHR_OFFLINE", "1")
    for name in ("dlib-landmarks-68", "dlib-landmarks-5", "dlib-mmod", "dlib-resnet-v1"):
        loc = W.locate(name)
        assert loc is not None and loc.source == "package" and loc.path.parent == pkg / "models"
        assert W.verify(name)[0].status == "ok"


def test_shared_weights_resolve_and_verify(monkeypatch):
    shared = SHARED / "weights"
    if not shared.is_dir():
        pytest.skip(f"shared weights folder {shared} is absent")
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(shared))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    names = [e.name for e in W.default_registry() if e.kind in ("lpips-linear", "directions")] + ["squeezenet1_1"]
    assert len(names) == 8
    for name in names:
        path = W.resolve(name)
        assert path.resolve().is_relative_to(shared.resolve()), (name, path)
        (res,) = W.verify(name)
        assert res.status == "ok", res


def test_complete_part_file_is_finished_after_416(server):
    data = _payload()
    server.routes["/f.bin"] = Route(data)
    reg = W.WeightsRegistry([_entry("f", data, [server.base + "/f.bin"])])
    _cache().mkdir(parents=True)
    (_cache() / "f.bin.part").write_bytes(data)
    assert reg.resolve("f", progress=False).read_bytes() == data
    assert server.log == [("/f.bin", f"bytes={len(data)}-")]


def test_progress_bar_enabled_does_not_break_download(server, capsys):
    data = _payload()
    server.routes["/g.bin"] = Route(data)
    reg = W.WeightsRegistry([_entry("g", data, [server.base + "/g.bin"])])
    assert reg.resolve("g", progress=True).read_bytes() == data
    assert capsys.readouterr().out == ""  # the bar goes to stderr only


def test_docs_table_lists_every_entry():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text(encoding="utf-8")
    for e in W.default_registry():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{e.name}` |")), None)
        assert row is not None, f"docs/weights.md has no row for {e.name}"
        assert e.filename in row and e.licence in row
        assert (e.sha256 or e.sha256_prefix or "unverified") in row


def test_html_page_is_never_stored_as_weights(server):
    server.routes["/drive"] = Route(b"<html>quota exceeded</html>", mode="html")
    reg = W.WeightsRegistry([_entry("h", None, [server.base + "/drive"], verified=False)])
    with pytest.raises(WeightsError, match="HTML page"):
        reg.resolve("h", progress=False)
    assert not list(_cache().glob("h.bin*"))


def test_dhr_home_that_is_a_file_is_a_weights_error(tmp_path, monkeypatch):
    home = tmp_path / "afile"
    home.write_text("not a folder")
    monkeypatch.setenv("DHR_HOME", str(home))
    reg = W.WeightsRegistry([_entry("h", b"abc", ["http://127.0.0.1:9/h.bin"], filename="h.bin")])
    with pytest.raises(WeightsError, match=r"cannot create the weights cache .*afile/weights.*set DHR_HOME"):
        reg.resolve("h", progress=False)


def test_unverified_file_from_the_search_path_is_used_with_a_warning(tmp_path, monkeypatch, caplog):
    found = tmp_path / "shelf" / "u.bin"
    found.parent.mkdir()
    found.write_bytes(b"whatever")
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(found.parent))
    reg = W.WeightsRegistry([_entry("u", None, [], filename="u.bin", verified=False)])
    with caplog.at_level(logging.WARNING, logger="dhr.weights"):
        assert reg.resolve("u", progress=False) == found
    assert f"using {found} for u from DHR_WEIGHTS_PATH without checking it" in caplog.text
    assert "dhr weights add u" in caplog.text
