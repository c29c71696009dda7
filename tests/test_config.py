from __future__ import annotations

import pytest

from dhr.config import InvertConfig, load_config
from dhr.embed.optimize import OptimConfig
from dhr.errors import ConfigError


def test_defaults_compose_stage_configs():
    c = InvertConfig()
    assert c.method == "dhr" and c.embed is None
    assert c.coarse == OptimConfig.coarse() and c.optim == OptimConfig.baseline()
    assert c.refine.steps == 100 and c.refine.weight_steps == 50 and c.pti.steps == 350


def test_round_trip_and_partial_override():
    c = InvertConfig.from_dict({"method": "pti", "refine": {"steps": 3, "tune_resolutions": [8, 16]},
                                "optim": {"steps": 5}, "pti": {"lr": 1}})
    assert c.refine.tune_resolutions == (8, 16) and c.refine.weight_steps == 50
    assert c.optim.steps == 5 and c.optim.w_plus is True  # other keys keep the baseline recipe
    assert isinstance(c.pti.lr, float)
    assert InvertConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("data, pattern", [
    ({"refine": {"stepz": 1}}, r"refine\.stepz.*valid keys.*steps"),
    ({"foo": 1}, r"'foo'.*method"),
    ({"refine": {"steps": "3"}}, r"refine\.steps"),
    ({"refine": {"steps": True}}, r"refine\.steps"),
    ({"refine": {"l2_channel_sum": 1}}, r"refine\.l2_channel_sum"),
    ({"method": "gan"}, r"method.*dhr"),
    ({"refine": {"delta_format": "int2"}}, r"int2"),
    ({"refine": {"feature_resolution": 12}}, r"feature_resolution"),
    ({"refine": 5}, r"refine"),
    ({"segment": {"theta": "x"}}, r"segment\.theta"),
    ({"method": "encoder", "embed": "optim"}, r"conflicts"),
])
def test_strict_errors(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        InvertConfig.from_dict(data)


def test_load_toml_yaml_json(tmp_path):
    (tmp_path / "a.toml").write_text('method = "feature"\n[refine]\nsteps = 7\nfeature_resolution = 16\n')
    (tmp_path / "b.yaml").write_text("method: pti\npti:\n  steps: 9\n")
    (tmp_path / "c.json").write_text('{"coarse": {"steps": 4}}')
    a, b, c = (load_config(tmp_path / n) for n in ("a.toml", "b.yaml", "c.json"))
    assert a.method == "feature" and a.refine.steps == 7 and a.refine.feature_resolution == 16
    assert b.pti.steps == 9 and c.coarse.steps == 4
    (tmp_path / "bad.yaml").write_text("refine:\n  stepz: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*refine\.stepz"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "broken.toml").write_text("method = \n")
    with pytest.raises(ConfigError, match="parsed"):
        load_config(tmp_path / "broken.toml")
    (tmp_path / "x.ini").write_text("")
    with pytest.raises(ConfigError, match="toml"):
        load_config(tmp_path / "x.ini")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_config_file_that_is_not_text(tmp_path):
    from dhr.config import load_config

    path = tmp_path / "c.toml"
    path.write_bytes(b"\xee\x00\x82 random bytes")
    with pytest.raises(ConfigError, match="c.toml is not UTF-8 text"):
        load_config(path)
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_overrides_from_the_command_line():
    from dhr.config import apply_overrides, parse_overrides

    assert parse_overrides(["refine.steps=300", "segment.theta_skin=0.3", "method=pti",
                            "refine.tune_resolutions=[16, 32]", "segment.theta=null"]) == {
        "refine": {"steps": 300, "tune_resolutions": [16, 32]}, "segment": {"theta_skin": 0.3, "theta": None},
        "method": "pti"}
    base = InvertConfig.from_dict({"refine": {"weight_steps": 7}})
    cfg = apply_overrides(base, ["refine.steps=30", "segment.theta_other=0.2"])
    assert (cfg.refine.steps, cfg.refine.weight_steps, cfg.segment.theta_other) == (30, 7, 0.2)
    assert apply_overrides(base, []) is base
    for bad, match in (("refine.steps", "KEY=VALUE"), ("=3", "KEY=VALUE"), ("refine..steps=1", "KEY=VALUE")):
        with pytest.raises(ConfigError, match=match):
            parse_overrides([bad])
    with pytest.raises(ConfigError, match="given twice"):
        parse_overrides(["refine.steps=1", "refine.steps=2"])
    with pytest.raises(ConfigError, match=r"refine\.stepz"):
        apply_overrides(base, ["refine.stepz=1"])
    with pytest.raises(ConfigError, match="steps"):
        apply_overrides(base, ["refine.steps=many"])
    # Scientific notation is a number (YAML 1.1 alone would read 1e-3 as a string), for floats only.
    cfg = apply_overrides(base, ["refine.feature_lr=1e-3", "coarse.lr=2.5E+1", "segment.theta_skin=+5e-1"])
    assert (cfg.refine.feature_lr, cfg.coarse.lr, cfg.segment.theta_skin) == (0.001, 25.0, 0.5)
    with pytest.raises(ConfigError, match="must be an integer"):
        apply_overrides(base, ["refine.steps=1e3"])
    with pytest.raises(ConfigError, match="must be a number"):
        apply_overrides(base, ["refine.feature_lr=1e-3x"])
