"""Batch commands under faults: same-stem inputs, kills, two runs into one folder, crafted bundles,
failing photos, crashes, bad output folders, hostile inputs and options (issue 19).

A tiny random model with tiny step counts; hostile files are built at run time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from dhr.cli.run import register
from dhr.outputs import TMP_MARK, verify_outputs
from tests.pipeline_fixtures import make_tiny_model, synthetic_photo, tiny_config_file

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def _invoke(*args):
    return runner.invoke(_app(), [str(a) for a in args])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("hard")
    model = make_tiny_model(root / "model")
    cfg = tiny_config_file(root)
    return {"root": root, "model": str(model), "config": str(cfg)}


def _common(env) -> list[str]:
    return ["--model", env["model"], "--config", env["config"], "--device", "cpu", "--whole-image", "-q"]


def _record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _all_entries(rec: dict) -> list[dict]:
    return [*rec["inputs"], *rec.get("earlier_inputs", [])]


# ---------------------------------------------------------------------------------------------
# 1. same stems


def test_same_stem_photos_never_share_outputs(env, tmp_path):
    a1 = synthetic_photo(tmp_path / "a" / "photo.png", seed=1)
    a2 = tmp_path / "a" / "photo.jpg"
    Image.open(synthetic_photo(tmp_path / "tmp.png", seed=2)).save(a2)
    b1 = synthetic_photo(tmp_path / "b" / "photo.png", seed=3)
    out = tmp_path / "out"
    r = _invoke("run", a1, a2, b1, "-e", "age=1", "-o", out, *_common(env))
    assert r.exit_code == 0, r.output
    rec = _record(out)
    names = [i["name"] for i in rec["inputs"]]
    assert len(set(names)) == 3 and names[0] == "photo"
    files = [i["faces"][0]["outputs"]["edits"]["age+1"]["crop"] for i in rec["inputs"]]
    assert len(set(files)) == 3 and all(Path(f).is_file() for f in files)
    # Each pasted edit is its own photo's: the three files differ.
    pasted = {Path(i["faces"][0]["outputs"]["edits"]["age+1"]["pasted"]).read_bytes() for i in rec["inputs"]}
    assert len(pasted) == 3
    assert sum("taken by" in w for w in rec["warnings"]) == 2
    # dist gives the same names to the same files in this folder (claims in run.json).
    from dhr.outputs import assign_names
    from dhr.records import RunRecord

    rr = RunRecord(out, "dist")
    rr.load_earlier()
    again, _ = assign_names([str(b1), str(a2), str(a1)], rr.name_claims())
    assert [again[str(p)] for p in (a1, a2, b1)] == names


# ---------------------------------------------------------------------------------------------
# 2. merge and resume


def test_records_merge_and_resume_checks_files(env, tmp_path):
    p1 = synthetic_photo(tmp_path / "in" / "p1.png", seed=1)
    p2 = synthetic_photo(tmp_path / "in" / "p2.png", seed=2)
    out = tmp_path / "out"
    assert _invoke("run", p1, "-o", out, *_common(env)).exit_code == 0
    assert _invoke("run", p2, "-o", out, *_common(env)).exit_code == 0
    rec = _record(out)
    assert [Path(e["path"]).name for e in rec["inputs"]] == ["p2.png"]
    assert [Path(e["path"]).name for e in rec["earlier_inputs"]] == ["p1.png"]  # merged, not replaced
    # Rerun both: p1 and p2 resume; zero one file of p2 first: p2 is redone.
    inv2 = Path(rec["inputs"][0]["faces"][0]["outputs"]["inversion"])
    inv2.write_bytes(b"")
    r = _invoke("run", p1, p2, "-o", out, *_common(env))
    assert r.exit_code == 0, r.output
    rec = _record(out)
    by = {Path(e["path"]).name: e for e in rec["inputs"]}
    assert any("resumed" in n for n in by["p1.png"]["notes"])
    assert not any("resumed" in n for n in by["p2.png"]["notes"])
    assert any("damaged" in n and "empty" in n for n in by["p2.png"]["notes"])
    assert inv2.stat().st_size > 0 and verify_outputs(by["p2.png"]["faces"]) is None
    # Another config: nothing resumes.
    r = _invoke("run", p1, "-o", out, *_common(env), "--set", "refine.steps=1")
    e = _record(out)["inputs"][0]
    assert r.exit_code == 0 and any("another model, config or options" in n for n in e["notes"])
    # --no-resume redoes.
    _invoke("run", p1, "-o", out, *_common(env), "--set", "refine.steps=1", "--no-resume")
    assert not any("resumed" in n for n in _record(out)["inputs"][0]["notes"])


def test_dist_redoes_photos_whose_files_were_deleted_or_zeroed(env, tmp_path):
    from dhr.distributed import PipelineSpec, run_distributed
    from dhr.jobs import PhotoJob

    photos = [str(synthetic_photo(tmp_path / "in" / f"q{i}.png", seed=i)) for i in range(2)]
    eps = tmp_path / "in" / "q9.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n")
    out = tmp_path / "out"
    spec = PipelineSpec(model=env["model"], config=env["config"])
    job = PhotoJob(whole_image=True, sweeps=(), sheet=False)
    rec = run_distributed([*photos, str(eps)], out, spec, job, n_workers=1, processes=False)
    assert rec.counts == {"total": 3, "ok": 2, "failed": 1}
    assert "unsupported format" in rec.inputs[2].error
    Path(rec.inputs[0].faces[0]["outputs"]["inversion"]).write_bytes(b"")
    Path(rec.inputs[1].faces[0]["outputs"]["bundle"] + ".safetensors").unlink()
    rec = run_distributed(photos, out, spec, job, n_workers=1, processes=False)
    assert rec.counts["ok"] == 2
    assert not any("resumed" in n for r in rec.inputs for n in r.notes)
    assert all(verify_outputs(r.faces) is None for r in rec.inputs)
    rec = run_distributed(photos, out, spec, job, n_workers=1, processes=False)
    assert all(any("resumed" in n for n in r.notes) for r in rec.inputs)


# ---------------------------------------------------------------------------------------------
# 2 and 3. kill-and-rerun, two runs into one folder (real processes)


_GATED = """
import os, sys, time
from pathlib import Path
import dhr.outputs
from dhr.cli import main

