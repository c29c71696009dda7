"""Tests of dhr.progress reporters."""

from __future__ import annotations

import io
import json

import pytest

from dhr.errors import ConfigError
from dhr.progress import JsonLinesReporter, QuietReporter, RichReporter, make_reporter


def _drive(rep) -> None:
    rep.start_batch(2)
    rep.start_item("a.png", 0)
    for step in range(1, 101):
        rep("coarse", step, 100, {"lpips": 0.5, "note": "x"})
    for step in range(1, 11):
        rep("refine", step, 10, {"loss_in": 0.1})
    rep.end_item("a.png", "ok")
    rep.start_item("b.png", 1)
    rep.note("warning", "no face")
    rep.end_item("b.png", "failed", "not an image")
    rep.finish({"ok": 1, "failed": 1, "record": "out/run.json"})
    rep.close()


def test_json_lines():
    buf = io.StringIO()
    _drive(JsonLinesReporter(buf, steps_per_stage=10))
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "batch" and kinds[-1] == "done" and events[0]["total"] == 2
    coarse = [e for e in events if e["event"] == "step" and e["stage"] == "coarse"]
    assert coarse[0]["step"] == 1 and coarse[-1]["step"] == 100 and len(coarse) == 11
    assert coarse[0]["losses"] == {"lpips": 0.5}
    refine = [e for e in events if e["event"] == "step" and e["stage"] == "refine"]
    assert [e["step"] for e in refine] == list(range(1, 11))
    done = [e for e in events if e["event"] == "item_done"]
    assert done[1] == {**done[1], "status": "failed", "error": "not an image"}
    assert events[-1]["record"] == "out/run.json"
    assert all(e["time"] >= 0 for e in events)


def test_rich_reporter_renders():
    from rich.console import Console

    out = io.StringIO()
    rep = RichReporter(Console(file=out, force_terminal=False, width=120))
    _drive(rep)
    text = out.getvalue()
    assert "failed" in text and "not an image" in text and "1 ok, 1 failed" in text
    # Stage bars are hidden when the next input starts; one input shows them with their counts.
    out = io.StringIO()
    rep = RichReporter(Console(file=out, force_terminal=False, width=120))
    rep.start_batch(1)
    rep.start_item("a.png", 0)
    for step in range(1, 41):
        rep("coarse", step, 40, {"lpips": 0.25})
    rep.end_item("a.png", "ok")
    rep.finish({"ok": 1, "failed": 0})
    text = out.getvalue()
    assert "coarse" in text and "40/40" in text and "lpips=0.25" in text and "1 ok, 0 failed" in text


def test_make_reporter():
    assert isinstance(make_reporter("quiet"), QuietReporter)
    assert isinstance(make_reporter("json", stream=io.StringIO()), JsonLinesReporter)
    assert isinstance(make_reporter("rich"), RichReporter)
    with pytest.raises(ConfigError):
        make_reporter("loud")


def test_quiet_reporter_prints_only_failures():
    out = io.StringIO()
    rep = QuietReporter(out)
    rep.start_batch(2)
    rep.start_item("a.png", 0)
    rep("coarse", 1, 40, {"lpips": 0.25})
    rep.note("warning", "a.png: something")
    rep.end_item("a.png", "ok")
    rep.end_item("b.png", "failed", "b.png is not a readable image")
    rep.finish({"ok": 1, "failed": 1})
    assert out.getvalue() == "b.png: failed: b.png is not a readable image\n"
