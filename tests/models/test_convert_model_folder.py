"""`dhr convert` writes a complete model folder: model.json, generator, official encoder, directions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dhr.errors import CheckpointError
from dhr.models.convert import convert
from dhr.models.encoders.psp import Encoder4Editing, LatentEncoder
from dhr.models.stylegan2 import Generator, GeneratorConfig
from tests.conftest import shared_path
from tests.models.test_convert import native_to_rosinality

CFG = GeneratorConfig(resolution=16, style_dim=32, n_mapping=2, channel_base=256, channel_max=32)
TINY_IR = (1, 1, 1, 1)


def _e4e_file(tmp_path, *, seed: int = 0):
    """An e4e checkpoint in the official layout: encoder.* + decoder.* (rosinality) + latent_avg + opts."""
    torch.manual_seed(seed)
    g = Generator(CFG).eval()
    enc = Encoder4Editing(g.num_ws, num_layers=TINY_IR, style_dim=32, input_size=64).eval()
    with torch.no_grad():
        for p in enc.parameters():
            p.mul_(0.5)
    sd = {f"decoder.{k}": v for k, v in native_to_rosinality(g.state_dict(), g.config).items()}
    sd.update({f"encoder.{k}": v for k, v in enc.state_dict().items()})
    latent_avg = g.w_avg[None].repeat(g.num_ws, 1).clone()
    opts = {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True, "stylegan_size": 16}
    path = tmp_path / "e4e_tiny.pt"
    torch.save({"state_dict": sd, "latent_avg": latent_avg, "opts": opts}, path)
    return path, g, LatentEncoder(enc, latent_avg).eval()


def _direction(path, shape, seed=1):
    torch.manual_seed(seed)
    torch.save(torch.randn(*shape), path)
    return path


def test_convert_writes_loadable_model_folder(tmp_path):
    from dhr.models.zoo import load_model

    path, g, ref_enc = _e4e_file(tmp_path)
    d1 = _direction(tmp_path / "age.pt", (1, 32))
    d2 = _direction(tmp_path / "pose.pt", (g.num_ws, 32), seed=2)
    out = convert(path, tmp_path / "ffhq-tiny", directions=[d1, d2])
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["name"] == "ffhq-tiny" and manifest["resolution"] == 16
    assert manifest["components"] == {"generator": "generator", "encoder": "encoder", "directions": "directions"}

    model = load_model(out)
    assert isinstance(model.encoder, LatentEncoder) and model.encoder.kind == "e4e"
    assert model.encoder.input_resolution == 64
    assert model.perceptual is None and model.template is None
    assert model.directions.names() == ["age", "pose"]
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x), ref_enc(x), rtol=0, atol=1e-5)
        ws = torch.randn(1, g.num_ws, 32)
        torch.testing.assert_close(model.generator(ws), g(ws), rtol=0, atol=1e-5)
    # dhr reference -g OUT (and load_generator) take the model folder as well as OUT/generator.
    from dhr.models.checkpoint import load_generator

    with torch.no_grad():
        torch.testing.assert_close(load_generator(out)(ws), load_generator(out / "generator")(ws), rtol=0, atol=0)


def test_encoder_embedding_uses_the_converted_encoder(tmp_path):
    from dhr.embed.encoder import encode
    from dhr.models.zoo import load_model

    path, _, ref_enc = _e4e_file(tmp_path)
    model = load_model(convert(path, tmp_path / "m"))
    target = torch.rand(1, 3, 16, 16) * 2 - 1
    emb = encode(model.encoder, model.generator, target)[0]
    x = torch.nn.functional.interpolate(target, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(emb.ws, ref_enc(x)[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    ("shape", "match"),
    [((1, 16), r"width 16 .* latent width is 32"), ((9, 32), r"9 W\+ entries but the generator has 6")],
)
def test_direction_of_another_model_is_refused(tmp_path, shape, match):
    path, _, _ = _e4e_file(tmp_path)
    bad = _direction(tmp_path / "wrong.pt", shape)
    with pytest.raises(CheckpointError, match=match):
        convert(path, tmp_path / "out", directions=[bad])
    assert not (tmp_path / "out" / "model.json").exists()


def test_corrupt_encoder_meta_names_the_file(tmp_path):
    from dhr.models.zoo import load_model

    path, _, _ = _e4e_file(tmp_path)
    out = convert(path, tmp_path / "m")
    (out / "encoder" / "encoder_meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"encoder_meta\.json: unreadable"):
        load_model(out)


def test_cli_convert_then_run_with_the_folder(tmp_path, monkeypatch):
    """The converted folder works with `dhr run --model` (encoder method, LPIPS-squeeze losses)."""
    from typer.testing import CliRunner

    from dhr.cli import build_app

    weights = shared_path("weights")
    shared_path("weights", "lpips", "squeezenet1_1_features.safetensors")
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(weights))
    path, _, _ = _e4e_file(tmp_path)
    d1 = _direction(tmp_path / "smile.pt", (1, 32))
    runner, app = CliRunner(), build_app()
    res = runner.invoke(app, ["convert", str(path), str(tmp_path / "ffhq"), "-d", str(d1), "--name", "tiny-ffhq"])
    assert res.exit_code == 0, res.output
    assert "dhr run PHOTO --model" in res.output and "smile" in res.output
    photo = tmp_path / "face.png"
    Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype(np.uint8)).save(photo)
    res = runner.invoke(app, ["run", str(photo), "--model", str(tmp_path / "ffhq"), "--method", "encoder",
                              "--whole-image", "--perceptual", "squeeze", "--edit", "smile=+1",
                              "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert any(p.name.endswith(".png") and "smile" in p.name for p in (tmp_path / "out").rglob("*.png")), \
        sorted(p.name for p in (tmp_path / "out").rglob("*"))
