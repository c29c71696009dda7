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


# --------------------------------------------------------------------------------------------
# Precision (InvertConfig.precision)


def test_fp32_precision_leaves_autocast_off():
    from dhr.devices import autocast

    with autocast("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.linear(torch.ones(1, 4), torch.ones(2, 4)).dtype == torch.float32


def test_bf16_precision_computes_matmuls_in_bfloat16(monkeypatch):
    import dhr.devices as devices

    monkeypatch.setattr(devices, "native_bf16", lambda device: True)
    with devices.autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.nn.functional.linear(torch.ones(1, 4), torch.ones(2, 4)).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_bf16_without_native_support_warns_that_it_is_slower(monkeypatch):
    import dhr.devices as devices

    monkeypatch.setattr(devices, "native_bf16", lambda device: False)
    with pytest.warns(RuntimeWarning, match="no native bfloat16.*slower than fp32"):
        with devices.autocast("cpu", "bf16"):
            pass


def test_unknown_precision_is_refused():
    from dhr.devices import autocast
    from dhr.errors import ConfigError

    with pytest.raises(ConfigError, match="precision='fp16' is not valid"):
        autocast("cpu", "fp16")


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    from dhr.devices import native_bf16

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert native_bf16("cpu") is True


def test_dhr_info_says_whether_bf16_is_native(monkeypatch):
    from dhr.cli.info import collect_info

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert collect_info()["cpu_native_bf16"] is False
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert collect_info()["cpu_native_bf16"] is True


def test_bf16_that_torch_would_silently_disable_is_refused(monkeypatch):
    import dhr.devices as devices
    from dhr.errors import ConfigError

    class Disabled:
        _enabled = False

        def __init__(self, *args, **kwargs):
            import warnings

            warnings.warn("In autocast, but the target dtype is not supported. Disabling autocast.")

    monkeypatch.setattr(devices, "native_bf16", lambda device: True)
    monkeypatch.setattr(devices.torch, "autocast", Disabled)
    with pytest.raises(ConfigError, match="not supported by this PyTorch on cpu.*Disabling autocast"):
        devices.autocast("cpu", "bf16")
