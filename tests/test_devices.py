"""Device choice and deterministic kernels (``dhr.devices``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dhr.devices import use_deterministic_kernels


def test_deterministic_kernels_switch_on_and_back():
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32)
    try:
        use_deterministic_kernels()
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.deterministic
        assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    finally:
        use_deterministic_kernels(False)
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32) == before == (False, True)


def _probe(*args: str, env_value: str | None = None) -> subprocess.CompletedProcess:
    """``dhr [ARGS] info`` in a child, printing whether deterministic algorithms were switched on."""
    code = ("import sys, torch, atexit; atexit.register(lambda: print('DET', torch.are_deterministic_algorithms_enabled())); "
            "from dhr.cli import main; sys.argv[0] = 'dhr'; main()")
    env = {k: v for k, v in os.environ.items() if k != "DHR_DETERMINISTIC"}
    if env_value is not None:
        env["DHR_DETERMINISTIC"] = env_value
    return subprocess.run([sys.executable, "-c", code, *args, "info"], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("args, env_value, on", [(("--deterministic",), None, True), ((), "1", True), ((), "0", False),
                                                 ((), None, False)])
def test_dhr_command_switches_deterministic_kernels_on(args, env_value, on):
    out = _probe(*args, env_value=env_value)
    assert out.returncode == 0, out.stderr
    assert f"DET {on}" in out.stdout


def test_dhr_command_refuses_an_unknown_switch_value():
    out = _probe(env_value="maybe")
    assert out.returncode == 2 and "DHR_DETERMINISTIC" in out.stderr and "boolean" in out.stderr
