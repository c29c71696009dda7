"""The distributed engine (dask) on a tiny model: same files as the in-process run, failures
isolated, resume, and the `dhr dist` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the distributed engine needs dask[distributed] (pip install 'dhr[dist]')")

from dhr.distributed import RECORDS_DIR, PipelineSpec, item_key, run_distributed  # noqa: E402
from dhr.jobs import PhotoJob, process_photo  # noqa: E402
from dhr.records import InputRecord, OutputTree  # noqa: E402
from tests.pipeline_fixtures import TINY_CONFIG, make_tiny_model, synthetic_photo  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    model = make_tiny_model(root / "model")
    photos = [synthetic_photo(root / "in" / f"p{i}.png", seed=i) for i in range(3)]
    broken = root / "in" / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    spec = PipelineSpec(model=str(model), config=TINY_CONFIG, seed=3, device="cpu")
    job = PhotoJob.from_lists([{"age": 1.5}], whole_image=True)
    return {"root": root, "photos": photos, "broken": broken, "spec": spec, "job": job}


def _content(p: Path):
    """PNG bytes; safetensors as (metadata, tensors): the header's metadata order is not stable."""
    if p.suffix == ".png":
        return p.read_bytes()
    from safetensors import safe_open

    with safe_open(str(p), "pt") as f:
        return f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in sorted(f.keys())}


def _outputs(out: Path) -> dict[str, object]:
    return {str(p.relative_to(out)): _content(p) for p in sorted(out.rglob("*"))
            if p.is_file() and p.suffix in (".png", ".safetensors")}


def test_same_files_as_in_process_and_failures_isolated(env, tmp_path):
    spec, job = env["spec"], env["job"]
    # In process, as `dhr run` does it.
    ref = tmp_path / "ref"
    pipe = spec.build()
    for p in env["photos"]:
        process_photo(pipe, str(p), OutputTree(ref), job, InputRecord(path=str(p)))
    # Distributed, photos in reverse order, the broken file in the middle.
    items = [str(env["photos"][2]), str(env["broken"]), str(env["photos"][1]), str(env["photos"][0])]
    out = tmp_path / "dist"
    record = run_distributed(items, out, spec, job, n_workers=1, processes=False)
    assert record.counts == {"total": 4, "ok": 3, "failed": 1}
    assert record.exit_code() == 1
    failed = [r for r in record.inputs if r.status == "failed"]
    assert failed[0].path == str(env["broken"]) and failed[0].error_type == "ImageError"
    assert "broken.jpg" in failed[0].error
    expected = _outputs(ref)
    got = _outputs(out)
    assert expected and got.keys() == expected.keys()
    differ = [k for k in expected if got[k] != expected[k]]
    assert not differ, differ
    # the same per-image random-stream key (a content hash of the crop) on both paths
    keys = {}
    for tree in (ref, out):
        keys[tree] = {p.name: json.loads(p.read_text())["meta"]["image_key"] for p in (tree / "bundles").glob("*.json")}
    assert len(keys[ref]) == 3 and keys[ref] == keys[out]
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "dist" and run["counts"]["ok"] == 3
    assert [i["path"] for i in run["inputs"]] == items  # input order, not completion order
    assert (out / RECORDS_DIR / f"{item_key(items[0])}.json").is_file()


