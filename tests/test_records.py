"""Tests of dhr.records (run.json) and the model identity it records."""

from __future__ import annotations

import hashlib
import json
import logging

from dhr.errors import ImageError
from dhr.records import (
    RUN_JSON,
    OutputTree,
    RunRecord,
    WarningCollector,
    environment,
    file_sha256,
    final_losses,
    model_identity,
)
from tests.pipeline_fixtures import make_tiny_model


def test_file_sha256(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"hello dhr")
    assert file_sha256(p) == hashlib.sha256(b"hello dhr").hexdigest()
    assert file_sha256(tmp_path / "missing") is None


def test_environment_versions():
    import torch

    import dhr

    env = environment()
    assert env["dhr"] == dhr.__version__ and env["torch"] == torch.__version__
    assert env["python"].count(".") == 2


def test_record_statuses_and_exit_codes(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    rec = RunRecord(tmp_path / "out", "run", {"seed": 1, "out": tmp_path})
    assert rec.exit_code() == 3  # no input at all is a failure
    a = rec.add_input(tmp_path / "a.png")
    assert a.sha256 == hashlib.sha256(b"x").hexdigest()
    a.status = "ok"
    assert rec.exit_code() == 0
    b = rec.add_input(tmp_path / "missing.png")
    assert b.sha256 is None
    b.fail(ImageError("missing.png is not readable"))
    assert rec.exit_code() == 1
    a.fail(ValueError("boom"))
    assert rec.exit_code() == 3
    with rec.timed("align"):
        pass
    with rec.timed("align"):
        pass
    path = rec.write()
    assert path == tmp_path / "out" / RUN_JSON
    data = json.loads(path.read_text())
    assert data["status"] == "failed" and data["counts"] == {"total": 2, "ok": 0, "failed": 2}
    assert data["inputs"][1]["error_type"] == "ImageError"
    assert data["inputs"][1]["error"] == "missing.png is not readable"
    assert data["options"]["out"] == str(tmp_path)
    assert "align_s" in data["timings"] and data["environment"]["dhr"]
    assert not (tmp_path / "out" / "run.json.tmp").exists()
    # An input not run (an interrupted run): the record says so instead of "ok"
    a.status = "ok"
    rec.add_input(tmp_path / "later.png")
    data = json.loads(rec.write().read_text())
    assert data["status"] == "incomplete"
    assert data["counts"] == {"total": 3, "ok": 1, "failed": 1, "pending": 1}


def test_sigterm_unwinds_like_ctrl_c():
    import os
    import signal

    import pytest

    from dhr.cli import EXIT_TERMINATED, install_sigterm_exit

    old = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        install_sigterm_exit()
        unwound = []
        with pytest.raises(SystemExit) as e:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.sigtimedwait([], 0.5) if hasattr(signal, "sigtimedwait") else None
            finally:
                unwound.append(True)  # where a batch writes run.json
        assert e.value.code == EXIT_TERMINATED == 143 and unwound == [True]
        # an embedding program's own handler is left alone
        def mine(*args):
            pass

        signal.signal(signal.SIGTERM, mine)
        install_sigterm_exit()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)


def test_output_tree(tmp_path):
    tree = OutputTree(tmp_path / "o")
    for p in (tree.aligned, tree.masks, tree.inversion, tree.pasted, tree.bundles, tree.edits("age+2")):
        assert p.is_dir()
    assert tree.edits("age+2") == tmp_path / "o" / "edits" / "age+2"


def test_model_identity(tmp_path):
    from dhr.models.zoo import load_model

    folder = make_tiny_model(tmp_path / "m")
    ident = model_identity(load_model(folder))
    want = hashlib.sha256((folder / "generator" / "model.safetensors").read_bytes()).hexdigest()
    assert ident["generator_sha256"] == want
    assert ident["name"] == "tiny-test" and ident["resolution"] == 32
    assert ident["components"] == ["classifier", "directions", "encoder", "perceptual"]


def test_warning_collector():
    log = logging.getLogger("dhr.some.module")
    with WarningCollector() as w:
        log.warning("careful %s", 1)
        log.info("not collected")
        logging.getLogger("other").warning("not ours")
    log.warning("after")
    assert w.messages == ["careful 1"]


def test_warning_collector_capture_keeps_messages_from_the_root_handler():
    """The CLI reports collected warnings itself; with capture they must not also reach stderr."""
    seen: list[str] = []

    class Root(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    root, handler = logging.getLogger(), Root(level=logging.WARNING)
    root.addHandler(handler)
    try:
        log = logging.getLogger("dhr.some.module")
        with WarningCollector(capture=True) as w:
            log.warning("once")
        with WarningCollector() as plain:
            log.warning("twice")
        log.warning("after")
    finally:
        root.removeHandler(handler)
    assert w.messages == ["once"] and plain.messages == ["twice"]
    assert seen == ["twice", "after"]  # propagation is back after the captured block
    assert logging.getLogger("dhr").propagate


def test_capturing_collectors_nest_innermost_owns_the_messages():
    log = logging.getLogger("dhr.some.module")
    with WarningCollector(capture=True) as outer:
        log.warning("batch")
        with WarningCollector(capture=True) as inner:
            log.warning("photo")
        log.warning("batch again")
    assert inner.messages == ["photo"] and outer.messages == ["batch", "batch again"]
    assert logging.getLogger("dhr").propagate and outer not in logging.getLogger("dhr").handlers


def test_final_losses():
    assert final_losses({"a": [3.0, 1.0], "b": [], "c": [2]}) == {"a": 1.0, "c": 2.0}


def test_a_newer_record_is_moved_aside_not_resumed(tmp_path):
    out = tmp_path / "out"
    first = RunRecord(out, "run", {})
    (tmp_path / "a.png").write_bytes(b"x")
    first.add_input(tmp_path / "a.png").status = "ok"
    doc = json.loads(first.write().read_text())
    assert RunRecord(out, "run", {}).load_earlier()[0]["status"] == "ok"  # this dhr's record resumes
    doc["record_version"] = 99
    (out / RUN_JSON).write_text(json.dumps(doc))
    again = RunRecord(out, "run", {})
    assert again.load_earlier() == []
    assert "record_version 99" in again.warnings[0] and "moved to run.json.unreadable-" in again.warnings[0]
    assert len(list(out.glob("run.json.unreadable-*"))) == 1