ready, stem = Path(os.environ["DHR_TEST_READY"]), os.environ["DHR_TEST_STEM"]
real_replace = os.replace


def gated_replace(src, dst, *a, **k):
    # Stops for good when the first output of photo `stem` is about to get its final name: the
    # process is then mid-photo with a temporary file on disk, like a real kill mid-write.
    if Path(dst).name.startswith(stem):
        ready.write_text(str(os.getpid()))
        while True:
            time.sleep(0.05)
    return real_replace(src, dst, *a, **k)


dhr.outputs.os.replace = gated_replace
sys.argv[0] = "dhr"
main()
"""


def _gated_run(env, tmp_path, stem: str, *args) -> tuple[subprocess.Popen, Path]:
    """``dhr run ARGS`` in a real process that blocks as it finishes the first file of photo ``stem``."""
    ready = tmp_path / "ready"
    penv = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", "OMP_NUM_THREADS": "1",
            "DHR_TEST_READY": str(ready), "DHR_TEST_STEM": stem}
    proc = subprocess.Popen([sys.executable, "-c", _GATED, "run", *map(str, args)], env=penv,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.time()
    while not ready.is_file():
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.stderr.read().decode()[-2000:]}")
        if time.time() - t0 > 120:
            proc.kill()
            pytest.fail("the run never reached the gate")
        time.sleep(0.05)
    return proc, ready


def test_kill_and_rerun_loses_nothing(env, tmp_path):
    photos = [synthetic_photo(tmp_path / "in" / f"k{i}.png", seed=i) for i in range(3)]
    out = tmp_path / "out"
    args = [*photos, "-e", "age=1", "-o", out, *_common(env)]
    assert _invoke("run", photos[2], *args[3:]).exit_code == 0  # k2 finished by an earlier run
    k2_before = _record(out)["inputs"][0]
    proc, _ = _gated_run(env, tmp_path, "k1", *args)
    proc.send_signal(signal.SIGKILL)  # mid-way through k1, a temporary file on disk
    proc.wait(timeout=30)
    assert list(out.rglob(f"*{TMP_MARK}*")), "the kill did not land mid-write"
    rec = _record(out)  # run.json is complete JSON after a kill
    st = {Path(e["path"]).name: e["status"] for e in rec["inputs"]}
    assert st == {"k0.png": "ok", "k1.png": "pending", "k2.png": "pending"}
    assert rec["earlier_inputs"] == [k2_before]  # the killed rerun did not drop k2's finished record
    done = rec["inputs"][0]
    assert verify_outputs(done["faces"]) is None  # what the record calls ok is really there
    inv0 = Path(done["faces"][0]["outputs"]["inversion"])
    before = inv0.read_bytes()
    assert not (out / "inversion" / "k1_whole.png").exists()  # never a partial file under a final name
    r = _invoke("run", *args)
    assert r.exit_code == 0, r.output
    rec = _record(out)
    assert rec["counts"] == {"total": 3, "ok": 3, "failed": 0}
    for e in rec["inputs"]:
        assert verify_outputs(e["faces"]) is None
    resumed = [Path(e["path"]).name for e in rec["inputs"] if any("resumed" in n for n in e["notes"])]
    assert resumed == ["k0.png", "k2.png"] and not rec["earlier_inputs"]
    assert inv0.read_bytes() == before
    assert not list(out.rglob(f"*{TMP_MARK}*"))  # the killed run's temporary files were cleaned


def test_two_runs_into_one_folder(env, tmp_path):
    pa = synthetic_photo(tmp_path / "in" / "ra.png", seed=5)
    pb = synthetic_photo(tmp_path / "in" / "rb.png", seed=6)
    out = tmp_path / "out"
    proc, _ = _gated_run(env, tmp_path, "ra", pa, "-o", out, *_common(env))
    try:
        r = _invoke("run", pb, "-o", out, *_common(env))
        assert r.exit_code == 2
        assert f"in use by another dhr process (pid {proc.pid}, `dhr run`)" in r.output
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # The lock dies with its process; both photos then end up in one run.json.
    assert _invoke("run", pa, "-o", out, *_common(env)).exit_code == 0
    assert _invoke("run", pb, "-o", out, *_common(env)).exit_code == 0
    rec = _record(out)
    assert {Path(e["path"]).name for e in _all_entries(rec) if e["status"] == "ok"} == {"ra.png", "rb.png"}


# ---------------------------------------------------------------------------------------------
# 4. crafted bundles in a batch


def test_edit_batch_goes_on_past_crafted_bundles(env, tmp_path):
    src = synthetic_photo(tmp_path / "in" / "e.png")
    inv_out = tmp_path / "inv"
    assert _invoke("invert", src, "-o", inv_out, "--model", env["model"], "--config", env["config"],
                   "--whole-image", "-q").exit_code == 0
    bundles = inv_out / "bundles"
    good = bundles / "e_whole"
    st = good.with_suffix(".safetensors").read_bytes()
    side = json.loads(good.with_suffix(".json").read_text())
    crafted = {
        "a_trunc": (st[: len(st) // 2], json.dumps(side)),
        "b_nodelta": (st, json.dumps({k: v for k, v in side.items() if k != "delta"})),
        "c_badjson": (st, "{not json"),
        "d_ws": (st, json.dumps({**side, "resolution": 64})),
    }
    for name, (s, j) in crafted.items():
        (bundles / f"{name}.safetensors").write_bytes(s)
        (bundles / f"{name}.json").write_text(j)
    out = tmp_path / "ed"
    r = _invoke("edit", bundles, "-e", "age=1", "-o", out, "--model", env["model"], "-q")
    assert r.exit_code == 1, r.output
    rec = _record(out)
    status = {Path(e["path"]).name: (e["status"], e["error_type"]) for e in rec["inputs"]}
    assert status["e_whole"] == ("ok", None)
    for name in crafted:
        assert status[name] == ("failed", "CheckpointError"), (name, rec)
    assert "Traceback" not in r.output


# ---------------------------------------------------------------------------------------------
# 5 and 6. isolation and exit codes


def test_any_exception_of_one_photo_is_recorded_and_the_next_runs(env, tmp_path, monkeypatch):
    import dhr.jobs

    real = dhr.jobs.process_photo
    photos = [synthetic_photo(tmp_path / "in" / f"m{i}.png", seed=i) for i in range(3)]

    def flaky(pipe, item, tree, job, rec, reporter=None, **kw):
        if item.endswith("m0.png"):
            raise MemoryError("simulated out of memory")
        if item.endswith("m1.png"):
            raise KeyError("simulated bug")
        return real(pipe, item, tree, job, rec, reporter, **kw)

    monkeypatch.setattr(dhr.jobs, "process_photo", flaky)
    out = tmp_path / "out"
    r = _invoke("run", *photos, "-o", out, *_common(env))
    assert r.exit_code == 1
    st = {Path(e["path"]).name: (e["status"], e["error_type"]) for e in _record(out)["inputs"]}
    assert st == {"m0.png": ("failed", "MemoryError"), "m1.png": ("failed", "KeyError"), "m2.png": ("ok", None)}



def test_a_bug_stops_the_batch_instead_of_failing_every_photo(env, tmp_path, monkeypatch):
    import dhr.jobs

    calls = []
    photos = [synthetic_photo(tmp_path / "in" / f"b{i}.png", seed=i) for i in range(3)]

    def buggy(pipe, item, tree, job, rec, reporter=None, **kw):
        calls.append(Path(item).name)
        raise TypeError("process_photo() got an unexpected keyword argument 'x'")

    monkeypatch.setattr(dhr.jobs, "process_photo", buggy)
    out = tmp_path / "out"
    r = _invoke("run", *photos, "-o", out, *_common(env))
    assert isinstance(r.exception, TypeError)  # surfaces: dhr.cli.main turns it into exit code 4
    assert calls == ["b0.png"]  # the batch stopped at the first photo
    st = {Path(e["path"]).name: (e["status"], e["error_type"]) for e in _record(out)["inputs"]}
    assert st["b0.png"] == ("failed", "TypeError")
    assert all(s == "pending" for s, _ in (st["b1.png"], st["b2.png"])), st

def test_a_crash_exits_4_not_1(monkeypatch, capsys):
    import dhr.cli as cli

    def boom():
        def app(*a, **k):
            raise ZeroDivisionError("bug")

        return app

    monkeypatch.setattr(cli, "build_app", boom)
    monkeypatch.setattr(sys, "argv", ["dhr", "run", "x.jpg"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == cli.EXIT_CRASH == 4
    assert "internal error" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 8. output folder checked before any work


def test_bad_output_folder_is_a_usage_error(env, tmp_path, monkeypatch):
    import dhr.cli.run as run_mod

    p = synthetic_photo(tmp_path / "p.png")
    taken = tmp_path / "taken"
    taken.write_text("x")
    monkeypatch.setattr(run_mod, "_common", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    for out, msg in ((taken, "is a file"), (Path("/dev/null"), "is a device"), (tmp_path / ("n" * 300), "255")):
        r = _invoke("run", p, "-o", out, *_common(env))
        assert r.exit_code == 2 and msg in r.output, r.output


# ---------------------------------------------------------------------------------------------
# 9 and 10. formats and skipped entries through the CLI


def test_folder_run_records_skipped_entries_and_unsupported_formats(env, tmp_path):
    d = tmp_path / "in"
    synthetic_photo(d / "ok.png")
    Image.open(d / "ok.png").save(d / "anim.gif")
    (d / "notes.pdf").write_bytes(b"%PDF-1.4")
    (d / "fake.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n")
    os.mkfifo(d / "pipe.png")
    (d / "loop.png").symlink_to(d / "loop.png")
    out = tmp_path / "out"
    r = _invoke("run", d, "-o", out, *_common(env))
    assert r.exit_code == 1, r.output  # fake.jpg fails, the GIF and PNG succeed
    rec = _record(out)
    st = {Path(e["path"]).name: e["status"] for e in rec["inputs"]}
    assert st == {"anim.gif": "ok", "fake.jpg": "failed", "ok.png": "ok"}
    bad = next(e for e in rec["inputs"] if e["path"].endswith("fake.jpg"))
    assert "unsupported format" in bad["error"]
    assert {Path(s["path"]).name for s in rec["skipped"]} == {"notes.pdf", "pipe.png", "loop.png"}
    # Given by name, a symlink loop is an input that fails clearly; the batch goes on.
    r = _invoke("run", d / "loop.png", d / "ok.png", "-o", tmp_path / "out2", *_common(env))
    assert r.exit_code == 1
    st = {Path(e["path"]).name: (e["status"], e["error"]) for e in _record(tmp_path / "out2")["inputs"]}
    assert st["ok.png"][0] == "ok" and st["loop.png"][0] == "failed" and "link loop" in st["loop.png"][1]


def test_ood_mask_bomb_and_eps_are_usage_errors(env, tmp_path):
    import struct
    import zlib

    p = synthetic_photo(tmp_path / "p.png")
    Image.new("L", (1, 1)).save(tmp_path / "s.png")
    data = bytearray((tmp_path / "s.png").read_bytes())
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", 300_000, 300_000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(data))
    eps = tmp_path / "mask.png"
    eps.write_bytes(b"%!PS-Adobe-3.0\n")
    for mask, msg in ((bomb, "too large"), (eps, "unsupported format")):
        r = _invoke("run", p, "--ood-mask", mask, "-o", tmp_path / "o", *_common(env))
        assert r.exit_code == 2 and msg in r.output, r.output


# ---------------------------------------------------------------------------------------------
# 11. options through the CLI


@pytest.mark.parametrize("extra,msg", [
    (["-e", "age=1e308"], "between -100 and +100"),
    (["-e", ""], "empty"),
    (["--set", "refine.steps=10000000000000000000000"], "between 0 and 100000"),
    (["--set", "coarse.n_mean_samples=100000000000"], "between 1 and 1000000"),
    (["--seed", "100000000000000000000000"], "seed"),
])
def test_out_of_range_options(env, tmp_path, extra, msg):
    p = synthetic_photo(tmp_path / "p.png")
    r = _invoke("run", p, "-o", tmp_path / "o", *_common(env), *extra)
    assert r.exit_code == 2 and msg in r.output, r.output
