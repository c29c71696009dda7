"""Tests of dhr.editing.directions: Direction, apply_edits, loaders, DirectionSet, edit specs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dhr.editing.directions import (
    Direction,
    DirectionSet,
    GanSpaceParams,
    GanSpacePCA,
    apply_edits,
    load_direction,
    load_ganspace_pca,
    parse_edit_spec,
    sweep_codes,
)
from dhr.errors import CheckpointError, EditError, ShapeError

SHARED_DIRS = Path(__file__).resolve().parents[2] / ".." / "shared" / "weights" / "directions" / "ffhq-stylegan2"


def _shared(name: str) -> Path:
    path = SHARED_DIRS / name
    if not path.is_file():
        pytest.skip(f"real direction file {path} is absent (needs ../shared beside the checkout)")
    return path


def _unit(d: int, seed: int = 0) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _pca(d: int = 8, k: int = 4, seed: int = 0) -> GanSpacePCA:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return GanSpacePCA(torch.randn(d, generator=g), q.T[:k].float().contiguous(), torch.linspace(2.0, 0.5, k))


# ---------------------------------------------------------------------------- Direction / apply_edits


def test_apply_w_direction_all_layers() -> None:
    ws = torch.randn(3, 6, 8)
    v = _unit(8)
    out = apply_edits(ws, [(Direction("a", v), 2.5)])
    torch.testing.assert_close(out, ws + 2.5 * v)
    assert not torch.equal(out, ws)  # input untouched, output moved
    torch.testing.assert_close(apply_edits(ws, []), ws)


def test_apply_respects_layer_range_and_composes() -> None:
    ws = torch.randn(2, 6, 8)
    a, b = Direction("a", _unit(8, 1), layers=(1, 3)), Direction("b", _unit(8, 2), layers=(2, 6))
    out = apply_edits(ws, [(a, 1.0), (b, -2.0)])
    expect = ws.clone()
    expect[:, 1:3] += a.vector
    expect[:, 2:6] -= 2.0 * b.vector
    torch.testing.assert_close(out, expect)
    torch.testing.assert_close(out[:, 0], ws[:, 0])


def test_apply_per_layer_direction() -> None:
    ws = torch.randn(2, 4, 8)
    v = torch.randn(4, 8)
    out = apply_edits(ws, [(Direction("p", v, layers=(1, 3), space="w+"), 0.5)])
    expect = ws.clone()
    expect[:, 1:3] += 0.5 * v[1:3]
    torch.testing.assert_close(out, expect)


def test_apply_keeps_dtype_and_gradient() -> None:
    ws = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    out = apply_edits(ws, [(Direction("a", _unit(8)), 1.0)])
    assert out.dtype == torch.float64
    out.sum().backward()
    torch.testing.assert_close(ws.grad, torch.ones_like(ws))


def test_ganspace_absolute_matches_e4e_rule() -> None:
    basis = _pca()
    idx, target = 2, 3.0
    d = basis.direction(idx, (1, 3), mode="absolute")
    ws = torch.randn(2, 5, 8)
    out = apply_edits(ws, [(d, target)])
    comp, std = basis.comp[idx], float(basis.std[idx])
    coord = ((ws[:, 0] - basis.mean) @ comp) / std
    expect = ws.clone()
    expect[:, 1:3] += ((target - coord) * std)[:, None, None] * comp
    torch.testing.assert_close(out, expect)
    # on broadcast W codes the coordinate on the edited layers reaches the target exactly
    wb = torch.randn(2, 1, 8).expand(-1, 5, -1)
    ob = apply_edits(wb, [(basis.direction(idx, None, mode="absolute"), target)])
    torch.testing.assert_close(((ob[:, 3] - basis.mean) @ comp) / std, torch.full((2,), target))
    # absolute edits are idempotent when layer 0 is edited too
    torch.testing.assert_close(apply_edits(ob, [(basis.direction(idx, (0, 5), mode="absolute"), target)]), ob)


def test_ganspace_increment() -> None:
    basis = _pca()
    d = basis.direction(1, (0, 2), mode="increment")
    ws = torch.randn(2, 4, 8)
    out = apply_edits(ws, [(d, 2.0)])
    expect = ws.clone()
    expect[:, 0:2] += 2.0 * float(basis.std[1]) * basis.comp[1]
    torch.testing.assert_close(out, expect)


@pytest.mark.parametrize("strength", ["1", None, float("nan"), float("inf"), True])
def test_bad_strength(strength: object) -> None:
    with pytest.raises(EditError, match="strength"):
        apply_edits(torch.randn(1, 4, 8), [(Direction("a", _unit(8)), strength)])


def test_numpy_and_tensor_strengths_accepted() -> None:
    ws = torch.randn(1, 4, 8)
    d = Direction("a", _unit(8))
    torch.testing.assert_close(apply_edits(ws, [(d, np.float32(2.0))]), apply_edits(ws, [(d, torch.tensor(2.0))]))


def test_validation_errors_before_any_change() -> None:
    ws = torch.randn(1, 6, 8)
    good = Direction("good", _unit(8))
    with pytest.raises(EditError, match="D=16 but the codes have D=8"):
        apply_edits(ws, [(good, 1.0), (Direction("wide", _unit(16)), 1.0)])
    with pytest.raises(EditError, match="4 W\\+ layers but the model has 6"):
        apply_edits(ws, [(Direction("pl", torch.randn(4, 8), space="w+"), 1.0)])
    with pytest.raises(EditError, match="outside the model"):
        apply_edits(ws, [(Direction("far", _unit(8), layers=(4, 9)), 1.0)])
    with pytest.raises(ShapeError):
        apply_edits(torch.randn(6, 8), [(good, 1.0)])
    with pytest.raises(EditError, match="pair"):
        apply_edits(ws, [good])


def test_direction_construction_errors() -> None:
    with pytest.raises(EditError, match="name"):
        Direction("bad name", _unit(8))
    with pytest.raises(EditError, match="space"):
        Direction("a", torch.randn(2, 8))
    with pytest.raises(EditError, match="start < stop"):
        Direction("a", _unit(8), layers=(3, 3))
    with pytest.raises(EditError, match="NaN"):
        Direction("a", torch.full((8,), float("nan")))
    with pytest.raises(EditError, match="kind"):
        Direction("a", _unit(8), kind="magic")  # type: ignore[arg-type]
    with pytest.raises(EditError, match="ganspace"):
        Direction("a", _unit(8), kind="ganspace")
    with pytest.raises(EditError, match="std"):
        GanSpaceParams(0, torch.zeros(8), 0.0)


# ---------------------------------------------------------------------------- edit specs


@pytest.mark.parametrize(("spec", "expect"), [
    ("age=+2", ("age", 2.0)), ("smile=-1.5", ("smile", -1.5)), (" pose = 3e-1 ", ("pose", 0.3)),
    ("ganspace_54_7_8=20", ("ganspace_54_7_8", 20.0)),
])
def test_parse_edit_spec(spec: str, expect: tuple[str, float]) -> None:
    assert parse_edit_spec(spec) == expect


@pytest.mark.parametrize("spec", ["age", "age=", "=2", "age=two", "age=1=2", "a b=1", "age=nan", "age=inf"])
def test_parse_edit_spec_errors(spec: str) -> None:
    with pytest.raises(EditError, match="edit spec"):
        parse_edit_spec(spec)


# ---------------------------------------------------------------------------- loaders (synthetic files)


@pytest.mark.parametrize("shape", [(8,), (1, 8)])
def test_load_npy_and_pt_w_vectors(tmp_path: Path, shape: tuple[int, ...]) -> None:
    arr = np.random.default_rng(0).standard_normal(shape)  # float64, as InterFaceGAN saves
    np.save(tmp_path / "b.npy", arr)
    torch.save(torch.from_numpy(arr).float(), tmp_path / "b.pt")
    for f in ("b.npy", "b.pt"):
        d = load_direction(tmp_path / f, kind="interfacegan")
        assert d.space == "w" and d.vector.shape == (8,) and d.vector.dtype == torch.float32
        np.testing.assert_allclose(d.vector.numpy(), arr.reshape(-1), rtol=1e-6)
        assert d.name == "b" and d.kind == "interfacegan" and str(tmp_path) in d.source


def test_load_per_layer_identical_and_different_rows(tmp_path: Path) -> None:
    same = np.tile(np.arange(8, dtype=np.float32), (1, 6, 1))  # (1, L, D), identical rows
    np.save(tmp_path / "same.npy", same)
    d = load_direction(tmp_path / "same.npy")
    assert d.space == "w" and d.vector.shape == (8,)
    d_full = load_direction(tmp_path / "same.npy", collapse_identical=False)
    assert d_full.space == "w+" and d_full.vector.shape == (6, 8)
    diff = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    np.save(tmp_path / "diff.npy", diff)
    d2 = load_direction(tmp_path / "diff.npy", normalize=True)
    assert d2.space == "w+" and d2.vector.shape == (6, 8)
    torch.testing.assert_close(d2.vector.norm(dim=1), torch.ones(6))


def test_load_safetensors_vector(tmp_path: Path) -> None:
    v = torch.randn(8)
    save_file({"vector": v, "other": torch.randn(3)}, str(tmp_path / "v.safetensors"))
    torch.testing.assert_close(load_direction(tmp_path / "v.safetensors").vector, v)
    save_file({"a": torch.randn(8), "b": torch.randn(8)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(CheckpointError, match="key="):
        load_direction(tmp_path / "two.safetensors")
    assert load_direction(tmp_path / "two.safetensors", key="b").vector.shape == (8,)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_direction(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_direction(tmp_path / "junk.pt")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(CheckpointError, match="shape"):
        load_direction(tmp_path / "cube.npy")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(CheckpointError, match="extension"):
        load_direction(tmp_path / "x.txt")
    torch.save({"mean": torch.zeros(1, 8), "comp": torch.eye(8)[:, None], "std": torch.ones(8)}, tmp_path / "p.pt")
    with pytest.raises(EditError, match="component"):
        load_direction(tmp_path / "p.pt")
    with pytest.raises(EditError, match="out of range"):
        load_direction(tmp_path / "p.pt", component=8)


def test_unsafe_pickle_refused(tmp_path: Path) -> None:
    torch.save({"v": Path("x")}, tmp_path / "obj.pt")  # an arbitrary Python object
    with pytest.raises(CheckpointError, match="unsafe"):
        load_direction(tmp_path / "obj.pt")


def test_pca_save_roundtrip_in_e4e_layout(tmp_path: Path) -> None:
    basis = _pca()
    basis.save(tmp_path / "pca.pt")
    raw = torch.load(tmp_path / "pca.pt", weights_only=True, map_location="cpu")
    assert raw["mean"].shape == (1, 8) and raw["comp"].shape == (4, 1, 8) and raw["std"].shape == (4,)
    back = load_ganspace_pca(tmp_path / "pca.pt")
    torch.testing.assert_close(back.comp, basis.comp)
    d = load_direction(tmp_path / "pca.pt", component=3, layers=(0, 2), mode="increment")
    assert d.kind == "ganspace" and d.ganspace.mode == "increment" and d.name == "ganspace_3_0_2"
    assert d.ganspace.std == pytest.approx(float(basis.std[3]))


# ---------------------------------------------------------------------------- real e4e files


@pytest.mark.shared
@pytest.mark.parametrize("name", ["age.pt", "smile.pt", "pose.pt"])
def test_real_interfacegan_files(name: str) -> None:
    d = load_direction(_shared(name), kind="interfacegan")
    assert d.vector.shape == (512,) and d.space == "w" and d.layers is None
    assert d.vector.dtype == torch.float32 and d.vector.device.type == "cpu"
    assert float(d.vector.norm()) == pytest.approx(1.0, abs=1e-4)
    per_layer = load_direction(_shared(name), collapse_identical=False)
    if name == "pose.pt":  # (1, 18, 512) saved from cuda:0
        assert per_layer.vector.shape == (18, 512) and per_layer.space == "w+"
    ws = torch.randn(2, 18, 512)
    out = apply_edits(ws, [(d, 3.0)])
    torch.testing.assert_close(out - ws, (3.0 * d.vector).expand(2, 18, 512))


@pytest.mark.shared
def test_real_ganspace_file() -> None:
    path = _shared("ffhq_pca.pt")
    basis = load_ganspace_pca(path)
    assert basis.mean.shape == (512,) and basis.comp.shape == (80, 512) and basis.std.shape == (80,)
    torch.testing.assert_close(basis.comp @ basis.comp.T, torch.eye(80), atol=1e-5, rtol=0)
    eyes = load_direction(path, component=54, layers=(7, 8), name="eyes")  # e4e's eye openness
    assert eyes.ganspace.mode == "absolute" and eyes.layers == (7, 8)
    ws = basis.mean.expand(1, 18, 512).clone() + 0.1 * torch.randn(1, 1, 512)
    out = apply_edits(ws, [(eyes, 20.0)])
    changed = (out - ws).abs().sum(dim=(0, 2)) > 0
    assert changed.tolist() == [i == 7 for i in range(18)]
    coord = ((out[0, 7] - basis.mean) @ basis.comp[54]) / basis.std[54]
    assert float(coord) == pytest.approx(20.0, abs=1e-3)


# ---------------------------------------------------------------------------- DirectionSet


def test_direction_set_roundtrip(tmp_path: Path) -> None:
    basis = _pca()
    ds = DirectionSet([
        Direction("smile", _unit(8), source="x.pt", kind="interfacegan"),
        Direction("pl", torch.randn(5, 8), layers=(1, 4), space="w+"),
        basis.direction(2, (1, 3), name="lip"),
    ])
    ds.save(tmp_path / "dirs")
    meta = json.loads((tmp_path / "dirs" / "directions.json").read_text())
    assert meta["format"] == "dhr-directions" and set(meta["directions"]) == {"smile", "pl", "lip"}
    back = DirectionSet.load(tmp_path / "dirs")
    assert back.names() == ["lip", "pl", "smile"] and len(back) == 3
    ws = torch.randn(2, 5, 8)
    edits = ["smile=+1.5", "pl=-1", "lip=2"]
    torch.testing.assert_close(apply_edits(ws, back.resolve(edits)), apply_edits(ws, ds.resolve(edits)))
    assert back["lip"].ganspace.component == 2 and back["pl"].layers == (1, 4)


def test_direction_set_errors(tmp_path: Path) -> None:
    ds = DirectionSet([Direction("age", _unit(8)), Direction("smile", _unit(8))])
    with pytest.raises(EditError, match="unknown direction 'pose'; known directions: age, smile"):
        ds["pose"]
    with pytest.raises(EditError, match="twice"):
        DirectionSet([Direction("age", _unit(8)), Direction("age", _unit(8))])
    with pytest.raises(CheckpointError, match="missing"):
        DirectionSet.load(tmp_path)


def test_sweep_codes() -> None:
    ws = torch.randn(2, 4, 8)
    d = Direction("a", _unit(8), layers=(0, 2))
    codes = sweep_codes(ws, d, [-1.0, 0.0, 2.0])
    assert len(codes) == 3
    torch.testing.assert_close(codes[1], ws)
    torch.testing.assert_close(codes[2], apply_edits(ws, [(d, 2.0)]))
    with pytest.raises(EditError, match="strength"):
        sweep_codes(ws, d, [1.0, float("nan")])


def test_direction_set_rejects_bad_json(tmp_path: Path) -> None:
    DirectionSet([Direction("a", _unit(8))]).save(tmp_path)
    (tmp_path / "directions.json").write_text(json.dumps({"format": "dhr-directions", "version": 1,
                                                          "directions": {"a": {"layers": ["x", 1]}}}))
    with pytest.raises(CheckpointError, match="entry 'a'"):
        DirectionSet.load(tmp_path)
    (tmp_path / "directions.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="format"):
        DirectionSet.load(tmp_path)


def test_set_save_with_shared_ganspace_mean(tmp_path):
    """Directions made from one PCA share its mean tensor; saving must still work."""
    from dhr.editing import DirectionSet
    from dhr.editing.directions import GanSpacePCA

    torch.manual_seed(0)
    comp = torch.linalg.qr(torch.randn(8, 8))[0][:3]
    basis = GanSpacePCA(mean=torch.randn(8), comp=comp, std=torch.ones(3))
    dirs = [basis.direction(i, (0, 2), mode="increment", name=f"pc{i}") for i in range(3)]
    DirectionSet(dirs).save(tmp_path / "d")
    back = DirectionSet.load(tmp_path / "d")
    assert back.names() == ["pc0", "pc1", "pc2"]
    assert torch.allclose(back["pc1"].vector, dirs[1].vector)
