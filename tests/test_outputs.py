"""Unit tests of dhr.outputs (atomic writes, lock, names, output checks) and of the input guards
(allowed formats, size limits, folder entries, option ranges); hostile inputs are built here."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr.errors import CheckpointError, ConfigError, EditError, ImageError
from dhr.outputs import (
    TMP_MARK,
    FolderLock,
    assign_names,
    atomic_path,
    check_output_folder,
    clean_stale_temps,
    verify_outputs,
)


def _png(path: Path, size=(8, 6), value=100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# 1. names


def test_same_stem_gets_distinct_stable_names(tmp_path):
    items = [str(tmp_path / "a" / "photo.jpg"), str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.jpg")]
    names, notes = assign_names(items)
    assert names[items[0]] == "photo" and len(set(names.values())) == 3
    assert len(notes) == 2 and all("taken by" in n for n in notes)
    # Stable: the claims of the first run keep every name, whatever the order of the next one.
    claims = {n: str(Path(i).resolve()) for i, n in names.items()}
    again, notes2 = assign_names(list(reversed(items)), claims)
    assert again == names and not notes2
    # Case-insensitive file systems: Photo and photo must not share files.
    n2, _ = assign_names([str(tmp_path / "Photo.png"), str(tmp_path / "x" / "photo.png")])
    assert len({v.casefold() for v in n2.values()}) == 2


def test_long_stems_are_cut_below_the_name_limit(tmp_path):
    item = str(tmp_path / ("é" * 200 + ".png"))
    names, _ = assign_names([item])
    assert len(names[item].encode()) <= 120


# ---------------------------------------------------------------------------------------------
# 2. atomic writes and verification


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out" / "a.png"
    _png(target, value=7)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"\x89PNG partial")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == before
    assert not [p for p in target.parent.iterdir() if TMP_MARK in p.name]
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and TMP_MARK in tmp.name
        _png(tmp, value=9)
    assert np.asarray(Image.open(target))[0, 0, 0] == 9


def test_save_image_is_atomic(tmp_path, monkeypatch):
    from dhr.io.image import save_image

    target = _png(tmp_path / "x.png", value=3)
    before = target.read_bytes()

    def broken_save(self, fp, *a, **k):
        Path(fp).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(ImageError, match="disk full"):
        save_image(target, np.zeros((4, 4, 3), np.uint8))
    assert target.read_bytes() == before


def test_atomic_files_get_the_usual_mode(tmp_path):
    import os

    from safetensors.numpy import save_file

    with atomic_path(tmp_path / "b.safetensors") as tmp:
        save_file({"a": np.zeros(2, np.float32)}, str(tmp))  # safetensors creates 0600 files
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_path_refuses_a_folder_in_the_way(tmp_path):
    (tmp_path / "a.png").mkdir()
    with pytest.raises(ConfigError, match="a folder has that name"):
        with atomic_path(tmp_path / "a.png") as tmp:
            tmp.write_bytes(b"x")
    assert (tmp_path / "a.png").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_clean_stale_temps(tmp_path):
    stale = tmp_path / "edits" / f".a{TMP_MARK}123-0.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"x")
    keep = _png(tmp_path / "edits" / "a.png")
    assert clean_stale_temps(tmp_path) == [stale]
    assert keep.is_file() and not stale.exists()


def test_verify_outputs_catches_missing_empty_and_garbled_files(tmp_path):
    img = _png(tmp_path / "i.png")
    meta = tmp_path / "b.json"
    meta.write_text("{}")
    st = tmp_path / "b.safetensors"
    from safetensors.numpy import save_file

    save_file({"ws": np.zeros((2, 2), np.float32)}, str(st))
    faces = [{"outputs": {"inversion": str(img), "bundle": str(tmp_path / "b"), "edits": {"age+1": {
        "strengths": {"age": 1.0}, "crop": str(img)}}}}]
    assert verify_outputs(faces) is None
    img.write_bytes(b"")
    assert "empty" in verify_outputs(faces)
    img.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert "does not read back" in verify_outputs(faces)
    _png(img)
    whole = st.read_bytes()
    st.write_bytes(whole[:-4])  # the header is intact, the last tensor's bytes are cut off
    assert "not a complete safetensors file" in verify_outputs(faces)
    st.write_bytes(whole)
    assert verify_outputs(faces) is None
    st.write_bytes(whole[:10])
    assert "safetensors" in verify_outputs(faces)
    assert verify_outputs([]) is not None


# ---------------------------------------------------------------------------------------------
# 3. lock


def test_folder_lock_names_the_holder(tmp_path):
    with FolderLock(tmp_path, "dhr run"):
        with pytest.raises(ConfigError, match=rf"in use by another dhr process \(pid {os.getpid()}, `dhr run`\)"):
            FolderLock(tmp_path, "dhr dist").acquire()
    with FolderLock(tmp_path, "dhr dist"):  # released
        pass


# ---------------------------------------------------------------------------------------------
# 8. output folder


@pytest.mark.parametrize("case", ["file", "devnull", "long", "record-is-a-folder"])
def test_bad_output_folders(tmp_path, case):
    if case == "record-is-a-folder":  # found before any work, not when the record is first written
        out, match = tmp_path / "out", "run.json is a folder"
        (out / "run.json").mkdir(parents=True)
    elif case == "file":
        out = tmp_path / "taken"
        out.write_text("x")
        match = "is a file"
    elif case == "devnull":
        out, match = Path("/dev/null"), "is a device"
    else:
        out, match = tmp_path / ("n" * 300), "more than the 255"
    with pytest.raises(ConfigError, match=match):
        check_output_folder(out)


# ---------------------------------------------------------------------------------------------
# 5 and 9. decoding: size limits before reading, allowed formats by content


def _bomb_png(path: Path, side: int = 200_000) -> Path:
    """A valid 1x1 PNG whose header claims side x side pixels (nothing big is ever written)."""
    buf = path.parent / "small.png"
    Image.new("L", (1, 1)).save(buf)
    data = bytearray(buf.read_bytes())
    ihdr = bytearray(data[12:29])
    ihdr[4:12] = struct.pack(">II", side, side)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_huge_file_refused_before_reading(tmp_path, monkeypatch):
    from dhr.io import image as image_mod

    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(3 << 30)  # sparse: no disk used
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    with pytest.raises(ImageError, match="more than the"):
        image_mod.load_image(big)
    assert str(big) not in map(str, opened)


def test_decompression_bomb_and_mask(tmp_path):
    from dhr.io.image import load_image, load_mask_array

    bomb = _bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="too large|more than max_pixels"):
        load_image(bomb)
    with pytest.raises(ImageError, match="too large|more than max_pixels"):
        load_mask_array(bomb)


def test_eps_named_jpg_never_reaches_ghostscript(tmp_path, monkeypatch):
    from dhr.io.image import load_image

    marker = tmp_path / "gs-ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    with pytest.raises(ImageError, match=r"unsupported format \(PostScript/EPS\)"):
        load_image(eps)
    pdf = tmp_path / "doc.png"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF")
    with pytest.raises(ImageError, match=r"unsupported format \(PDF\)"):
        load_image(pdf)
    assert not marker.exists()


@pytest.mark.parametrize("fmt,suffix", [("GIF", ".gif"), ("JPEG2000", ".jp2"), ("TIFF", ".tif"), ("BMP", ".bmp"),
                                        ("WEBP", ".webp")])
def test_allowed_formats_load(tmp_path, fmt, suffix):
    from PIL import features

    from dhr.io.image import load_image

    if fmt == "JPEG2000" and not features.check("jpg_2000"):
        pytest.skip("this Pillow has no JPEG 2000 decoder")
    p = tmp_path / f"x{suffix}"
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(p, format=fmt)
    assert load_image(p).pixels.shape == (10, 12, 3)


def test_non_regular_inputs_are_never_opened(tmp_path):
    from dhr.io.image import load_image

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="FIFO"):
        load_image(fifo)  # would block forever if it were opened
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(ImageError, match="link loop"):
        load_image(loop)
    dev = tmp_path / "zero.jpg"
    dev.symlink_to("/dev/zero")
    with pytest.raises(ImageError, match="device"):
        load_image(dev)
    dangling = tmp_path / "gone.jpg"
    dangling.symlink_to(tmp_path / "nothing")
    with pytest.raises(ImageError, match="dangling"):
        load_image(dangling)


# ---------------------------------------------------------------------------------------------
# 10. folder entries


def test_folder_listing_reports_every_skipped_entry(tmp_path):
    from dhr.cli.run import expand_inputs_report

    d = tmp_path / "in"
    _png(d / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "b.gif")
    (d / "c.pdf").write_bytes(b"%PDF-1.4")
    (d / "d.heic").write_bytes(b"\0\0\0\x18ftypheic")
    os.mkfifo(d / "e.jpg")
    (d / "f.jpg").symlink_to(d / "missing.jpg")
    (d / "g.jpg").symlink_to(d / "g.jpg")
    (d / "h.jpg").symlink_to("/dev/zero")
    (d / "i.jpg").mkdir()
    items, skipped = expand_inputs_report([str(d)])
    assert [Path(i).name for i in items] == ["a.png", "b.gif"]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert set(reasons) == {"c.pdf", "d.heic", "e.jpg", "f.jpg", "g.jpg", "h.jpg", "i.jpg"}
    assert "FIFO" in reasons["e.jpg"] and "dangling" in reasons["f.jpg"] and "loop" in reasons["g.jpg"]
    assert "device" in reasons["h.jpg"] and "folder" in reasons["i.jpg"] and "image file name" in reasons["c.pdf"]
    empty = tmp_path / "empty.png"  # a folder given by name, with nothing in it, is reported too
    empty.mkdir()
    items, skipped = expand_inputs_report([str(empty), str(d / "a.png")])
    assert [Path(i).name for i in items] == ["a.png"]
    assert skipped == [{"path": str(empty), "reason": "empty folder (no photos in it)"}]


# ---------------------------------------------------------------------------------------------
# 11. values


def test_float_tiff_with_inf_and_nan(tmp_path):
    from dhr.io.image import load_image

    arr = np.full((8, 8), 0.5, np.float32)
    arr[0, 0], arr[0, 1] = np.inf, np.nan
    p = tmp_path / "f.tif"
    Image.fromarray(arr, mode="F").save(p)
    photo = load_image(p)
    assert photo.pixels[4, 4, 0] == 128  # 0.5 of a [0, 1] float image, not black
    assert any("non-finite" in n for n in photo.notes)


def test_invalid_exif_orientation_is_not_reported_as_rotated(tmp_path):
    from dhr.io.image import load_image

    im = Image.fromarray(np.arange(6 * 4 * 3, dtype=np.uint8).reshape(4, 6, 3))
    exif = Image.Exif()
    exif[0x0112] = 9
    p = tmp_path / "o.jpg"
    im.save(p, exif=exif.tobytes())
    photo = load_image(p)
    assert photo.pixels.shape == (4, 6, 3)
    assert not any("rotated" in n for n in photo.notes) and any("invalid EXIF orientation 9" in n for n in photo.notes)


@pytest.mark.parametrize("spec", ["age=1e308", "age=-101", "age=nan"])
def test_edit_strength_bounds(spec):
    from dhr.cli.run import parse_edit_options

    with pytest.raises(EditError, match="between -100 and \\+100|finite"):
        parse_edit_options([spec])


def test_edit_strength_too_large_for_a_float():
    from dhr.editing.directions import check_strength

    with pytest.raises(EditError, match="between -100 and \\+100"):
        check_strength(10**400, "edit 'age'")


def test_empty_edit_is_an_error():
    from dhr.cli.run import parse_edit_options, parse_sweep_option

    with pytest.raises(EditError, match="empty"):
        parse_edit_options([""])
    with pytest.raises(EditError, match="between"):
        parse_sweep_option("age=-1e300:1:3")


@pytest.mark.parametrize("spec,match", [("refine.steps=10000000000000000000000", "between 0 and 100000"),
                                        ("coarse.n_mean_samples=100000000000", "between 1 and 1000000"),
                                        ("optim.seed=100000000000000000000000", "between 0 and"),
                                        ("optim.lr=.inf", "finite")])
def test_config_ranges(spec, match):
    from dhr.config import InvertConfig, apply_overrides

    with pytest.raises(ConfigError, match=match):
        apply_overrides(InvertConfig(), [spec])


# ---------------------------------------------------------------------------------------------
# 12. detection retries map points back exactly


@pytest.mark.parametrize("what", ["rotated 90°", "rotated 180°", "rotated 270°", "border padded"])
def test_retry_variants_map_points_back(what):
    from dhr.faces.detect import _variant
    from dhr.io.image import load_image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (7, 11, 3), dtype=np.uint8)
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    photo = load_image(buf.getvalue())
    variant, back = _variant(photo, what)
    vh, vw = variant.pixels.shape[:2]
    pts = np.array([[x, y] for y in range(vh) for x in range(vw)], dtype=np.float64)
    orig = back(pts).round().astype(int)
    inside = (orig[:, 0] >= 0) & (orig[:, 0] < 11) & (orig[:, 1] >= 0) & (orig[:, 1] < 7)
    assert inside.sum() == 7 * 11
    v = variant.pixels[pts[inside, 1].astype(int), pts[inside, 0].astype(int)]
    o = pixels[orig[inside, 1], orig[inside, 0]]
    assert np.array_equal(v, o)


# ---------------------------------------------------------------------------------------------
# 4. bundles


def test_crafted_bundles_give_checkpoint_errors(tmp_path, tiny_generator):
    import torch
    from safetensors.torch import save_file

    from dhr.bundle import load_bundle, save_bundle
    from dhr.types import Inversion

    G = tiny_generator
    inv = Inversion(ws=torch.zeros(G.num_ws, 32), image=torch.zeros(3, 32, 32), target=torch.zeros(3, 32, 32),
                    method="pti", weight_delta={"synthesis.b4.const": torch.ones(1, 32, 4, 4)})
    st, js = save_bundle(inv, tmp_path / "good")
    load_bundle(tmp_path / "good", model=G)
    side = json.loads(js.read_text())

    def craft(name, tensors=None, sidecar=None, raw_st=None, raw_js=None):
        sp, jp = tmp_path / f"{name}.safetensors", tmp_path / f"{name}.json"
        if raw_st is not None:
            sp.write_bytes(raw_st)
        else:
            save_file(tensors, str(sp))
        jp.write_text(raw_js if raw_js is not None else json.dumps(sidecar))
        return tmp_path / name

    from safetensors.torch import load_file

    good_t = load_file(str(st))
    cases = {
        "no_ws": craft("no_ws", {k: v for k, v in good_t.items() if k != "ws"}, side),
        "int_ws": craft("int_ws", {**good_t, "ws": torch.zeros(G.num_ws, 32, dtype=torch.int32)}, side),
        "wrong_ws": craft("wrong_ws", {**good_t, "ws": torch.zeros(3, 7)}, side),
        "list_json": craft("list_json", good_t, raw_js="[1, 2]"),
        "garbage_st": craft("garbage_st", raw_st=b"\xff" * 64, sidecar=side),
        "bad_delta": craft("bad_delta", good_t, {**side, "delta": {"synthesis.b4.const": {"format": "fp16",
                                                                                         "shape": [10**9]}}}),
        "unknown_delta": craft("unknown_delta", {**good_t, "delta/nope": torch.zeros(4)},
                               {**side, "delta": {"nope": {"format": "fp32", "shape": [4]}}}),
        "str_resolution": craft("str_resolution", good_t, {**side, "resolution": "32"}),
        "delta_as_list": craft("delta_as_list", good_t, {**side, "delta": []}),
        "str_version": craft("str_version", good_t, {**side, "bundle_version": "three"}),
    }
    for name, stem in cases.items():
        with pytest.raises(CheckpointError, match="bundle"):
            load_bundle(stem, model=G)
    newer = craft("newer", good_t, {**side, "bundle_version": side["bundle_version"] + 1})
    with pytest.raises(CheckpointError, match="written by a newer dhr.*upgrade dhr"):
        load_bundle(newer, model=G)
    legacy = {k: v for k, v in side.items() if k != "bundle_version"}  # the first bundles did not record it
    load_bundle(craft("legacy", good_t, legacy), model=G)