def test_batched_tasks_give_the_same_files_and_per_photo_records(env, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import dhr.distributed as dist
    from dhr.errors import ConfigError

    spec, job = env["spec"], env["job"]
    items = [str(env["photos"][2]), str(env["broken"]), str(env["photos"][1]), str(env["photos"][0])]
    one = run_distributed(items, tmp_path / "one", spec, job, n_workers=1, processes=False)
    log_file = tmp_path / "groups.jsonl"  # the task may run on a copy of this function: record in a file
    real = dist.process_items

    def recording(spec_, job_, group, out, names=None):
        with open(log_file, "a") as fh:
            fh.write(json.dumps([Path(p).name for p in group]) + "\n")
        return real(spec_, job_, group, out, names)

    monkeypatch.setattr(dist, "process_items", recording)
    out = tmp_path / "batched"
    record = run_distributed(items, out, spec, job, n_workers=1, processes=False, batch=3)
    groups = sorted(json.loads(line) for line in log_file.read_text().splitlines())
    assert groups == [["p0.png"], ["p2.png", "broken.jpg", "p1.png"]]
    assert record.counts == {"total": 4, "ok": 3, "failed": 1}
    assert [r.status for r in record.inputs] == [r.status for r in one.inputs]
    assert record.inputs[1].error_type == "ImageError" and "broken.jpg" in record.inputs[1].error
    for rec in record.inputs:  # each photo's own whole-image warning, none of another photo's
        if rec.status == "ok":
            assert rec.warnings and all(Path(rec.path).name in w for w in rec.warnings), rec.warnings
    expected, got = _outputs(tmp_path / "one"), _outputs(out)
    assert expected and got.keys() == expected.keys()
    # bundles and edits bit for bit; the reconstruction (inversion/, sheets/) is rendered in one batched
    # call, equal to float rounding: at most one 8-bit level
    exact = [k for k in expected if not k.startswith(("inversion/", "sheets/"))]
    assert any(k.startswith("bundles/") for k in exact) and not [k for k in exact if got[k] != expected[k]]
    for k in set(expected) - set(exact):
        a = np.asarray(Image.open(tmp_path / "one" / k)).astype(int)
        b = np.asarray(Image.open(out / k)).astype(int)
        assert np.abs(a - b).max() <= 1, k
    assert json.loads((out / "run.json").read_text())["options"]["engine"]["batch"] == 3
    with pytest.raises(ConfigError, match="batch"):
        run_distributed(items, tmp_path / "bad", spec, job, n_workers=1, processes=False, batch=0)
    with pytest.raises(ConfigError, match="memory limit 'lots' is not a size"):  # before a cluster starts
        run_distributed(items, tmp_path / "bad", spec, job, n_workers=1, processes=False, memory_limit="lots")
    assert not (tmp_path / "bad").exists()


def test_resume_skips_finished_photos_and_redoes_changed_ones(env, tmp_path):
    spec, job = env["spec"], env["job"]
    src = tmp_path / "in"
    src.mkdir()
    items = []
    for p in env["photos"][:2]:
        q = src / p.name
        q.write_bytes(p.read_bytes())
        items.append(str(q))
    out = tmp_path / "out"
    first = run_distributed(items, out, spec, job, n_workers=1, processes=False)
    assert first.counts["ok"] == 2
    stamp = {i: (out / RECORDS_DIR / f"{item_key(i)}.json").stat().st_mtime_ns for i in items}
    # Change the second photo's bytes: only it is redone.
    Path(items[1]).write_bytes(env["photos"][2].read_bytes())
    second = run_distributed(items, out, spec, job, n_workers=1, processes=False)
    assert second.counts == {"total": 2, "ok": 2, "failed": 0}
    assert any("resumed" in n for n in second.inputs[0].notes)
    assert not any("resumed" in n for n in second.inputs[1].notes)
    assert (out / RECORDS_DIR / f"{item_key(items[0])}.json").stat().st_mtime_ns == stamp[items[0]]
    assert (out / RECORDS_DIR / f"{item_key(items[1])}.json").stat().st_mtime_ns != stamp[items[1]]
    # Another job (a different edit) redoes everything.
    third = run_distributed(items, out, spec, PhotoJob.from_lists([{"age": -1.0}], whole_image=True),
                            n_workers=1, processes=False)
    assert not any("resumed" in n for r in third.inputs for n in r.notes)


def _fail_on_p1(monkeypatch, error: BaseException) -> None:
    """Makes the per-photo work raise ``error`` for p1.png (the other photos run as usual)."""
    import dhr.jobs

    real = dhr.jobs.process_photo

    def flaky(pipe, item, tree, job, rec, reporter=None, **kw):
        if item.endswith("p1.png"):
            raise error
        return real(pipe, item, tree, job, rec, reporter, **kw)

    monkeypatch.setattr(dhr.jobs, "process_photo", flaky)


def test_worker_side_crash_is_recorded_and_others_finish(env, tmp_path, monkeypatch):
    _fail_on_p1(monkeypatch, KeyError("simulated crash outside the handled error types"))
    items = [str(p) for p in env["photos"]]
    record = run_distributed(items, tmp_path / "out", env["spec"], env["job"], n_workers=1, processes=False)
    status = {Path(r.path).name: r.status for r in record.inputs}
    assert status == {"p0.png": "ok", "p1.png": "failed", "p2.png": "ok"}
    bad = next(r for r in record.inputs if r.status == "failed")
    assert bad.error_type == "KeyError" and "simulated crash" in bad.error
    assert any("worker" in n for n in bad.notes)


def test_a_bug_in_dhr_surfaces_and_keeps_finished_photos(env, tmp_path, monkeypatch):
    """A TypeError inside the per-photo work is a bug, not a failed photo: it stops the batch and
    propagates (the CLI exits 4), the photo is recorded failed, and finished photos keep their records."""
    _fail_on_p1(monkeypatch, TypeError("simulated bug: process_photo() got an unexpected keyword argument"))
    items = [str(p) for p in env["photos"]]
    out = tmp_path / "out"
    with pytest.raises(TypeError, match="simulated bug"):
        run_distributed(items, out, env["spec"], env["job"], n_workers=1, processes=False)
    run = {Path(i["path"]).name: i for i in json.loads((out / "run.json").read_text())["inputs"]}
    assert run["p1.png"]["status"] == "failed" and run["p1.png"]["error_type"] == "TypeError"
    assert any("bug in dhr" in n for n in run["p1.png"]["notes"])
    assert run["p0.png"]["status"] == "ok"  # finished before the bug: kept
    worker_record = json.loads((out / RECORDS_DIR / f"{item_key(items[1])}.json").read_text())
    assert worker_record["status"] == "failed" and worker_record["error_type"] == "TypeError"


def test_bad_worker_count(env, tmp_path):
    from dhr.errors import ConfigError

    with pytest.raises(ConfigError, match="n_workers=0"):
        run_distributed([str(env["photos"][0])], tmp_path, env["spec"], env["job"], n_workers=0)


def test_cli_dist_with_worker_processes(env, tmp_path):
    """Two real worker processes through `dhr dist`; outputs and run.json as `dhr run` writes them."""
    from typer.testing import CliRunner

    from dhr.cli import build_app
    from tests.pipeline_fixtures import tiny_config_file

    cfg = tiny_config_file(tmp_path)
    out = tmp_path / "out"
    args = ["dist", str(env["root"] / "in"), "--model", env["spec"].model, "--config", str(cfg),
            "--edit", "smile=-1", "--whole-image", "--workers", "2", "-q", "-o", str(out)]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 1, res.output  # the broken file fails, the three photos succeed
    run = json.loads((out / "run.json").read_text())
    assert run["counts"] == {"total": 4, "ok": 3, "failed": 1}
    assert run["model"]["name"] == "tiny-test" and run["options"]["engine"]["workers"] == 2
    for stem in ("p0", "p1", "p2"):
        assert (out / "edits" / "smile-1" / f"{stem}_whole.png").is_file()
        assert (out / "bundles" / f"{stem}_whole.safetensors").is_file()
    res = CliRunner().invoke(build_app(), ["dist", str(env["photos"][0]), "--edit", "nosuch=1", "--model",
                                           env["spec"].model, "-q", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2 and "nosuch" in res.output


def test_spec_overrides_change_the_pipeline_and_fingerprint(env):
    import dataclasses

    spec = dataclasses.replace(env["spec"], overrides=("refine.steps=1",))
    assert spec.fingerprint() != env["spec"].fingerprint()
    assert spec.build().config.refine.steps == 1


def test_cli_dist_is_quiet_and_workers_get_the_wait_policy(env, tmp_path):
    """A successful `dhr dist` in a fresh process prints no dask logs; each worker ran with the passive
    OpenMP wait policy dhr chose (it must be in the worker's environment before torch loads)."""
    import os
    import subprocess
    import sys

    from dhr.distributed import quiet_dask_logs
    from tests.pipeline_fixtures import tiny_config_file

    src = str(Path(__file__).resolve().parents[1] / "src")
    penv = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "DHR_THREADS")}
    penv["PYTHONPATH"] = src + os.pathsep + penv.get("PYTHONPATH", "")
    out = tmp_path / "out"
    code = "import sys; from dhr.cli import main; sys.argv = ['dhr', *sys.argv[1:]]; main()"
    args = ["dist", str(env["photos"][0]), "--model", env["spec"].model, "--config", str(tiny_config_file(tmp_path)),
            "--whole-image", "--workers", "1", "-o", str(out)]
    r = subprocess.run([sys.executable, "-c", code, *args], env=penv, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "distributed." not in r.stderr and "INFO" not in r.stderr, r.stderr
    rec = json.loads(next((out / RECORDS_DIR).glob("*.json")).read_text())
    assert rec["threads"] == {"torch": 1, "omp_wait_policy": "PASSIVE"}
    import logging

    quiet_dask_logs(True)
    assert logging.getLogger("distributed").level == logging.INFO
    quiet_dask_logs(False)
    assert logging.getLogger("distributed").level == logging.ERROR
