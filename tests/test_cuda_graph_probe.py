"""scripts/cuda_graph_probe.py: its eager run is the fast path's refinement loop (so what a GPU run
compares graphs against is what ``refine_dhr`` does), and on a CPU it says why it skipped graphs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cuda_graph_probe.py"


def _probe_module():
    spec = importlib.util.spec_from_file_location("cuda_graph_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_eager_run_is_the_refinement_loop_and_graphs_are_skipped_on_cpu():
    from dhr.refinement.hybrid import RefineConfig, dhr_loop, resolve_feature_resolution, tuned_parameter_names
    from dhr.speed import SpeedSettings, _build_case

    probe = _probe_module()
    report = probe.probe("faces-64", device="cpu", tuned=2, frozen=2, seed=3)
    assert "CUDA device" in report["graphs"]["skipped"]
    assert set(report["eager"]["phases"]) == {"tuned", "frozen"}

    G, lp, _, x, occ, _ = _build_case("faces-64", SpeedSettings(seed=3))
    with torch.no_grad():
        ws = G.sample_ws(torch.randn(1, G.style_dim, generator=torch.Generator().manual_seed(10)))
    r = resolve_feature_resolution(G, None)
    loop = dhr_loop(G, x, ws, occ, F.adaptive_avg_pool2d(occ, r), lp, RefineConfig(steps=4, weight_steps=2),
                    names=tuned_parameter_names(G), resolution=r)
    assert report["eager"]["final_loss_in"] == [loop.curves[0]["loss_in"][-1]]
    assert report["eager"]["final_loss_out"] == [loop.curves[0]["loss_out"][-1]]
