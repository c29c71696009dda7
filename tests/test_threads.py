"""Thread settings: dhr sets a passive OpenMP wait policy before torch loads and chooses the thread
count itself; the user's environment and ``--threads`` win. Checked in fresh processes, because the
policy only takes effect when it is in the environment before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhr.errors import ConfigError
from dhr.threads import MAX_DEFAULT_THREADS, apply_wait_policy, default_threads, resolve_threads, usable_cpus

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "DHR_THREADS")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _cli(args: list[str], **extra: str) -> subprocess.CompletedProcess:
    code = "import sys; from dhr.cli import main; sys.argv = ['dhr', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(**extra), capture_output=True, text=True,
                          timeout=120)


def test_resolve_precedence_and_bad_values():
    assert resolve_threads(3, {"DHR_THREADS": "2", "OMP_NUM_THREADS": "5"}) == (3, "--threads")
    assert resolve_threads(None, {"DHR_THREADS": "2", "OMP_NUM_THREADS": "5"}) == (2, "DHR_THREADS")
    assert resolve_threads(None, {"OMP_NUM_THREADS": "5"}) == (5, "OMP_NUM_THREADS")
    assert resolve_threads(None, {}) == (default_threads(), "default")
    assert 1 <= default_threads() <= min(usable_cpus(), MAX_DEFAULT_THREADS)
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="DHR_THREADS=.*whole number"):
            resolve_threads(None, {"DHR_THREADS": bad})


def test_wait_policy_only_when_unset():
    env: dict[str, str] = {}
    assert apply_wait_policy(env).source == "dhr" and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_wait_policy(env).source == "user" and env["OMP_WAIT_POLICY"] == "ACTIVE"


def test_cli_process_gets_passive_policy_and_chosen_threads():
    r = _cli(["info", "--json"])
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["omp_wait_policy"] == "PASSIVE" and info["omp_wait_policy_source"] == "dhr"
    assert info["torch_threads"] == default_threads() and info["threads_source"] == "default"
    # --threads beats DHR_THREADS, which beats OMP_NUM_THREADS.
    info = json.loads(_cli(["--threads", "3", "info", "--json"], DHR_THREADS="2", OMP_NUM_THREADS="1").stdout)
    assert info["torch_threads"] == 3 and info["threads_source"] == "--threads"
    # The user's own wait policy is kept.
    info = json.loads(_cli(["info", "--json"], OMP_WAIT_POLICY="ACTIVE").stdout)
    assert info["omp_wait_policy"] == "ACTIVE" and info["omp_wait_policy_source"] == "user"
    bad = _cli(["info"], DHR_THREADS="lots")
    assert bad.returncode == 2 and "DHR_THREADS='lots'" in bad.stderr and "Traceback" not in bad.stderr


_SPIN = """
import sys, time
from dhr.cli import main  # what the `dhr` entry point imports first
import torch
torch.set_num_threads(2)
a = torch.randn(256, 256)
t0 = time.process_time()
for _ in range(40):
    a @ a
    time.sleep(0.02)   # idle between parallel regions: spinning OpenMP threads burn CPU here
print(time.process_time() - t0)
"""


def test_policy_takes_effect_in_openmp():
    """Idle OpenMP threads must sleep: CPU time of a mostly idle loop is far below the user-forced ACTIVE one."""
    def cpu_seconds(**extra: str) -> float:
        r = subprocess.run([sys.executable, "-c", _SPIN], env=_env(**extra), capture_output=True, text=True,
                           timeout=120, check=True)
        return float(r.stdout)

    passive, active = cpu_seconds(), cpu_seconds(OMP_WAIT_POLICY="ACTIVE")
    assert passive < 0.3 * active, (passive, active)


# --------------------------------------------------------------------------------------------
# One thread for a small model (fit_threads_to_model)


def _applied(monkeypatch, threads: int, source: str, policy: str | None = "PASSIVE"):
    import dhr.threads as th

    monkeypatch.setattr(th, "_APPLIED", th.ThreadSettings(threads, source, th.WaitPolicy(policy, "dhr")))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return before


@pytest.mark.parametrize(("threads", "source", "policy", "macs", "changed"), [
    (2, "default", "PASSIVE", 0.18e9, True),      # faces-64 on dhr's default count: one thread
    (2, "default", "passive", 1.9e9, True),
    (2, "default", "PASSIVE", 7.6e9, False),      # a large model keeps the cores
    (2, "--threads", "PASSIVE", 0.18e9, False),   # the user's count is kept
    (2, "DHR_THREADS", "PASSIVE", 0.18e9, False),
    (2, "OMP_NUM_THREADS", "PASSIVE", 0.18e9, False),
    (2, "default", "ACTIVE", 0.18e9, False),      # spinning threads wake fast
    (2, "default", None, 0.18e9, False),
    (1, "default", "PASSIVE", 0.18e9, False),
])
def test_small_model_gets_one_thread_only_on_dhrs_default(monkeypatch, threads, source, policy, macs, changed):
    import dhr.threads as th

    before = _applied(monkeypatch, threads, source, policy)
    try:
        result = th.fit_threads_to_model(macs)
        assert (result is not None) == changed
        assert torch.get_num_threads() == (1 if changed else threads)
        if changed:
            assert th.applied_settings() == result and result.source == "default, small model"
    finally:
        torch.set_num_threads(before)


def test_without_configure_threads_a_library_callers_threads_are_left_alone(monkeypatch):
    import dhr.threads as th

    monkeypatch.setattr(th, "_APPLIED", None)
    before = torch.get_num_threads()
    assert th.fit_threads_to_model(1.0) is None and torch.get_num_threads() == before


def test_synthesis_macs_counts_the_convolutions():
    from dhr.models.stylegan2 import GeneratorConfig

    # 8 px, 4 channels everywhere: b4 conv1 + torgb, b8 transposed conv0 (at 4x4) + conv1 + torgb
    cfg = GeneratorConfig(resolution=8, channel_base=64, channel_max=4, channel_multiplier=1)
    assert cfg.synthesis_macs == (4 * 4 * 9 * 16 + 3 * 4 * 16) + (4 * 4 * 9 * 16 + 4 * 4 * 9 * 64 + 3 * 4 * 64)
    assert GeneratorConfig().synthesis_macs > 70e9  # config-f at 1024
