"""Native model folders: config.json + model.safetensors, strict loading, registry, hashing."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dhr.errors import CheckpointError, ConfigError
from dhr.models import checkpoint as ck
from dhr.models.checkpoint import (
    load_config,
    load_generator,
    load_pretrained,
    saved_model_sha256,
    register_component,
    save_pretrained,
    sha256_file,
)
from dhr.models.stylegan2 import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig

CFG = GeneratorConfig(resolution=16, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    g = Generator(CFG)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.1 * torch.randn_like(p))
        g.w_avg.normal_()
    return g.eval()


@pytest.fixture
def saved(tmp_path) -> tuple[Path, Generator]:
    g = tiny_generator()
    return save_pretrained(g, tmp_path / "g", metadata={"note": "test"}), g


def test_round_trip_float32_is_exact(saved):
    folder, g = saved
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    doc = json.loads((folder / "config.json").read_text())
    assert doc["class"] == "Generator" and doc["config"] == CFG.to_dict() and doc["dtype"] == "float32"
    assert doc["metadata"] == {"note": "test"} and "dhr_version" in doc
    assert doc["sha256"] == saved_model_sha256(folder) == sha256_file(folder / "model.safetensors")
    g2 = load_generator(folder)
    assert isinstance(g2, Generator) and not g2.training
    for k, v in g.state_dict().items():
        assert torch.equal(v, g2.state_dict()[k]), k
    ws = torch.randn(2, g.num_ws, 32)
    with torch.no_grad():
        assert (g(ws) - g2(ws)).abs().max().item() == 0.0
    assert load_config(folder) == CFG


def test_float16_storage_loads_as_float32(tmp_path):
    g = tiny_generator(1)
    folder = save_pretrained(g, tmp_path / "h", dtype="float16")
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert f.get_tensor("synthesis.b4.const").dtype == torch.float16
    g2 = load_generator(folder)
    assert all(p.dtype == torch.float32 for p in g2.parameters())
    ws = torch.randn(2, g.num_ws, 32)
    with torch.no_grad():
        ref = g(ws)
        rel = ((g2(ws) - ref).abs().max() / ref.abs().max()).item()
    assert 0 < rel < 1e-2
    assert (folder / "model.safetensors").stat().st_size < 0.6 * (save_pretrained(g, tmp_path / "f") / "model.safetensors").stat().st_size


def test_native_loading_never_unpickles(saved, monkeypatch):
    folder, _ = saved

    def boom(*a, **k):
        raise AssertionError("unpickling during native load")

    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(torch, "load", boom)
    assert isinstance(load_generator(folder), Generator)


def test_discriminator_and_custom_component(tmp_path):
    d = Discriminator(DiscriminatorConfig(resolution=16, channel_base=64, channel_max=16))
    d2 = load_pretrained(save_pretrained(d, tmp_path / "d"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(d(x), d2(x))

    @dataclass(frozen=True)
    class HeadConfig:
        dim: int = 4
        classes: tuple[int, ...] = (1, 2)

    class Head(nn.Module):
        def __init__(self, config: HeadConfig) -> None:
            super().__init__()
            self.config = config
            self.fc = nn.Linear(config.dim, len(config.classes))

    register_component("TestHead", Head, HeadConfig)
    register_component("TestHead", Head, HeadConfig)  # idempotent
    h = Head(HeadConfig(dim=6, classes=(3, 4, 5)))
    folder = save_pretrained(h, tmp_path / "head")
    assert load_config(folder) == HeadConfig(dim=6, classes=(3, 4, 5))
    h2 = load_pretrained(folder)
    assert torch.equal(h2.fc.weight, h.fc.weight)
    with pytest.raises(ConfigError, match="already registered"):
        register_component("TestHead", nn.Linear, HeadConfig)
    with pytest.raises(ConfigError, match="holds a TestHead, expected a Generator"):
        load_generator(folder)


def test_unregistered_module_and_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="not a registered component"):
        save_pretrained(nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(ConfigError, match="dtype"):
        save_pretrained(tiny_generator(), tmp_path / "y", dtype="int8")
    with pytest.raises(ConfigError, match="JSON"):
        save_pretrained(tiny_generator(), tmp_path / "z", metadata={"t": torch.zeros(1)})


def _edit_config(folder: Path, fn) -> None:
    doc = json.loads((folder / "config.json").read_text())
    fn(doc)
    (folder / "config.json").write_text(json.dumps(doc))


def test_unknown_config_keys(saved):
    folder, _ = saved
    _edit_config(folder, lambda d: d["config"].update(fancy=1))
    with pytest.raises(ConfigError, match="fancy"):
        load_generator(folder)
    _edit_config(folder, lambda d: (d["config"].pop("fancy"), d.update(extra=True)))
    with pytest.raises(ConfigError, match="extra"):
        load_config(folder)
    _edit_config(folder, lambda d: (d.pop("extra"), d.update({"class": "Nope"})))
    with pytest.raises(ConfigError, match="Nope"):
        load_generator(folder)
    _edit_config(folder, lambda d: d.update({"class": "Generator", "format_version": "one"}))
    with pytest.raises(ConfigError, match="format_version must be a positive integer"):
        load_generator(folder)
    _edit_config(folder, lambda d: d.update(format_version=1, dtype="int8"))
    with pytest.raises(ConfigError, match="dtype 'int8' is not a storage type"):
        load_generator(folder)


def _rewrite_weights(folder: Path, fn) -> None:
    state = ck.load_state_file(folder / "model.safetensors")
    fn(state)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))


def test_missing_unexpected_and_misshapen_tensors(saved):
    folder, _ = saved
    _rewrite_weights(folder, lambda s: s.pop("synthesis.b8.conv1.bias"))
    with pytest.raises(CheckpointError, match="sha256"):
        load_generator(folder)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: missing 1 .*synthesis\.b8\.conv1\.bias.*\[32\]"):
        load_generator(folder, verify=False)
    _rewrite_weights(folder, lambda s: s.update({"synthesis.b8.conv1.bias": torch.zeros(32), "junk": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: 1 unexpected .*'junk'"):
        load_generator(folder, verify=False)
    _rewrite_weights(folder, lambda s: (s.pop("junk"), s.update({"synthesis.b8.conv1.bias": torch.zeros(7)})))
    with pytest.raises(CheckpointError, match=r"'synthesis\.b8\.conv1\.bias' has shape \[7\], expected \[32\]"):
        load_generator(folder, verify=False)
    _rewrite_weights(folder, lambda s: s.update({"synthesis.b8.conv1.bias": torch.full((32,), float("nan"))}))
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) hold NaN or infinite values \(synthesis\.b8\.conv1\.bias\)"):
        load_generator(folder, verify=False)


def test_truncated_and_corrupt_files(saved):
    folder, _ = saved
    w = folder / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*sha256"):
        load_generator(folder)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read tensors"):
        load_generator(folder, verify=False)
    w.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_generator(folder, verify=False)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_generator(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_config(folder)
