"""dhr.speed (``dhr bench-speed``): settings checks, the summary's ratios and loss parity, and one
in-process measurement of each path on the bundled model (tiny budget)."""

from __future__ import annotations

import dataclasses

import pytest

from dhr.errors import ConfigError
from dhr.speed import SpeedSettings, _summarise, format_report, measure, run_benchmark


def test_settings_and_cases_are_checked():
    with pytest.raises(ConfigError, match="weight_steps"):
        SpeedSettings(refine_steps=4, weight_steps=5)
    with pytest.raises(ConfigError, match="autocast"):
        SpeedSettings(autocast="fp16")
    with pytest.raises(ConfigError, match="unknown case"):
        run_benchmark(["faces-32"], SpeedSettings())
    with pytest.raises(ConfigError, match="only on a GPU"):
        run_benchmark(["random-1024"], SpeedSettings())


def _run(path: str, repeat: int, total: float, cpu: float, loss_in: float) -> dict:
    stages = {"coarse": total / 2, "mask": 0.0, "refine": total / 2}
    return {"case": "c", "path": path, "repeat": repeat, "seconds": stages,
            "cpu_seconds": {k: v * cpu / total for k, v in stages.items()}, "total_seconds": total,
            "total_cpu_seconds": cpu, "peak_rss_mb": 100.0 if path == "faithful" else 40.0,
            "final": {"coarse_lpips": [0.5], "loss_in": [loss_in], "loss_out": [1.0]},
            "in_domain": [0.5], "mask_source": ["segmentation"]}


def test_summary_ratios_and_parity():
    runs = [_run("faithful", 0, 8.0, 6.0, 1.0), _run("fast", 0, 2.0, 2.0, 1.004),
            _run("fast", 1, 4.0, 3.0, 1.0), _run("faithful", 1, 8.0, 6.0, 1.0)]
    s = _summarise(runs, ["faithful", "fast"], 0.01)["paths"]["fast"]
    assert s["ratio_wall"] == pytest.approx(3.0)  # median of 4x and 2x, paired by repeat
    assert s["ratio_cpu"] == pytest.approx(2.5)
    assert s["final_rel_diff"]["loss_in"] == pytest.approx(0.004)
    assert s["losses_equal"] and s["peak_rss_ratio"] == pytest.approx(0.4)
    runs[1] = _run("fast", 0, 2.0, 2.0, 1.03)
    report = {"settings": SpeedSettings().__dict__, "repeats": 2,
              "cases": {"c": _summarise(runs, ["faithful", "fast"], 0.01)}}
    assert not report["cases"]["c"]["paths"]["fast"]["losses_equal"]
    assert "DIFFER" in format_report(report) and "loss_in 3.00%" in format_report(report)


def test_rounding_sensitivity_from_the_fused_adam_path():
    runs = [_run("faithful", 0, 8.0, 6.0, 1.0), _run("fast-fused-adam", 0, 6.0, 5.0, 1.05),
            _run("fast-bf16", 0, 3.0, 3.0, 0.97), _run("fast", 0, 7.0, 5.5, 1.0)]
    paths = ["faithful", "fast-fused-adam", "fast-bf16", "fast"]
    summary = _summarise(runs, paths, 0.01)
    assert summary["rounding_sensitivity"]["loss_in"] == pytest.approx(0.05)
    bf16 = summary["paths"]["fast-bf16"]
    assert not bf16["losses_equal"] and bf16["within_rounding_sensitivity"]
    assert summary["paths"]["fast"]["within_rounding_sensitivity"]
    report = {"settings": SpeedSettings().__dict__, "repeats": 1, "cases": {"c": summary}}
    text = format_report(report)
    assert "rounding sensitivity (fast-fused-adam" in text and "loss_in 5.00%" in text
    assert "fast-bf16: within it" in text
    runs[2] = _run("fast-bf16", 0, 3.0, 3.0, 0.90)  # 10 % off: more than rounding moves it
    summary = _summarise(runs, paths, 0.01)
    assert not summary["paths"]["fast-bf16"]["within_rounding_sensitivity"]
    assert "fast-bf16: beyond it" in format_report({**report, "cases": {"c": summary}})
    assert "rounding_sensitivity" not in _summarise(runs[:1] + runs[2:], ["faithful", "fast-bf16", "fast"], 0.01)


@pytest.mark.slow
def test_fast_and_faithful_measurements_agree_on_the_bundled_model():
    s = SpeedSettings(coarse_steps=2, refine_steps=3, weight_steps=2, n_mean_samples=200)
    fast, oracle = measure("faces-64", "fast", s), measure("faces-64", "faithful", s)
    for r in (fast, oracle):
        assert set(r["seconds"]) == {"coarse", "mask", "refine"} and r["total_cpu_seconds"] > 0
        assert r["peak_rss_mb"] is None or r["peak_rss_mb"] > 0
    for k in ("coarse_lpips", "loss_in", "loss_out"):
        assert fast["final"][k] == pytest.approx(oracle["final"][k], rel=1e-4)


@pytest.mark.slow
def test_warmup_run_is_untimed_and_leaves_the_results_unchanged():
    s = SpeedSettings(coarse_steps=3, refine_steps=3, weight_steps=2, n_mean_samples=200)
    cold, warm = measure("faces-64", "fast", s), measure("faces-64", "fast", dataclasses.replace(s, warmup=True))
    assert warm["settings"]["warmup"] is True and set(warm["seconds"]) == {"coarse", "mask", "refine"}
    assert warm["final"] == cold["final"]  # the untimed tiny run must not leak state into the timed one


def test_bench_speed_refuses_a_timeout_that_is_not_positive():
    import typer
    from typer.testing import CliRunner

    from dhr.cli.speed import register

    app = typer.Typer()
    register(app)

    @app.command("noop")  # a second command keeps typer from folding the app into bench-speed
    def noop() -> None:
        pass

    r = CliRunner().invoke(app, ["bench-speed", "--timeout", "-1"])
    assert r.exit_code == 2 and "--timeout" in r.output, r.output
    for args, words in ((["--timeout", "inf"], "--timeout inf"), (["--paths", ""], "at least one value"),
                        (["--json", "/"], "is a folder")):
        r = CliRunner().invoke(app, ["bench-speed", *args])
        assert r.exit_code == 2 and words in r.output, (args, r.output)


def test_failed_measurements_say_why_in_one_line(monkeypatch):
    import subprocess

    import dhr.speed as sp
    from dhr.errors import DHRError

    settings = sp.SpeedSettings(coarse_steps=1, refine_steps=1, weight_steps=1)
    for code, stderr, words in ((-9, "", "killed by SIGKILL (out of memory?"),
                                (1, "Traceback (most recent call last):\n  ...\ndhr.errors.ConfigError: fixture-64 "
                                    "needs ../shared", "faces-64/fast: fixture-64 needs ../shared")):
        monkeypatch.setattr(subprocess, "run", lambda *a, code=code, stderr=stderr, **k: subprocess.CompletedProcess(
            a, code, "", stderr))
        with pytest.raises(DHRError) as e:
            sp._child("faces-64", "fast", settings, None)
        assert words in str(e.value) and "Traceback" not in str(e.value)
