"""Hostile model folders (issue 19, item 7): every one is refused with a ConfigError or
CheckpointError naming the file, before anything large is read or allocated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dhr.errors import CheckpointError, ConfigError
from dhr.models import zoo
from dhr.models.zoo import load_model
from tests.pipeline_fixtures import make_tiny_model


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("hostile") / "model")


@pytest.fixture
def model(pristine, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(pristine, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc))


def _edit_gen_config(model: Path, **changes) -> None:
    cfg = model / "generator" / "config.json"
    doc = json.loads(cfg.read_text())
    doc["config"].update(changes)
    cfg.write_text(json.dumps(doc))


@pytest.mark.parametrize("changes,match", [
    ({"template": "/dev/zero"}, "is absolute"),
    ({"template": "../../../../../../etc/passwd"}, "leads outside the model folder"),
    ({"card": "/etc/hostname"}, "is absolute"),
    ({"resolution": "64"}, "'resolution' must be an integer"),
    ({"name": 5}, "'name' must be a string"),
    ({"config": [1, 2]}, "'config' must be a mapping"),
    ({"sha256": {"generator/model.safetensors": "00"}}, "64 hex digits"),
    ({"resolution": 1024}, "'resolution' is 1024 but the generator makes 32 px images"),
])
def test_bad_manifest_values(model, changes, match):
    _edit_json(model / "model.json", **changes)
    with pytest.raises(ConfigError, match=match):
        load_model(model)


def test_component_path_outside_the_folder(model, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(model / "encoder", outside)
    (model / "enc_link").symlink_to(outside)
    man = json.loads((model / "model.json").read_text())
    for rel, match in (("/etc", "is absolute"), ("../elsewhere", "leads outside"), ("enc_link", "leads outside")):
        man["components"]["encoder"] = rel
        (model / "model.json").write_text(json.dumps(man))
        with pytest.raises(ConfigError, match=match):
            load_model(model)


@pytest.mark.parametrize("changes,match", [
    ({"channel_max": 10**9}, "must be an integer of at most"),
    ({"style_dim": "512"}, "must be an integer"),
    ({"channel_base": 60000, "channel_max": 60000}, "has shape"),  # checked on the meta device: no allocation
    ({"lr_mapping": float("inf")}, "must be a finite number"),
])
def test_bad_generator_config(model, changes, match):
    _edit_gen_config(model, **changes)
    with pytest.raises((ConfigError, CheckpointError), match=match):
        load_model(model)


def test_template_that_is_a_device_or_garbage(model):
    import os

    (model / "template.json").symlink_to("/dev/zero")
    _edit_json(model / "model.json", template="template.json")
    with pytest.raises(ConfigError, match="leads outside the model folder"):
        load_model(model)
    (model / "template.json").unlink()
    os.mkfifo(model / "template.json")  # inside the folder, but never opened
    with pytest.raises(CheckpointError, match="regular file"):
        load_model(model)
    (model / "template.json").unlink()
    (model / "template.json").write_text('{"nonsense": 1}')
    with pytest.raises(ConfigError, match="alignment template"):
        load_model(model)


def test_corrupt_directions(model):
    (model / "directions" / "directions.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="directions"):
        load_model(model)


def test_tampered_weights_with_the_sha_line_deleted(model):
    weights = model / "generator" / "model.safetensors"
    from dhr.models.checkpoint import sha256_file

    good = sha256_file(weights)
    cfg = model / "generator" / "config.json"
    doc = json.loads(cfg.read_text())
    doc.pop("sha256")
    cfg.write_text(json.dumps(doc))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip bits of the last weight
    weights.write_bytes(bytes(data))
    load_model(model)  # a user folder without any hash: loads (and logs that nothing was verified) ...
    _edit_json(model / "model.json", sha256={"generator/model.safetensors": good})
    with pytest.raises(CheckpointError, match="listed in model.json"):  # ... unless model.json lists the hash
        load_model(model)


def test_bundled_model_hashes_are_shipped_in_code(model, tmp_path, monkeypatch):
    """A bundled model is checked against dhr's own list, whatever its config.json says."""
    from dhr.models.checkpoint import sha256_file

    assets = tmp_path / "assets"
    assets.mkdir()
    shutil.copytree(model, assets / "tiny")
    weights = assets / "tiny" / "generator" / "model.safetensors"
    monkeypatch.setattr(zoo, "_ASSETS", assets)
    monkeypatch.setattr(zoo, "BUNDLED_SHA256", {"tiny": {"generator/model.safetensors": sha256_file(weights)}})
    load_model("tiny")
    cfg = assets / "tiny" / "generator" / "config.json"
    doc = json.loads(cfg.read_text())
    doc.pop("sha256")
    cfg.write_text(json.dumps(doc))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="shipped with dhr"):
        load_model("tiny")


def test_the_real_bundled_model_matches_its_shipped_hashes():
    from dhr.models.checkpoint import sha256_file

    folder = zoo._ASSETS / "faces-64"
    if not folder.is_dir():
        pytest.skip("faces-64 is not installed")
    for rel, digest in zoo.BUNDLED_SHA256["faces-64"].items():
        assert sha256_file(folder / rel) == digest, rel
