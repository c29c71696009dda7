"""The pipeline's reference choices: the coarse perceptual network and the face parser.

``coarse_perceptual='auto'`` is the model's own network when it has one, else LPIPS-VGG (the
reference's coarse network); ``parser`` selects landmarks, BiSeNet, FaRL or none, and a parser
whose weights are missing fails at construction with a message naming the file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dhr.errors import CheckpointError, ConfigError, WeightsError
from dhr.metrics.lpips import LPIPS
from dhr.pipeline import Pipeline
from tests.pipeline_fixtures import TINY_CONFIG, make_tiny_model, synthetic_photo


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    own = make_tiny_model(root / "own")
    bare = root / "bare"  # a converted model: no perceptual network of its own
    shutil.copytree(own, bare)
    shutil.rmtree(bare / "perceptual")
    manifest = json.loads((bare / "model.json").read_text())
    del manifest["components"]["perceptual"]
    (bare / "model.json").write_text(json.dumps(manifest))
    return own, bare


@pytest.fixture()
def no_weights(monkeypatch, tmp_path):
    """An empty weights environment without network access."""
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    monkeypatch.delenv("DHR_WEIGHTS_PATH", raising=False)
    return tmp_path


@pytest.fixture()
def fake_lpips(monkeypatch):
    """LPIPS.from_registry builds a random network of the requested backbone and records the request."""
    asked = []

    def from_registry(cls, net="alex", **kw):
        asked.append(net)
        torch.manual_seed(0)
        return LPIPS(net)

    monkeypatch.setattr(LPIPS, "from_registry", classmethod(from_registry))
    return asked


def test_coarse_perceptual_auto_is_vgg_without_an_own_network(models, fake_lpips, tmp_path):
    _, bare = models
    pipe = Pipeline.from_pretrained(bare, device="cpu", config=TINY_CONFIG)
    assert pipe.config.coarse_perceptual == "auto"
    assert pipe.perceptual.net_name == "alex" and pipe.coarse_perceptual.net_name == "vgg"
    photo = synthetic_photo(tmp_path / "p.png", size=(32, 32))
    inv = pipe.invert(str(photo), whole_image=True)[0].inversion
    assert inv.meta["perceptual"] == "lpips-alex" and inv.meta["coarse_perceptual"] == "lpips-vgg"
    same = Pipeline.from_pretrained(bare, device="cpu", config=TINY_CONFIG, coarse_perceptual="same")
    assert same.coarse_perceptual is same.perceptual
    squeeze = Pipeline.from_pretrained(bare, device="cpu", config={**TINY_CONFIG, "coarse_perceptual": "squeeze"})
    assert squeeze.coarse_perceptual.net_name == "squeeze"
    assert fake_lpips.count("vgg") == 1


def test_coarse_perceptual_auto_is_the_models_own(models):
    own, bare = models
    pipe = Pipeline.from_pretrained(own, device="cpu", config=TINY_CONFIG)
    assert pipe.coarse_perceptual is pipe.model.perceptual is pipe.perceptual
    with pytest.raises(ConfigError, match="coarse_perceptual"):
        Pipeline.from_pretrained(own, device="cpu", coarse_perceptual="resnet")
    with pytest.raises(ConfigError, match="no perceptual network"):
        Pipeline.from_pretrained(bare, device="cpu", coarse_perceptual="model").coarse_perceptual  # noqa: B018


def test_missing_vgg_weights_name_the_fix(models, no_weights):
    _, bare = models
    pipe = Pipeline.from_pretrained(bare, device="cpu", config=TINY_CONFIG, perceptual="squeeze",
                                    coarse_perceptual="auto")
    with pytest.raises(WeightsError, match=r"(?s)LPIPS-vgg.*vgg16-397923af.pth.*coarse_perceptual='same'"):
        pipe.coarse_perceptual  # noqa: B018


@pytest.mark.parametrize("name", ["bisenet", "farl"])
def test_parser_without_weights_fails_at_construction(models, no_weights, name):
    own, _ = models
    with pytest.raises(WeightsError, match=rf"parser '{name}' needs its weights '.+'"):
        Pipeline.from_pretrained(own, device="cpu", parser=name)


def test_parser_choice_reaches_the_segmentation(models, monkeypatch, tmp_path):
    """A (random-weight) BiSeNet in the official layout under DHR_WEIGHTS_PATH is used by DHR's
    segmentation, even without landmarks; the landmark parser is skipped without them, and
    ``none`` uses no parser."""
    from dhr.models.bisenet import BiSeNet

    own, _ = models
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.manual_seed(0)
    torch.save(BiSeNet(19).state_dict(), folder / "79999_iter.pth")
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(folder))
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    photo = str(synthetic_photo(tmp_path / "p.png", size=(32, 32)))
    pipe = Pipeline.from_pretrained(own, device="cpu", config=TINY_CONFIG, parser="bisenet")
    assert pipe.parser == "bisenet"
    inv = pipe.invert(photo, whole_image=True)[0]
    assert inv.inversion.domain.parsing is not None and inv.inversion.domain.parsing.shape[0] == 19
    assert inv.inversion.meta["parser"] == "bisenet"
    for name in ("landmarks", "none"):
        other = Pipeline.from_pretrained(own, device="cpu", config=TINY_CONFIG, parser=name).invert(
            photo, whole_image=True)[0]
        assert other.inversion.domain.parsing is None
        assert any("without a face parser" in n for n in other.notes)


def test_farl_needs_a_digest_or_trust(models, monkeypatch, tmp_path):
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(3, 19, 1)

        def forward(self, x):
            return self.head(x), x

    own, _ = models
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.warns(DeprecationWarning):
        torch.jit.save(torch.jit.script(Tiny()), str(folder / "face_parsing.farl.celebm.main_ema_181500_jit.pt"))
    monkeypatch.setenv("DHR_WEIGHTS_PATH", str(folder))
    monkeypatch.setenv("DHR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DHR_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="--trust-parser"):
        Pipeline.from_pretrained(own, device="cpu", parser="farl")
    pipe = Pipeline.from_pretrained(own, device="cpu", parser="farl", trust_parser=True)
    assert pipe.parser == "farl" and pipe.face_parser is not None


def test_cli_parser_option(models, no_weights):
    from dhr.cli import build_app

    app = build_app()
    own, _ = models
    photo = synthetic_photo(Path(no_weights) / "p.png", size=(32, 32))
    res = CliRunner().invoke(app, ["run", str(photo), "--model", str(own), "--parser", "bisenet", "-o",
                                   str(Path(no_weights) / "out")])
    assert res.exit_code == 2 and "79999_iter.pth" in res.output
    res = CliRunner().invoke(app, ["run", str(photo), "--model", str(own), "--parser", "wizard", "-o",
                                   str(Path(no_weights) / "out")])
    assert res.exit_code == 2 and "wizard" in res.output
