"""``dhr info``: what this installation runs on (versions, torch build, devices, bfloat16 support, threads)."""

from __future__ import annotations

import json
import os

import typer

__all__ = ["collect_info", "register"]


def collect_info() -> dict[str, object]:
    """Versions, torch build (CPU or CUDA), devices and the thread settings of this process, as plain data."""
    import platform

    import torch

    import dhr
    from dhr.devices import native_bf16
    from dhr.threads import applied_settings, apply_wait_policy, usable_cpus

    applied = applied_settings()
    policy = apply_wait_policy()
    return {
        "dhr": dhr.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_build": "cuda " + torch.version.cuda if torch.version.cuda else "cpu",
        "cuda_available": torch.cuda.is_available(),
        "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        # whether precision=bf16 pays here (native bfloat16 arithmetic; see docs/engine.md "Precision")
        "cpu_native_bf16": native_bf16("cpu"),
        "cuda_native_bf16": native_bf16("cuda") if torch.cuda.is_available() else None,
        "usable_cpus": usable_cpus(),
        "torch_threads": torch.get_num_threads(),
        "threads_source": applied.source if applied and applied.threads == torch.get_num_threads() else "torch default",
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_wait_policy_source": policy.source,
    }


def register(app: typer.Typer) -> None:
    """Adds ``dhr info`` to the root app."""

    @app.command("info")
    def info_cmd(as_json: bool = typer.Option(False, "--json", help="One JSON object on stdout.")) -> None:
        """Show versions, the torch build (CPU or CUDA), devices and thread settings.

        Example: dhr --threads 2 info
        """
        data = collect_info()
        if as_json:
            typer.echo(json.dumps(data))
            return
        for k, v in data.items():
            typer.echo(f"{k:24s} {v}")
