"""Tests of `dhr run | align | invert | edit | models` on a tiny random model with tiny step counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dhr.cli.run import expand_inputs, parse_edit_options, parse_sweep_option, register
from dhr.errors import EditError
from tests.pipeline_fixtures import (
    make_tiny_model,
    real_photo,
    synthetic_photo,
    tiny_config_file,
)

runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = make_tiny_model(root / "model")
    cfg = tiny_config_file(root)
    inputs = root / "in"
    synthetic_photo(inputs / "a.png")
    (inputs / "broken.jpg").write_bytes(b"this is not a jpeg")
    return {"root": root, "model": str(model), "config": str(cfg), "inputs": inputs}


def _invoke(*args: str):
    return runner.invoke(_app(), [str(a) for a in args])


def _common(env) -> list[str]:
    return ["--model", env["model"], "--config", env["config"], "--device", "cpu"]


def test_run_batch_with_corrupt_input(env, tmp_path):
    out = tmp_path / "out"
    r = _invoke("run", env["inputs"], "--edit", "age=+2", "-e", "age=-1,smile=1", "-o", out, "--whole-image",
                "--quiet", *_common(env))
    assert r.exit_code == 1, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["status"] == "partial" and rec["counts"] == {"total": 2, "ok": 1, "failed": 1}
    bad = next(i for i in rec["inputs"] if i["path"].endswith("broken.jpg"))
    assert bad["status"] == "failed" and bad["error_type"] == "ImageError" and "not a readable image" in bad["error"]
    good = next(i for i in rec["inputs"] if i["path"].endswith("a.png"))
    assert good["status"] == "ok" and len(good["sha256"]) == 64
    face = good["faces"][0]
    assert face["stem"] == "a_whole" and face["whole_image"] and face["method"] == "dhr"
    assert set(face["final_losses"]) == {"loss_in", "loss_out"}
    assert any("whole image" in w for w in good["warnings"])
    outs = face["outputs"]
    for key in ("aligned", "inversion", "pasted_inversion"):
        assert Path(outs[key]).is_file()
    assert Path(outs["masks"]["mask"]).is_file()
    assert Path(outs["bundle"] + ".safetensors").is_file() and Path(outs["bundle"] + ".json").is_file()
    assert set(outs["edits"]) == {"age+2", "age-1_smile+1"}
    assert (out / "edits" / "age+2" / "a_whole.png").is_file()
    assert (out / "pasted" / "a_whole_age-1_smile+1.png").is_file()
    assert rec["model"]["name"] == "tiny-test" and len(rec["model"]["generator_sha256"]) == 64
    assert rec["config"]["refine"]["steps"] == 2 and rec["device"] == "cpu" and rec["seed"] == 0
    assert rec["environment"]["torch"] and {"embed_s", "coarse_s", "refine_s"} <= set(rec["timings"])
    assert rec["environment"]["torch_threads"] >= 1 and rec["environment"]["threads_source"]


def test_run_batch_option_groups_photos_with_per_photo_results(env, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image
    from safetensors.numpy import load_file

    from dhr.pipeline import Pipeline

    groups = []
    invert_many = Pipeline.invert_many

    def recording(self, images, **kw):
        groups.append([Path(p.path).name for p in images])
        return invert_many(self, images, **kw)

    monkeypatch.setattr(Pipeline, "invert_many", recording)

    inputs = tmp_path / "in"
    for k, name in enumerate(("a.png", "b.png", "c.png")):
        synthetic_photo(inputs / name, seed=k)
    (inputs / "b2_broken.png").write_bytes(b"not an image")
    args = ["--edit", "age=+1", "--whole-image", "--quiet", *_common(env)]
    r1 = _invoke("run", inputs, "-o", tmp_path / "one", *args)
    rb = _invoke("run", inputs, "-o", tmp_path / "grouped", "--batch", "3", *args)
    assert r1.exit_code == 1 and rb.exit_code == 1, rb.output
    rec = json.loads((tmp_path / "grouped" / "run.json").read_text())
    assert rec["options"]["batch"] == 3
    assert groups == [["a.png", "b.png"], ["c.png"]]  # the broken file failed on loading, before the engine
    for i in rec["inputs"]:
        for face in i["faces"]:
            assert face["timings"]["align_s"] > 0 and face["timings"]["refine_batch_s"] > 0
    assert "refine_batch_s" not in rec["timings"]  # shared by a batch's faces: not summed into the totals
    status = {Path(i["path"]).name: i["status"] for i in rec["inputs"]}
    assert status == {"a.png": "ok", "b.png": "ok", "b2_broken.png": "failed", "c.png": "ok"}
    for i in rec["inputs"]:  # each photo keeps its own alignment warning (whole image, no face)
        if i["status"] == "ok":
            assert any(Path(i["path"]).name in w and "whole image" in w for w in i["warnings"]), i["warnings"]
            assert all(Path(i["path"]).name in w for w in i["warnings"] if "whole image" in w)
    for name in ("a_whole", "b_whole", "c_whole"):
        x = load_file(tmp_path / "one" / "bundles" / f"{name}.safetensors")
        y = load_file(tmp_path / "grouped" / "bundles" / f"{name}.safetensors")
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
        px = np.asarray(Image.open(tmp_path / "one" / "pasted" / f"{name}_age+1.png"))
        assert np.array_equal(px, np.asarray(Image.open(tmp_path / "grouped" / "pasted" / f"{name}_age+1.png")))
    # a rerun resumes the finished photos and groups only what is left
    (tmp_path / "grouped" / "bundles" / "c_whole.safetensors").unlink()
    rb = _invoke("run", inputs, "-o", tmp_path / "grouped", "--batch", "3", *args)
    rec = json.loads((tmp_path / "grouped" / "run.json").read_text())
    notes = {Path(i["path"]).name: " ".join(i["notes"]) for i in rec["inputs"]}
    assert "resumed" in notes["a.png"] and "resumed" in notes["b.png"] and "resumed" not in notes["c.png"]
    assert (tmp_path / "grouped" / "bundles" / "c_whole.safetensors").is_file()
    assert groups[-1] == ["c.png"] and len(groups) == 3


def test_dhr_chooses_one_thread_for_a_small_model(env, tmp_path):
    # a fresh process: dhr sets the passive wait policy before torch loads, picks the usable CPUs,
    # then drops to one thread for the tiny model; --threads 2 is kept
    import os
    import subprocess
    import sys

    from dhr.threads import default_threads

    src = str(Path(__file__).resolve().parents[2] / "src")
    penv = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "DHR_THREADS")}
    penv["PYTHONPATH"] = src + os.pathsep + penv.get("PYTHONPATH", "")
    code = "import sys; from dhr.cli import main; sys.argv = ['dhr', *sys.argv[1:]]; main()"
    for extra, want in (([], ("default, small model", 1) if default_threads() > 1 else ("default", 1)),
                        (["--threads", "2"], ("--threads", 2))):
        out = tmp_path / f"o{len(extra)}"
        r = subprocess.run([sys.executable, "-c", code, *extra, "run", str(env["inputs"] / "a.png"), "-o", str(out),
                            "--whole-image", "-q", *_common(env)], env=penv, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        e = json.loads((out / "run.json").read_text())["environment"]
        assert (e["threads_source"], e["torch_threads"]) == want


def test_bad_edit_name_lists_valid(env, tmp_path):
    r = _invoke("run", env["inputs"] / "a.png", "--edit", "agee=+2", "-o", tmp_path / "o", *_common(env))
    assert r.exit_code == 2
    assert "unknown direction 'agee'" in r.output and "age, smile" in r.output
    assert not (tmp_path / "o" / "run.json").exists()
    r = _invoke("run", env["inputs"] / "a.png", "--edit", "age", "-o", tmp_path / "o", *_common(env))
    assert r.exit_code == 2 and "NAME=STRENGTH" in r.output


def test_usage_errors(env, tmp_path):
    r = _invoke("run", env["inputs"] / "a.png", "--model", "no-such-model", "-o", tmp_path)
    assert r.exit_code == 2 and "unknown model 'no-such-model'" in r.output and "bundled models" in r.output
    r = _invoke("run", env["inputs"] / "a.png", "--method", "gan", "-o", tmp_path, *_common(env))
    assert r.exit_code == 2 and "method" in r.output
    r = _invoke("run", env["inputs"] / "a.png", "--quiet", "--json", "-o", tmp_path, *_common(env))
    assert r.exit_code == 2
    r = _invoke("run", env["inputs"] / "a.png", "--face-index", "0", "--all-faces", "-o", tmp_path, *_common(env))
    assert r.exit_code == 2
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text("[refine]\nstepz = 3\n")
    r = _invoke("run", env["inputs"] / "a.png", "-o", tmp_path, "--model", env["model"], "--config", bad_cfg)
    assert r.exit_code == 2 and "stepz" in r.output


def test_nothing_succeeded(env, tmp_path):
    out = tmp_path / "o"
    r = _invoke("run", env["inputs"] / "broken.jpg", env["inputs"] / "a.png", tmp_path / "missing.png",
                "-o", out, "--quiet", *_common(env))
    assert r.exit_code == 3, r.output
    rec = json.loads((out / "run.json").read_text())
    kinds = {Path(i["path"]).name: i["error_type"] for i in rec["inputs"]}
    assert kinds == {"broken.jpg": "ImageError", "a.png": "FaceNotFoundError", "missing.png": "ImageError"}
    assert rec["status"] == "failed"


def test_invert_then_edit_bundles_json_events(env, tmp_path):
    out = tmp_path / "inv"
    r = _invoke("invert", env["inputs"] / "a.png", "-o", out, "--whole-image", "--method", "encoder", "--json",
                *_common(env))
    assert r.exit_code == 0, r.output
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert events[0]["event"] == "batch" and events[-1]["event"] == "done" and events[-1]["exit_code"] == 0
    assert (out / "bundles" / "a_whole.safetensors").is_file()
    assert not (out / "edits").exists()
    ed = tmp_path / "ed"
    r = _invoke("edit", out / "bundles", "--edit", "smile=+2", "-o", ed, "--model", env["model"], "--device", "cpu",
                "--quiet")
    assert r.exit_code == 0, r.output
    assert (ed / "edits" / "smile+2" / "a_whole.png").is_file()
    assert (ed / "pasted" / "a_whole_smile+2.png").is_file()
    rec = json.loads((ed / "run.json").read_text())
    assert rec["command"] == "edit" and rec["inputs"][0]["status"] == "ok"
    # A bundle that does not exist is recorded; the other one still succeeds.
    r = _invoke("edit", out / "bundles" / "a_whole.json", tmp_path / "nope", "--edit", "age=1", "-o", tmp_path / "e2",
                "--model", env["model"], "--device", "cpu", "--quiet")
    assert r.exit_code == 1
    rec = json.loads((tmp_path / "e2" / "run.json").read_text())
    assert [i["status"] for i in rec["inputs"]] == ["ok", "failed"]
    assert rec["inputs"][1]["error_type"] == "CheckpointError"


def test_align(env, tmp_path):
    r = _invoke("align", env["inputs"] / "a.png", "-o", tmp_path, "--whole-image", "--model", env["model"], "-q")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "aligned" / "a_whole.png").is_file()


def test_models_show_and_list(env):
    r = _invoke("models", "show", env["model"], "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert [d["name"] for d in info["directions"]] == ["age", "smile"]
    assert set(info["components"]) == {"generator", "encoder", "perceptual", "classifier"}
    assert info["training"] == {"kimg": 0, "steps": 0}
    r = _invoke("models", "show", env["model"])
    assert r.exit_code == 0 and "generator sha256" in r.output and "smile" in r.output
    r = _invoke("models", "show", "no-such-model")
    assert r.exit_code == 2 and "unknown model" in r.output
    r = _invoke("models", "list", "--json")
    assert r.exit_code == 0 and isinstance(json.loads(r.stdout), list)


@pytest.mark.parametrize("cmd", ["run", "align", "invert", "edit", "serve"])
def test_help_has_examples(cmd):
    r = _invoke(cmd, "--help")
    assert r.exit_code == 0 and "Example" in r.output and f"dhr {cmd}" in r.output


def test_expand_inputs(tmp_path):
    for name in ("b.png", "a.jpg", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    got = expand_inputs([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "zz*.png"), "missing.jpg"])
    assert got == [str(tmp_path / "a.jpg"), str(tmp_path / "b.png"), str(tmp_path / "zz*.png"), "missing.jpg"]


def test_parse_edit_options():
    assert parse_edit_options(["age=+2", "smile=-1, pose=0.5"]) == [{"age": 2.0}, {"smile": -1.0, "pose": 0.5}]
    with pytest.raises(EditError):
        parse_edit_options(["age:2"])


def test_real_photo_run(env, tmp_path):
    path = real_photo()
    if path is None:
        pytest.skip("no shared photo (../shared/datasets/photos) beside the checkout")
    out = tmp_path / "o"
    r = _invoke("run", path, "--edit", "age=+1", "-o", out, "--quiet", *_common(env))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    face = rec["inputs"][0]["faces"][0]
    assert face["stem"] == f"{path.stem}_face0" and not face["whole_image"]
    assert Path(face["outputs"]["masks"]["mask_parsing"]).is_file()
    from PIL import Image

    assert Image.open(face["outputs"]["edits"]["age+1"]["pasted"]).size == Image.open(path).size


def test_parse_sweep_option():
    assert parse_sweep_option("age") == ("age", (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0))
    assert parse_sweep_option("smile=-1:1:5") == ("smile", (-1.0, -0.5, 0.0, 0.5, 1.0))
    assert parse_sweep_option("smile=2:2:1") == ("smile", (2.0,))
    for bad in ("age=1:2", "age=a:1:3", "age=-1:1:0", "age=-1:1:2.5", "", "a b"):
        with pytest.raises(EditError):
            parse_sweep_option(bad)


def test_run_sweeps_and_sheets(env, tmp_path):
    import numpy as np
    from PIL import Image

    out = tmp_path / "out"
    r = _invoke("run", env["inputs"] / "a.png", "--edit", "age=+2", "--sweep", "smile=-2:2:5", "--sweep", "age",
                "-o", out, "--whole-image", "--quiet", *_common(env))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["options"]["sweep"] == ["smile=-2:2:5", "age"]
    outs = rec["inputs"][0]["faces"][0]["outputs"]
    sw = outs["sweeps"]
    assert set(sw) == {"smile", "age"}
    assert sw["smile"]["strengths"] == [-2.0, -1.0, 0.0, 1.0, 2.0] and len(sw["age"]["strengths"]) == 7
    assert sw["smile"]["grid"] == str(out / "sweeps" / "a_whole_smile.png")
    grid = np.asarray(Image.open(sw["smile"]["grid"]))
    assert grid.shape[1] > 5 * 32 and grid.shape[0] > 32  # five 32 px cells plus labels
    gif = Image.open(sw["smile"]["gif"])
    # Watchable: the pasted photo with its long side at 512 px, >= 24 frames, >= 3 s per loop.
    photo = Image.open(env["inputs"] / "a.png")
    assert max(gif.size) == 512 and abs(gif.size[0] / gif.size[1] - photo.width / photo.height) < 0.05
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert gif.n_frames >= 24 and sum(durations) >= 3000, (gif.n_frames, sum(durations))
    assert Path(sw["smile"]["mp4"]).is_file() and Path(sw["smile"]["mp4"]).stat().st_size > 0
    sheet = np.asarray(Image.open(outs["sheet"]))
    assert outs["sheet"] == str(out / "sheets" / "a_whole.png")
    # input, mask, inversion, age+2: four 128 px columns
    assert sheet.shape[1] >= 4 * 128 and sheet.shape[0] >= 128


def test_sweep_frames_match_edits(env, tmp_path):
    import numpy as np
    from PIL import Image

    out = tmp_path / "out"
    r = _invoke("run", env["inputs"] / "a.png", "--edit", "smile=+1", "--sweep", "smile=-1:1:3", "-o", out,
                "--whole-image", "--quiet", "--method", "encoder", *_common(env))
    assert r.exit_code == 0, r.output
    outs = json.loads((out / "run.json").read_text())["inputs"][0]["faces"][0]["outputs"]
    gif = Image.open(outs["sweeps"]["smile"]["gif"])
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    n = (len(frames) + 2) // 2  # ping-pong: n strengths from -1 to +1, then back
    assert n % 2 == 1 and len(frames) == 2 * n - 2

    def shown(path):  # a pasted output as the animation shows it (long side 512)
        im = Image.open(path).convert("RGB")
        return np.asarray(im.resize(frames[0].shape[1::-1], Image.LANCZOS)).astype(int)

    inv, edited = shown(outs["pasted_inversion"]), shown(outs["edits"]["smile+1"]["pasted"])
    body = (slice(40, None), slice(None))  # below the strength label
    # GIF palettes quantise colours: compare with a tolerance, and check the frames differ.
    assert np.abs(frames[n // 2] - inv)[body].mean() < 8 and np.abs(frames[n - 1] - edited)[body].mean() < 8
    assert np.abs(frames[0] - frames[n - 1])[body].mean() > np.abs(frames[n - 1] - edited)[body].mean()


def test_sweep_without_ffmpeg_and_edit_sweep(env, tmp_path, monkeypatch):
    import sys

    inv = tmp_path / "inv"
    r = _invoke("invert", env["inputs"] / "a.png", "-o", inv, "--whole-image", "--method", "encoder", "-q",
                *_common(env))
    assert r.exit_code == 0, r.output
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails as if not installed
    ed = tmp_path / "ed"
    r = _invoke("edit", inv / "bundles", "--sweep", "age=-1:1:3", "-o", ed, "--model", env["model"], "--device",
                "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    item = json.loads((ed / "run.json").read_text())["inputs"][0]
    sw = item["faces"][0]["outputs"]["sweeps"]["age"]
    assert sw["mp4"] is None and Path(sw["gif"]).is_file() and Path(sw["grid"]).is_file()
    assert not list((ed / "sweeps").glob("*.mp4"))
    assert any("MP4" in w and "imageio-ffmpeg" in w for w in item["warnings"]), item["warnings"]
    assert Path(item["faces"][0]["outputs"]["sheet"]).is_file()
    # Bad sweeps are usage errors.
    r = _invoke("edit", inv / "bundles", "--sweep", "agee", "-o", ed, "--model", env["model"], "--device", "cpu")
    assert r.exit_code == 2 and "unknown direction 'agee'" in r.output
    r = _invoke("edit", inv / "bundles", "-o", ed, "--model", env["model"], "--device", "cpu")
    assert r.exit_code == 2 and "--sweep" in r.output


def test_set_overrides_config(env, tmp_path):
    out = tmp_path / "out"
    r = _invoke("run", env["inputs"] / "a.png", "--whole-image", "--quiet", "--set", "refine.steps=3",
                "--set", "segment.theta_skin=0.25", "-o", out, *_common(env))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["refine"]["steps"] == 3 and rec["config"]["segment"]["theta_skin"] == 0.25
    assert rec["config"]["refine"]["weight_steps"] == 1  # from --config, not replaced
    r = _invoke("run", env["inputs"] / "a.png", "--whole-image", "--set", "refine.stepz=3", "-o", tmp_path / "x",
                *_common(env))
    assert r.exit_code == 2 and "refine.stepz" in r.output
    r = _invoke("invert", env["inputs"] / "a.png", "--whole-image", "--set", "bad", "-o", tmp_path / "y",
                *_common(env))
    assert r.exit_code == 2 and "KEY=VALUE" in r.output


def test_ood_mask_option(env, tmp_path):
    import numpy as np
    from PIL import Image

    m = np.zeros((40, 48), np.uint8)
    m[:, :20] = 255
    mask = tmp_path / "mask.png"
    Image.fromarray(m).save(mask)
    out = tmp_path / "out"
    r = _invoke("run", env["inputs"] / "a.png", "--whole-image", "--quiet", "--ood-mask", mask, "-o", out, *_common(env))
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    face = rec["inputs"][0]["faces"][0]
    assert any("given by the user" in n for n in face["notes"])
    saved = np.asarray(Image.open(face["outputs"]["masks"]["mask"]))
    R = saved.shape[0]  # rows outside the photo (whole-image padding) stay in domain
    assert saved[R // 4: -R // 4, :4].max() == 0 and saved[:, -4:].min() == 255  # black = out of domain
    r = _invoke("run", env["inputs"], "--whole-image", "--ood-mask", mask, "-o", tmp_path / "x", *_common(env))
    assert r.exit_code == 2 and "one photo" in r.output
    r = _invoke("invert", env["inputs"] / "a.png", "--ood-mask", tmp_path / "nope.png", "-o", tmp_path / "y",
                *_common(env))
    assert r.exit_code == 2 and "not found" in r.output


def test_paste_option_is_used_and_recorded(env, tmp_path):
    import numpy as np
    from PIL import Image

    photo = np.asarray(Image.open(env["inputs"] / "a.png").convert("RGB"))
    for mode, expect in (("auto", "delta"), ("crop", "crop")):
        out = tmp_path / mode
        r = _invoke("run", env["inputs"] / "a.png", "--edit", "age=+2", "--paste", mode, "-o", out, "--whole-image",
                    "--quiet", *_common(env))
        assert r.exit_code == 0, r.output
        rec = json.loads((out / "run.json").read_text())
        face = rec["inputs"][0]["faces"][0]
        assert rec["options"]["paste"] == mode and face["paste_mode"] == expect
        unedited = np.asarray(Image.open(face["outputs"]["pasted_inversion"]).convert("RGB"))
        assert np.array_equal(unedited, photo) == (expect == "delta")
    r = _invoke("edit", tmp_path / "crop" / "bundles", "--edit", "age=+1", "--paste", "crop", "-o", tmp_path / "ed",
                "--model", env["model"], "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "ed" / "run.json").read_text())
    assert rec["options"]["paste"] == "crop" and rec["inputs"][0]["faces"][0]["paste_mode"] == "crop"
    r = _invoke("run", env["inputs"] / "a.png", "--paste", "blend", "-o", tmp_path / "bad", *_common(env))
    assert r.exit_code == 2 and "paste_mode" in r.output


def test_missing_perceptual_weights_and_negative_face_index_fail_once_before_the_batch(env, tmp_path, monkeypatch):
    """Missing weights used to fail (and retry the download for) every photo; now one usage error."""
    monkeypatch.setenv("DHR_OFFLINE", "1")
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DHR_WEIGHTS_PATH", raising=False)
    for cmd in ("run", "invert"):
        out = tmp_path / cmd
        r = _invoke(cmd, env["inputs"], "-o", out, "--whole-image", "--quiet", "--perceptual", "vgg", *_common(env))
        assert r.exit_code == 2, r.output
        assert "vgg16" in r.output and "dhr weights add vgg16" in r.output, r.output
        assert not (out / "run.json").exists()  # nothing ran
    monkeypatch.delenv("DHR_OFFLINE")
    r = _invoke("run", env["inputs"], "-o", tmp_path / "neg", "--face-index", "-1", *_common(env))
    assert r.exit_code == 2 and "--face-index -1 must be >= 0" in r.output, r.output


def test_edit_warns_when_the_source_photo_is_gone(env, tmp_path):
    import shutil

    photo = tmp_path / "src" / "a.png"
    photo.parent.mkdir()
    shutil.copy(env["inputs"] / "a.png", photo)
    r = _invoke("invert", photo, "-o", tmp_path / "inv", "--whole-image", "--method", "encoder", "--quiet",
                *_common(env))
    assert r.exit_code == 0, r.output
    photo.unlink()
    r = _invoke("edit", tmp_path / "inv" / "bundles", "--edit", "age=1", "-o", tmp_path / "ed", "--model",
                env["model"], "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "ed" / "run.json").read_text())
    (warning,) = [w for w in rec["inputs"][0]["warnings"] if "pasting unavailable" in w]
    assert str(photo) in warning and "not found" in warning
    assert (tmp_path / "ed" / "edits" / "age+1" / "a_whole.png").is_file()
    assert not (tmp_path / "ed" / "pasted").exists()
