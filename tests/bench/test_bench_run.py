"""The benchmark runner end to end on a tiny random model with tiny step counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from dhr.bench.report import summarize, verdicts
from dhr.bench.run import (
    BenchConfig,
    parse_ablations,
    parse_methods,
    run_benchmark,
    scale_steps,
)
from dhr.cli.bench import register
from dhr.config import InvertConfig
from dhr.errors import ConfigError, ImageError
from tests.pipeline_fixtures import TINY_CONFIG, make_tiny_model, synthetic_photo

BASE = InvertConfig.from_dict(TINY_CONFIG)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = make_tiny_model(root / "model")
    data = root / "data"
    for i in range(3):
        synthetic_photo(data / f"im{i}.png", size=(32, 32), seed=i)
    synthetic_photo(data / "wide.png", size=(48, 40), seed=7)  # resized (and centre-cropped) with a note
    (data / "broken.png").write_bytes(b"not an image")
    return {"root": root, "model": str(model), "data": data}


@pytest.fixture(scope="module")
def result(env):
    cfg = BenchConfig(data=env["data"], out=env["root"] / "out", model=env["model"], base=BASE, occlusion=True,
                      ablations=("weight-only", "theta=0.5"), identity="none", parser="none", lpips="model",
                      qualitative=1)
    return run_benchmark(cfg, command="dhr bench --test")


def test_results_json_has_every_section(env, result):
    out = env["root"] / "out"
    data = json.loads((out / "results.json").read_text())
    assert set(data) >= {"benchmark", "protocol", "environment", "images", "failures", "summary", "verdicts", "files"}
    labels = data["benchmark"]["methods"]
    assert labels == ["encoder", "optim", "pti", "feature", "dhr", "dhr[weight-only]", "dhr[theta=0.5]"]
    assert data["protocol"]["eval_resolution"] == 32 and "model" in data["protocol"]["lpips"]
    assert data["protocol"]["identity"] == "none"
    assert data["benchmark"]["steps"] == {"optim": 2, "coarse": 2, "refine": 2, "refine_weight": 1, "pti": 2}
    scored = [r for r in data["images"] if r["methods"]]
    assert len(scored) == 4
    for rec in scored:
        assert rec["reference_mask"]["source"] == "dhr"
        assert rec["occluder"]["coverage"] > 0
        for label in labels:
            m = rec["methods"][label]["metrics"]
            for key in ("mse", "psnr", "psnr_ref", "ssim", "lpips", "in.mse", "ood.lpips", "occ_in.mse", "occ_out.lpips"):
                assert key in m
            assert m["psnr"] == pytest.approx(10 * math.log10(4 / m["mse"]), abs=1e-3)
            assert m["psnr"] - m["psnr_ref"] == pytest.approx(10 * math.log10(2), abs=1e-3)
            assert rec["methods"][label]["time_s"] > 0
            edits = rec["methods"][label]["edits"]
            assert "edit.age.attr_per_unit" in edits and "edit.age.ood_lpips" in edits and "edit.age.occ_mse" in edits
            assert ("iou_ood" in m) == label.startswith("dhr")
    wide = next(r for r in data["images"] if r["image"] == "wide.png")
    assert any("resized from 48x40" in n for n in wide["notes"])
    # Embedding-only methods are rendered unchanged: the weight-only ablation differs from the encoder.
    assert data["summary"]["encoder"]["mse"]["n"] == 4


def test_failure_of_one_image_is_recorded_and_the_run_goes_on(result):
    fails = result["failures"]
    assert [f["image"] for f in fails] == ["broken.png"] and fails[0]["stage"] == "load"


def test_markdown_and_plots_exist(env, result):
    out = env["root"] / "out"
    md = (out / "report.md").read_text()
    assert "| method | MSE | PSNR (dB)" in md and "## Occlusion" in md and "## Editing" in md
    assert "dhr bench --test" in md and "broken.png" in md
    # Each main verdict is paired, has its interval, and the report says it in words.
    data = json.loads((out / "results.json").read_text())
    mse = [v for v in data["verdicts"] if v["metric"] == "mse"]
    assert {v["other"] for v in mse} == {"encoder", "optim", "pti", "feature", "dhr[weight-only]", "dhr[theta=0.5]"}
    for v in mse:
        a, b = data["summary"]["dhr"]["mse"]["mean"], data["summary"][v["other"]]["mse"]["mean"]
        assert v["reference_mean"] == pytest.approx(a) and v["other_mean"] == pytest.approx(b)
        assert v["better"] == (a < b) and v["pairs"] == 4 and v["ci_low"] <= v["diff"] <= v["ci_high"]
        if v["ties"] == v["pairs"]:
            word = "ties with"
        elif not v["significant"]:
            word = "shows no significant difference from"
        else:
            word = "beats" if v["ci_high"] < 0 else "is worse than"
        assert f"- dhr {word} {v['other']} on " in md and v["text"] in md
    for name in ("metrics_by_method.png", "fidelity_vs_editability.png", "qualitative_0.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 100 and im.size[1] > 100
    assert not (out / "qualitative_1.png").exists()


def test_ablation_configs_map_to_config_fields(result):
    cfgs = result["benchmark"]["configs"]
    assert cfgs["dhr[weight-only]"]["refine"]["feature_lr"] == 0.0
    assert cfgs["dhr[theta=0.5]"]["segment"]["theta"] == 0.5
    assert cfgs["pti"]["embed"] == cfgs["dhr"]["embed"] == cfgs["feature"]["embed"] == "encoder"
    # Weight-only keeps the generator feature: its out-of-domain error is not better than DHR's.
    s = result["summary"]
    assert s["dhr[weight-only]"]["ood.mse"]["mean"] >= s["dhr"]["ood.mse"]["mean"] - 1e-6


def test_a_failed_method_is_recorded_and_a_bug_surfaces(env, tmp_path, monkeypatch):
    """A DHRError of one method on one image is a failure with its stage and reason (the rest goes on);
    a TypeError is a bug in dhr and stops the run instead of being recorded for every image."""
    import dhr.bench.run as bench_run
    from dhr.errors import ShapeError

    real = bench_run.invert
    calls = []

    def invert(G, images, **kw):
        calls.append(kw["config"].method)
        if len(calls) == 2:  # the second image's encoder inversion
            raise ShapeError("simulated: a crop the encoder cannot take")
        return real(G, images, **kw)

    monkeypatch.setattr(bench_run, "invert", invert)
    cfg = dict(data=env["data"], model=env["model"], base=BASE, methods=("encoder",), identity="none",
               parser="none", lpips="model", n=4, qualitative=0)  # broken.png + 3 faces
    res = run_benchmark(BenchConfig(out=tmp_path / "a", **cfg))
    failed = [f for f in res["failures"] if f["stage"] == "invert"]
    assert len(failed) == 1 and failed[0]["method"] == "encoder" and "ShapeError: simulated" in failed[0]["error"]
    assert sum(1 for r in res["images"] if "metrics" in r["methods"].get("encoder", {})) == 2

    def buggy(G, images, **kw):
        raise TypeError("simulated bug: invert() got an unexpected keyword argument")

    monkeypatch.setattr(bench_run, "invert", buggy)
    with pytest.raises(TypeError, match="simulated bug"):
        run_benchmark(BenchConfig(out=tmp_path / "b", **cfg))


def test_parse_helpers():
    assert parse_methods("encoder, dhr") == ("encoder", "dhr")
    with pytest.raises(ConfigError):
        parse_methods("encoder,bogus")
    specs = parse_ablations(["feature-only,no-parsing", "no-superpixels", "feature-res=8", "hybrid"])
    assert [s.label for s in specs] == ["dhr[feature-only]", "dhr[no-parsing]", "dhr[no-superpixels]",
                                        "dhr[feature-res=8]", "dhr[hybrid]"]
    assert specs[0].overrides == {"refine": {"tune": "none"}}
    assert specs[2].overrides == {"segment": {"use_superpixels": False}}
    with pytest.raises(ConfigError, match="unknown ablation"):
        parse_ablations(["theta=abc"])
    scaled = scale_steps(InvertConfig(), 0.1)
    assert (scaled.optim.steps, scaled.coarse.steps, scaled.refine.steps, scaled.refine.weight_steps,
            scaled.pti.steps) == (100, 4, 10, 5, 35)
    assert scale_steps(InvertConfig(), 1e-6).refine.steps == 1


def test_verdicts_on_constructed_results():
    recs = [{"image": f"i{k}", "methods": {"dhr": {"metrics": {"mse": 0.1, "psnr": 20.0}, "time_s": 2.0},
                                           "pti": {"metrics": {"mse": 0.2, "psnr": 17.0}, "time_s": 1.0}}}
            for k in range(3)]
    s = summarize(recs, ["dhr", "pti"])
    assert s["dhr"]["mse"] == {"mean": pytest.approx(0.1), "std": pytest.approx(0.0, abs=1e-12),
                               "median": pytest.approx(0.1), "n": 3}
    v = {x["metric"]: x for x in verdicts(recs, ["dhr", "pti"])}
    assert v["mse"]["better"] and v["mse"]["wins"] == 3 and v["mse"]["relative"] == pytest.approx(-0.5)
    assert "50.0% lower" in v["mse"]["text"]
    assert v["psnr"]["better"] and "+3.00 dB" in v["psnr"]["text"]
    assert not v["time_s"]["better"] and "dhr is worse than pti" in v["time_s"]["text"]
    assert v["mse"]["significant"] and v["mse"]["ci_low"] == v["mse"]["ci_high"] == pytest.approx(-0.1)
    assert verdicts(recs, ["pti"], reference="dhr") == []  # no dhr results: no verdicts


def test_bad_inputs(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images")
    with pytest.raises(ImageError, match="no images"):
        run_benchmark(BenchConfig(data=empty, out=tmp_path / "o", model=env["model"], base=BASE))
    with pytest.raises(ImageError, match="does not exist"):
        run_benchmark(BenchConfig(data=tmp_path / "missing", out=tmp_path / "o", model=env["model"]))
    with pytest.raises(ConfigError):
        BenchConfig(data=env["data"], out=tmp_path / "o", methods=("dhr", "magic"))
    with pytest.raises(ConfigError):
        BenchConfig(data=env["data"], out=tmp_path / "o", steps_scale=0)
    with pytest.raises(ImageError, match="--strict"):
        run_benchmark(BenchConfig(data=env["data"], out=tmp_path / "o", model=env["model"], base=BASE, strict=True,
                                  methods=("encoder",)))
    with pytest.raises(ConfigError, match="unknown directions"):
        run_benchmark(BenchConfig(data=env["data"], out=tmp_path / "o", model=env["model"], base=BASE,
                                  methods=("encoder",), edits=("nope",), n=1))


runner = CliRunner()


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the app into `bench`
        pass

    return app


def test_cli_exit_codes(env, tmp_path):
    bad = runner.invoke(_app(), ["bench", "--data", str(env["data"]), "--methods", "encoder,wizard",
                                 "--model", env["model"], "-o", str(tmp_path / "a")])
    assert bad.exit_code == 2 and "wizard" in bad.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(_app(), ["bench", "--data", str(empty), "--model", env["model"], "-o", str(tmp_path / "b")])
    assert res.exit_code == 2 and "no images" in res.output
    clean = tmp_path / "clean"
    synthetic_photo(clean / "a.png", size=(32, 32), seed=3)
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY_CONFIG))
    ok = runner.invoke(_app(), ["bench", "--data", str(clean), "--methods", "encoder,dhr", "--model", env["model"],
                                "--config", str(cfg), "--identity", "none", "--parser", "none", "--lpips", "model",
                                "--steps-scale", "0.5", "--strict", "--ablation", "feature-only", "-o", str(tmp_path / "c")])
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "c" / "results.json").read_text())
    assert data["benchmark"]["methods"] == ["encoder", "dhr", "dhr[feature-only]"]
    assert data["benchmark"]["steps"]["pti"] == 1 and data["failures"] == []
    partial = runner.invoke(_app(), ["bench", "--data", str(env["data"]), "--methods", "encoder", "--model",
                                     env["model"], "--config", str(cfg), "--identity", "none", "--parser", "none",
                                     "--lpips", "model", "--n", "5", "-o", str(tmp_path / "d")])
    assert partial.exit_code == 1, partial.output
    assert np.isfinite(json.loads((tmp_path / "d" / "results.json").read_text())["summary"]["encoder"]["mse"]["mean"])


def _metrics_by_image(res: dict) -> dict:
    return {img["image"]: {m: v.get("metrics") for m, v in img["methods"].items()} for img in res["images"]}


def test_shards_merge_to_the_unsharded_result(env, result, tmp_path):
    from dhr.bench.run import merge_results

    common = dict(data=env["data"], model=env["model"], base=BASE, occlusion=True,
                  ablations=("weight-only", "theta=0.5"), identity="none", parser="none", lpips="model",
                  qualitative=1)
    parts = []
    for i in range(2):
        r = run_benchmark(BenchConfig(out=tmp_path / f"s{i}", shard=(i, 2), **common), command=f"dhr bench --shard {i}/2")
        assert r["benchmark"]["shard"] == [i, 2]
        parts.append(r)
    assert sorted(len(p["images"]) for p in parts) == [2, 2]  # 4 loadable images over 2 shards
    merged = merge_results([tmp_path / "s1", tmp_path / "s0"], tmp_path / "merged")
    assert [i["image"] for i in merged["images"]] == [i["image"] for i in result["images"]]
    # Same seeds and occluders per image: every metric equals the unsharded run's.
    assert _metrics_by_image(merged) == _metrics_by_image(result)
    for label, metrics in result["summary"].items():
        for name, stats in metrics.items():
            if not name.startswith(("time", "peak")):
                assert merged["summary"][label][name]["mean"] == pytest.approx(stats["mean"], rel=1e-9), (label, name)
    assert merged["benchmark"]["shard"] is None and len(merged["benchmark"]["merged_from"]) == 2
    assert sorted(f["image"] for f in merged["failures"]) == sorted(f["image"] for f in result["failures"])
    assert (tmp_path / "merged" / "report.md").is_file()
    assert any(k.startswith("qualitative_s") for k in merged["files"])
    with pytest.raises(ConfigError, match="missing"):
        merge_results([tmp_path / "s0"], tmp_path / "m2")
    with pytest.raises(ConfigError, match="twice"):
        merge_results([tmp_path / "s0", tmp_path / "s0"], tmp_path / "m3")
    for i, junk in enumerate((b"\x82\xff random", b"[1, 2]")):  # not UTF-8; JSON but not a bench result
        (tmp_path / f"junk{i}").mkdir()
        (tmp_path / f"junk{i}" / "results.json").write_bytes(junk)
        with pytest.raises(ConfigError, match=f"junk{i}/results.json"):
            merge_results([tmp_path / f"junk{i}", tmp_path / "s1"], tmp_path / "m5")
    with pytest.raises(ConfigError, match="unsharded"):
        merge_results([env["root"] / "out", tmp_path / "s1"], tmp_path / "m4")
    with pytest.raises(ConfigError, match="shard="):
        BenchConfig(data=env["data"], out=tmp_path, shard=(2, 2))
    # Checked when configured, not when the report is written after every image has run.
    for bad, match in (({"seed": -1}, "seed=-1"), ({"edit_strength": 1e300}, "within"),
                       ({"edits": ("age", "age")}, "each once"), ({"qualitative": -1}, "qualitative=-1")):
        with pytest.raises(ConfigError, match=match):
            BenchConfig(data=env["data"], out=tmp_path, **bad)


def test_bench_cli_refuses_an_output_file_before_running(tmp_path):
    import typer
    from typer.testing import CliRunner

    from dhr.cli.bench import register

    app = typer.Typer()
    register(app)
    (tmp_path / "taken").write_text("x")
    r = CliRunner().invoke(app, ["bench", "--data", str(tmp_path), "-o", str(tmp_path / "taken")])
    assert r.exit_code == 2 and "is a file" in r.output, r.output


def test_list_images_first_or_spread(tmp_path):
    from dhr.bench.run import list_images

    for i in range(10):
        synthetic_photo(tmp_path / f"im{i}.png", size=(8, 8), seed=i)
    names = lambda fs: [f.name for f in fs]  # noqa: E731
    assert names(list_images(tmp_path, 3)) == ["im0.png", "im1.png", "im2.png"]
    assert names(list_images(tmp_path, 3, spread=True)) == ["im0.png", "im4.png", "im9.png"]
    assert len(list_images(tmp_path, 50, spread=True)) == 10


def test_editability_plots_and_detection_table(env, result, tmp_path):
    from dhr.bench.report import main as report_main

    out = env["root"] / "out"
    md = (out / "report.md").read_text()
    assert "Editability together" in md and "Occluder detection by DHR's out-of-domain mask" in md
    assert "| IoU (out-of-domain mask vs occluder) |" in md and "| false alarms outside the occluder |" in md
    assert "IoU by occluder fill: " in md
    for label in ("dhr", "pti", "dhr_weight-only"):
        with Image.open(out / f"editability_{label}.png") as im:
            assert im.size[0] > 300
    for rec in result["images"]:
        if rec.get("methods"):
            ref = rec["reference_mask"]
            assert 0.0 <= ref["ood_false_alarm"] <= 1.0 and 0.0 <= ref["clean_ood_fraction"] <= 1.0
            assert "delta_norm" in rec["methods"]["pti"]["metrics"] and "delta_norm" not in rec["methods"]["encoder"]["metrics"]
    # The plots are re-drawn from results.json alone by a command.
    report_main([str(out / "results.json"), "-o", str(tmp_path / "img"), "--prefix", "x_"])
    assert (tmp_path / "img" / "x_editability_dhr.png").is_file()
