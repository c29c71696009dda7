"""Import of rosinality / e4e / pSp / NVIDIA checkpoints: correctness and safety.

The NVIDIA pickle is synthetic: fake ``torch_utils.persistence`` and ``dnnlib.util`` modules exist in
``sys.modules`` only while the file is written, and the object graph is shaped like the real one
(persistent objects reduced to ``_reconstruct_persistent_obj(meta)`` with the module ``__dict__`` as state).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dhr.errors import CheckpointError
from dhr.models.checkpoint import load_generator, load_state_file
from dhr.models.convert import (
    ImportedCheckpoint,
    OpaqueObject,
    convert,
    import_checkpoint,
    read_checkpoint_tree,
)
from dhr.models.ops import make_kernel, upfirdn2d
from dhr.models.stylegan2 import Generator, GeneratorConfig

CFG = GeneratorConfig(resolution=16, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)


def tiny_generator(seed: int = 0, config: GeneratorConfig = CFG) -> Generator:
    torch.manual_seed(seed)
    g = Generator(config)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.1 * torch.randn_like(p))
        g.w_avg.copy_(g.mean_latent(256, generator=torch.Generator().manual_seed(seed)))
    return g.eval()


def native_to_rosinality(state: dict[str, torch.Tensor], config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """Inverse of the rosinality mapping, written independently for the tests."""
    out: dict[str, torch.Tensor] = {}
    for i in range(config.n_mapping):
        out[f"style.{i + 1}.weight"] = state[f"mapping.layers.{i}.weight"]
        out[f"style.{i + 1}.bias"] = state[f"mapping.layers.{i}.bias"]

    def styled(dst: str, src: str, up: bool) -> None:
        out[f"{dst}.conv.weight"] = state[f"{src}.conv.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = state[f"{src}.conv.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = state[f"{src}.conv.affine.bias"]
        out[f"{dst}.noise.weight"] = state[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = state[f"{src}.bias"]
        if up:
            out[f"{dst}.conv.blur.kernel"] = make_kernel([1, 3, 3, 1]) * 4

    def torgb(dst: str, src: str) -> None:
        out[f"{dst}.conv.weight"] = state[f"{src}.conv.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = state[f"{src}.conv.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = state[f"{src}.conv.affine.bias"]
        out[f"{dst}.bias"] = state[f"{src}.bias"].reshape(1, 3, 1, 1)

    out["input.input"] = state["synthesis.b4.const"]
    styled("conv1", "synthesis.b4.conv1", False)
    torgb("to_rgb1", "synthesis.b4.torgb")
    out["noises.noise_0"] = state["synthesis.b4.conv1.noise_const"]
    for k, res in enumerate(config.resolutions[1:]):
        styled(f"convs.{2 * k}", f"synthesis.b{res}.conv0", True)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", False)
        torgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
        out[f"noises.noise_{2 * k + 1}"] = state[f"synthesis.b{res}.conv0.noise_const"]
        out[f"noises.noise_{2 * k + 2}"] = state[f"synthesis.b{res}.conv1.noise_const"]
    return {k: v.clone() for k, v in out.items()}


def native_to_nvidia_tensors(state: dict[str, torch.Tensor], config: GeneratorConfig) -> dict[str, torch.Tensor]:
    """NVIDIA names and shapes of a native state dict (independent inverse mapping)."""
    t: dict[str, torch.Tensor] = {}
    for i in range(config.n_mapping):
        t[f"mapping.fc{i}.weight"] = state[f"mapping.layers.{i}.weight"]
        t[f"mapping.fc{i}.bias"] = state[f"mapping.layers.{i}.bias"]
    t["mapping.w_avg"] = state["w_avg"]
    t["synthesis.b4.const"] = state["synthesis.b4.const"][0]
    for res in config.resolutions:
        for conv in ("conv0", "conv1") if res > 4 else ("conv1",):
            p = f"synthesis.b{res}.{conv}"
            t[f"{p}.weight"] = state[f"{p}.conv.weight"]
            t[f"{p}.affine.weight"] = state[f"{p}.conv.affine.weight"]
            t[f"{p}.affine.bias"] = state[f"{p}.conv.affine.bias"]
            t[f"{p}.noise_strength"] = state[f"{p}.noise_strength"]
            t[f"{p}.noise_const"] = state[f"{p}.noise_const"][0, 0]
            t[f"{p}.bias"] = state[f"{p}.bias"]
        p = f"synthesis.b{res}.torgb"
        t[f"{p}.weight"] = state[f"{p}.conv.weight"]
        t[f"{p}.affine.weight"] = state[f"{p}.conv.affine.weight"]
        t[f"{p}.affine.bias"] = state[f"{p}.conv.affine.bias"]
        t[f"{p}.bias"] = state[f"{p}.bias"]
    return {k: v.detach().clone() for k, v in t.items()}


def nvidia_reference_forward(t: dict[str, torch.Tensor], ws: torch.Tensor, config: GeneratorConfig) -> torch.Tensor:
    """StyleGAN2-ADA ``SynthesisNetwork`` semantics (fused modconv, float32) on NVIDIA-named tensors.

    Modulated conv without weight gain + demodulation, noise ``noise_const * noise_strength``, bias + lrelu*sqrt2;
    conv0 = transposed conv (stride 2, unflipped weight) + [1,3,3,1] filter, pad (1,1), gain 4; ToRGB multiplies
    the styles by 1/sqrt(C) and does not demodulate; the RGB skip is upsampled with pad (2,1), gain 4.
    """
    f4 = make_kernel([1, 3, 3, 1]) * 4
    b = ws.shape[0]

    def affine(p: str, w: torch.Tensor) -> torch.Tensor:
        wt = t[f"{p}.affine.weight"]
        return w @ (wt / math.sqrt(wt.shape[1])).t() + t[f"{p}.affine.bias"]

    def layer(p: str, x: torch.Tensor, w: torch.Tensor, up: bool) -> torch.Tensor:
        weight = t[f"{p}.weight"]
        o, i = weight.shape[:2]
        wt = weight[None] * affine(p, w)[:, None, :, None, None]
        wt = wt * (wt.square().sum([2, 3, 4]) + 1e-8).rsqrt()[:, :, None, None, None]
        xg = x.reshape(1, b * i, *x.shape[2:])
        if up:
            y = F.conv_transpose2d(xg, wt.transpose(1, 2).reshape(b * i, o, 3, 3), stride=2, groups=b)
            y = upfirdn2d(y, f4, pad=(1, 1))
        else:
            y = F.conv2d(xg, wt.reshape(b * o, i, 3, 3), padding=1, groups=b)
        y = y.reshape(b, o, *y.shape[2:]) + t[f"{p}.noise_const"] * t[f"{p}.noise_strength"]
        return F.leaky_relu(y + t[f"{p}.bias"][None, :, None, None], 0.2) * math.sqrt(2)

    def torgb(p: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        weight = t[f"{p}.weight"]
        s = affine(p, w) / math.sqrt(weight.shape[1])
        wt = weight[None] * s[:, None, :, None, None]
        y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), wt.reshape(-1, weight.shape[1], 1, 1), groups=b)
        return y.reshape(b, 3, *x.shape[2:]) + t[f"{p}.bias"][None, :, None, None]

    x = t["synthesis.b4.const"][None].repeat(b, 1, 1, 1)
    x = layer("synthesis.b4.conv1", x, ws[:, 0], False)
    img = torgb("synthesis.b4.torgb", x, ws[:, 1])
    idx = 1
    for res in config.resolutions[1:]:
        x = layer(f"synthesis.b{res}.conv0", x, ws[:, idx], True)
        x = layer(f"synthesis.b{res}.conv1", x, ws[:, idx + 1], False)
        img = upfirdn2d(img, f4, up=2, pad=(2, 1)) + torgb(f"synthesis.b{res}.torgb", x, ws[:, idx + 2])
        idx += 2
    return img


def nvidia_reference_mapping(t: dict[str, torch.Tensor], z: torch.Tensor, n: int, lr: float) -> torch.Tensor:
    x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
    for i in range(n):
        w, bias = t[f"mapping.fc{i}.weight"], t[f"mapping.fc{i}.bias"]
        x = F.leaky_relu(x @ (w * lr / math.sqrt(w.shape[1])).t() + bias * lr, 0.2) * math.sqrt(2)
    return x


# ------------------------------------------------------------------------------------------
# Synthetic NVIDIA pickle


class _FakePersistent:
    """Pickles like a ``torch_utils.persistence`` object: ``_reconstruct_persistent_obj(meta)``."""

    def __init__(self, class_name: str, state: dict) -> None:
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src="raise SystemExit('module_src must never run')",
                    class_name=self.class_name, state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def _mod(class_name: str, params: dict, buffers: dict | None = None, modules: dict | None = None, **attrs) -> _FakePersistent:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict((k, nn.Parameter(v.clone())) for k, v in params.items()),
        "_buffers": collections.OrderedDict(buffers or {}),
        "_non_persistent_buffers_set": set(),
        "_forward_hooks": collections.OrderedDict(),
        "_modules": collections.OrderedDict(modules or {}),
        "_init_args": (),
        "_init_kwargs": attrs.pop("init_kwargs", {}),
    }
    state.update(attrs)
    return _FakePersistent(class_name, state)


def _build_nvidia_g(t: dict[str, torch.Tensor], config: GeneratorConfig, *, lr: float = 0.01, c_dim: int = 0,
                    conv_clamp: int | None = 256) -> _FakePersistent:
    rf = make_kernel([1, 3, 3, 1])

    def fc(p: str, lr_mul: float = 1.0) -> _FakePersistent:
        w = t[f"{p}.weight"]
        return _mod("FullyConnectedLayer", {"weight": w, "bias": t[f"{p}.bias"]}, activation="lrelu",
                    weight_gain=lr_mul / math.sqrt(w.shape[1]), bias_gain=lr_mul)

    mapping_mods = {f"fc{i}": fc(f"mapping.fc{i}", lr) for i in range(config.n_mapping)}
    if c_dim:
        mapping_mods["embed"] = _mod("FullyConnectedLayer", {"weight": torch.randn(config.style_dim, c_dim),
                                                            "bias": torch.zeros(config.style_dim)})
    mapping = _mod("MappingNetwork", {}, {"w_avg": t["mapping.w_avg"].clone()}, mapping_mods,
                   z_dim=config.style_dim, c_dim=c_dim, w_dim=config.style_dim, num_layers=config.n_mapping)
    blocks = {}
    for res in config.resolutions:
        mods = {}
        for conv in ("conv0", "conv1") if res > 4 else ("conv1",):
            p = f"synthesis.b{res}.{conv}"
            mods[conv] = _mod("SynthesisLayer", {"weight": t[f"{p}.weight"], "noise_strength": t[f"{p}.noise_strength"],
                                                 "bias": t[f"{p}.bias"]},
                              {"resample_filter": rf.clone(), "noise_const": t[f"{p}.noise_const"].clone()},
                              {"affine": fc(f"{p}.affine")}, resolution=res, up=2 if conv == "conv0" else 1, conv_clamp=conv_clamp)
        p = f"synthesis.b{res}.torgb"
        mods["torgb"] = _mod("ToRGBLayer", {"weight": t[f"{p}.weight"], "bias": t[f"{p}.bias"]}, {}, {"affine": fc(f"{p}.affine")},
                             conv_clamp=conv_clamp, weight_gain=1 / math.sqrt(t[f"{p}.weight"].shape[1]))
        params = {"const": t["synthesis.b4.const"]} if res == 4 else {}
        blocks[f"b{res}"] = _mod("SynthesisBlock", params, {"resample_filter": rf.clone()}, mods, resolution=res,
                                 architecture="skip", use_fp16=False)
    synthesis = _mod("SynthesisNetwork", {}, {}, blocks, img_resolution=config.resolution)
    init_kwargs = {
        "z_dim": config.style_dim, "c_dim": c_dim, "w_dim": config.style_dim, "img_resolution": config.resolution,
        "img_channels": 3, "mapping_kwargs": {"num_layers": config.n_mapping},
        "synthesis_kwargs": {"channel_base": config.channel_base * config.channel_multiplier,
                             "channel_max": config.channel_max, "num_fp16_res": 4, "conv_clamp": conv_clamp,
                             "architecture": "skip"},
    }
    return _mod("Generator", {}, {}, {"synthesis": synthesis, "mapping": mapping}, init_kwargs=init_kwargs,
                z_dim=config.style_dim, c_dim=c_dim, w_dim=config.style_dim)


@pytest.fixture
def fake_nvidia_modules(monkeypatch):
    """Installs throwaway ``torch_utils.persistence`` / ``dnnlib.util`` modules for writing a pickle."""
    pers = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never be called by the loader
        raise AssertionError("the loader executed _reconstruct_persistent_obj")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    tu = types.ModuleType("torch_utils")
    tu.persistence = pers
    util = types.ModuleType("dnnlib.util")
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    util.EasyDict = easy
    dn = types.ModuleType("dnnlib")
    dn.util = util
    for name, m in {"torch_utils": tu, "torch_utils.persistence": pers, "dnnlib": dn, "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, name, m)
    return types.SimpleNamespace(EasyDict=easy)


def _write_nvidia_pkl(path: Path, g: Generator, fake, **kw) -> dict[str, torch.Tensor]:
    t = native_to_nvidia_tensors(g.state_dict(), g.config)
    G = _build_nvidia_g(t, g.config, **kw)
    D = _mod("Discriminator", {"dummy": torch.randn(3)}, init_kwargs={"c_dim": 0})
    tsk = fake.EasyDict(class_name="training.dataset.ImageFolderDataset", path="ffhq.zip", resolution=g.config.resolution,
                        xflip=np.bool_(True), mean=np.float32(0.5), shape=np.arange(3))
    with open(path, "wb") as fobj:
        pickle.dump({"G": G, "D": D, "G_ema": G, "augment_pipe": None, "training_set_kwargs": tsk}, fobj)
    return t


# ------------------------------------------------------------------------------------------
# rosinality / e4e / pSp


def test_rosinality_pt_imports_exactly(tmp_path):
    g = tiny_generator(1)
    ros = native_to_rosinality(g.state_dict(), g.config)
    path = tmp_path / "ck.pt"
    torch.save({"g_ema": ros, "g": ros, "d": {"x": torch.zeros(2)}, "latent_avg": g.w_avg.clone(),
                "args": {"size": 16}}, path)
    ic = import_checkpoint(path)
    assert isinstance(ic, ImportedCheckpoint) and ic.format == "rosinality" and ic.encoder_state is None
    assert ic.generator_config.resolution == 16 and ic.generator_config.style_dim == 32
    assert torch.equal(ic.w_avg, g.w_avg)
    g2 = ic.build_generator()
    for k, v in g.state_dict().items():
        assert torch.equal(v, g2.state_dict()[k]), k
    ws = torch.randn(2, g.num_ws, 32)
    with torch.no_grad():
        assert torch.equal(g(ws), g2(ws))


def test_rosinality_without_latent_avg_computes_w_avg(tmp_path):
    g = tiny_generator(2)
    path = tmp_path / "bare.pt"
    torch.save(native_to_rosinality(g.state_dict(), g.config), path)  # a bare state dict
    ic = import_checkpoint(path)
    assert ic.w_avg is None
    assert any("4096" in n for n in ic.notes)
    expected = g.mean_latent(4096, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ic.generator_state["w_avg"], expected)


def _psp_dict(g: Generator, opts, n_styles: int) -> dict:
    sd = {f"decoder.{k}": v for k, v in native_to_rosinality(g.state_dict(), g.config).items()}
    sd["encoder.input_layer.0.weight"] = torch.randn(8, 3, 3, 3)
    sd["encoder.styles.0.convs.0.weight"] = torch.randn(4, 8, 3, 3)
    return {"state_dict": sd, "latent_avg": g.w_avg[None].repeat(n_styles, 1), "opts": opts}


def test_e4e_with_namespace_opts_uses_restricted_reader(tmp_path):
    g = tiny_generator(3)
    opts = argparse.Namespace(encoder_type="Encoder4Editing", output_size=16, start_from_latent_avg=True)
    path = tmp_path / "e4e.pt"
    torch.save(_psp_dict(g, opts, g.num_ws), path)
    _, container = read_checkpoint_tree(path)
    assert container == "torch-zip-restricted"  # weights_only rejected argparse.Namespace
    ic = import_checkpoint(path)
    assert ic.format == "e4e"
    assert ic.opts == {"encoder_type": "Encoder4Editing", "output_size": 16, "start_from_latent_avg": True}
    assert set(ic.encoder_state) == {"input_layer.0.weight", "styles.0.convs.0.weight"}
    assert ic.w_avg.shape == (g.num_ws, 32)
    assert torch.equal(ic.generator_state["w_avg"], g.w_avg)
    ws = torch.randn(1, g.num_ws, 32)
    with torch.no_grad():
        assert torch.equal(ic.build_generator()(ws), g(ws))


def test_psp_dict_opts_and_convert_writes_encoder(tmp_path):
    g = tiny_generator(4)
    path = tmp_path / "psp.pt"
    torch.save(_psp_dict(g, {"encoder_type": "GradualStyleEncoder", "lr": 1e-4}, g.num_ws), path)
    ic = import_checkpoint(path)
    assert ic.format == "psp" and ic.opts["encoder_type"] == "GradualStyleEncoder"
    out = convert(path, tmp_path / "out")
    enc = load_state_file(out / "encoder" / "model.safetensors")
    assert set(enc) == {"input_layer.0.weight", "styles.0.convs.0.weight"}
    assert torch.equal(enc["input_layer.0.weight"], ic.encoder_state["input_layer.0.weight"])
    meta = json.loads((out / "encoder" / "encoder_meta.json").read_text())
    assert meta["format"] == "psp" and meta["opts"]["encoder_type"] == "GradualStyleEncoder"
    assert meta["latent_avg_shape"] == [g.num_ws, 32]
    assert load_state_file(out / "encoder" / "latent_avg.safetensors")["latent_avg"].shape == (g.num_ws, 32)


def test_convert_round_trip_float32_and_float16(tmp_path):
    g = tiny_generator(5)
    path = tmp_path / "ck.pt"
    torch.save({"g_ema": native_to_rosinality(g.state_dict(), g.config), "latent_avg": g.w_avg}, path)
    ws = torch.randn(2, g.num_ws, 32)
    with torch.no_grad():
        ref = g(ws)
        g32 = load_generator(convert(path, tmp_path / "f32") / "generator")
        assert (g32(ws) - ref).abs().max().item() == 0.0
        g16 = load_generator(convert(path, tmp_path / "f16", dtype="float16") / "generator")
        rel = ((g16(ws) - ref).abs().max() / ref.abs().max()).item()
    assert 0 < rel < 1e-2
    cfg = json.loads((tmp_path / "f16" / "generator" / "config.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["metadata"]["source_format"] == "rosinality"
    assert len(cfg["metadata"]["source_sha256"]) == 64


def test_load_generator_accepts_foreign_file(tmp_path):
    g = tiny_generator(6)
    path = tmp_path / "ck.pt"
    torch.save({"g_ema": native_to_rosinality(g.state_dict(), g.config), "latent_avg": g.w_avg}, path)
    ws = torch.randn(1, g.num_ws, 32)
    with torch.no_grad():
        assert torch.equal(load_generator(path)(ws), g(ws))


# ------------------------------------------------------------------------------------------
# NVIDIA


def test_nvidia_pkl_matches_native_and_reference(tmp_path, fake_nvidia_modules, monkeypatch):
    g = tiny_generator(7)
    path = tmp_path / "network-snapshot.pkl"
    t = _write_nvidia_pkl(path, g, fake_nvidia_modules)
    monkeypatch.undo()  # the fake modules are gone: the loader must not need (or import) them
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    ic = import_checkpoint(path)
    assert "torch_utils" not in sys.modules
    cfg = ic.generator_config
    assert ic.format == "nvidia"
    assert (cfg.resolution, cfg.style_dim, cfg.n_mapping, cfg.lr_mapping) == (16, 32, 2, 0.01)
    assert [cfg.channels(r) for r in cfg.resolutions] == [g.config.channels(r) for r in g.config.resolutions]
    assert any("conv_clamp=256" in n for n in ic.notes) and any("num_fp16_res=4" in n for n in ic.notes)
    g2 = ic.build_generator()
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    ws = torch.randn(3, g.num_ws, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(g2(ws), g(ws))
        assert torch.equal(g2.mapping(z), g.mapping(z))
        ref_img = nvidia_reference_forward(t, ws, g.config)
        ref_w = nvidia_reference_mapping(t, z, g.config.n_mapping, 0.01)
        assert (g2(ws) - ref_img).abs().max().item() < 1e-4
        assert (g2.mapping(z) - ref_w).abs().max().item() < 1e-5
    assert torch.equal(g2.w_avg, g.w_avg)
    tree, container = read_checkpoint_tree(path)
    assert container == "pickle"
    tsk = tree["training_set_kwargs"]
    assert isinstance(tsk, dict) and tsk["path"] == "ffhq.zip" and float(tsk["mean"]) == 0.5
    assert list(tsk["shape"]) == [0, 1, 2]


def test_nvidia_conditional_model_is_refused(tmp_path, fake_nvidia_modules):
    g = tiny_generator(8)
    path = tmp_path / "cond.pkl"
    _write_nvidia_pkl(path, g, fake_nvidia_modules, c_dim=10)
    with pytest.raises(CheckpointError, match=r"cond\.pkl.*conditional"):
        import_checkpoint(path)


# ------------------------------------------------------------------------------------------
# Safety and bad input


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_plain_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
    with pytest.raises(CheckpointError, match=r"evil\.pkl.*refusing.*system"):
        import_checkpoint(path)
    assert not marker.exists()
    path2 = tmp_path / "eval.pkl"
    path2.write_bytes(pickle.dumps({"g_ema": _EvalEvil()}))
    with pytest.raises(CheckpointError, match=r"eval\.pkl.*builtins\.eval"):
        import_checkpoint(path2)


def test_malicious_torch_zip_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2)}, "latent_avg": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refusing"):
        load_generator(path)
    assert not marker.exists()


def test_unknown_classes_become_inert_placeholders(tmp_path):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps({"x": argparse.Namespace(a=1)}))
    tree, _ = read_checkpoint_tree(path)
    assert isinstance(tree["x"], OpaqueObject) and tree["x"].state == {"a": 1}
    with pytest.raises(CheckpointError, match=r"odd\.pkl.*not a recognised"):
        import_checkpoint(path)


@pytest.fixture
def good_pt(tmp_path) -> tuple[Path, Generator]:
    g = tiny_generator(9)
    path = tmp_path / "good.pt"
    torch.save({"g_ema": native_to_rosinality(g.state_dict(), g.config), "latent_avg": g.w_avg}, path)
    return path, g


def test_broken_weights_and_wrong_ranks_are_refused_at_conversion(good_pt, tmp_path):
    from dhr.models.convert import convert

    path, g = good_pt
    ck = torch.load(path, weights_only=True)
    key = next(k for k in ck["g_ema"] if k.endswith("conv.weight"))
    ck["g_ema"][key] = torch.full_like(ck["g_ema"][key], float("nan"))
    torch.save(ck, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="hold NaN or infinite values"):
        convert(tmp_path / "nan.pt", tmp_path / "out_nan")
    assert not (tmp_path / "out_nan" / "model.json").exists()
    ck = torch.load(path, weights_only=True)
    ck["g_ema"]["style.1.weight"] = torch.zeros(8)  # 1-D: no style width to read
    torch.save(ck, tmp_path / "rank.pt")
    with pytest.raises(CheckpointError, match="wrong shape or type"):
        convert(tmp_path / "rank.pt", tmp_path / "out_rank")


def test_truncated_file(good_pt, tmp_path):
    path, _ = good_pt
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt"):
        import_checkpoint(bad)


def test_truncated_nvidia_pickle(tmp_path, fake_nvidia_modules):
    path = tmp_path / "full.pkl"
    _write_nvidia_pkl(path, tiny_generator(10), fake_nvidia_modules)
    bad = tmp_path / "cut.pkl"
    bad.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"cut\.pkl"):
        import_checkpoint(bad)


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.pt"):
        import_checkpoint(bad)
    with pytest.raises(CheckpointError, match=r"missing\.pt.*not found"):
        import_checkpoint(tmp_path / "missing.pt")


def test_other_architecture(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.randn(4, 3, 3, 3), "fc.weight": torch.randn(10, 4)}, path)
    with pytest.raises(CheckpointError, match=r"resnet\.pt.*not a recognised"):
        import_checkpoint(path)
    path2 = tmp_path / "gema_junk.pt"
    torch.save({"g_ema": {"a": torch.randn(3)}}, path2)
    with pytest.raises(CheckpointError, match=r"gema_junk\.pt"):
        import_checkpoint(path2)


def test_missing_key(good_pt, tmp_path):
    path, g = good_pt
    ros = native_to_rosinality(g.state_dict(), g.config)
    del ros["convs.1.activate.bias"]
    bad = tmp_path / "missing_key.pt"
    torch.save({"g_ema": ros}, bad)
    with pytest.raises(CheckpointError, match=r"missing_key\.pt.*convs\.1\.activate\.bias"):
        import_checkpoint(bad)


def test_shape_mismatch(good_pt, tmp_path):
    path, g = good_pt
    ros = native_to_rosinality(g.state_dict(), g.config)
    ros["to_rgbs.0.conv.modulation.weight"] = torch.randn(5, 32)
    bad = tmp_path / "shape.pt"
    torch.save({"g_ema": ros, "latent_avg": g.w_avg}, bad)
    with pytest.raises(CheckpointError, match=r"shape\.pt.*synthesis\.b8\.torgb\.conv\.affine\.weight.*\[5, 32\].*\[32, 32\]"):
        load_generator(bad)


# ------------------------------------------------------------------------------------------
# CLI


def test_cli_convert(good_pt, tmp_path):
    import typer
    from typer.testing import CliRunner

    from dhr.cli.convert import app

    root = typer.Typer()
    root.add_typer(app, name="convert")

    @root.command()
    def _other() -> None:  # a second command so that "convert" is resolved as a sub-command
        pass

    path, g = good_pt
    runner = CliRunner()
    res = runner.invoke(root, ["convert", str(path), str(tmp_path / "cli_out"), "--dtype", "float16"])
    assert res.exit_code == 0, res.output
    assert "sha256" in res.output
    assert json.loads((tmp_path / "cli_out" / "generator" / "config.json").read_text())["dtype"] == "float16"
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    res = runner.invoke(root, ["convert", str(bad), str(tmp_path / "x")])
    assert res.exit_code == 2 and "junk.pt" in res.output
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(root, ["convert", str(path), str(tmp_path / "afile")])
    assert res.exit_code == 2 and "is a file" in res.output, res.output
