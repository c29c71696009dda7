"""Tests of the web UI: the backend without gradio, the gradio app, and a browser run (Playwright +
Debian chromium) that is refused a fake and an oversized image with a visible message, then uploads a
photo, inverts, edits with a slider and gets the downloads."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr.errors import DHRError, EditError, FaceNotFoundError, ImageError
from dhr.pipeline import Pipeline
from dhr.web.app import WebBackend
from tests.pipeline_fixtures import TINY_CONFIG, make_tiny_model, synthetic_photo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("web")
    pipe = Pipeline.from_pretrained(make_tiny_model(root / "model"), device="cpu", config=TINY_CONFIG)
    photo = synthetic_photo(root / "photo.png")
    return pipe, photo, root


def test_backend_invert_and_edit(env, tmp_path):
    pipe, photo, _ = env
    backend = WebBackend(pipe, tmp_path / "work")
    assert backend.direction_names() == ["age", "smile"]
    with pytest.raises(ImageError, match="Upload a photo first"):
        backend.invert(None)
    with pytest.raises(FaceNotFoundError):
        backend.invert(str(photo), "encoder", whole_image=False)
    with pytest.raises(EditError, match="Press \\*Invert\\* first"):
        backend.edit(None, {"age": 1})
    steps = []
    view = backend.invert(str(photo), "dhr", whole_image=True, progress=lambda s, i, n, info: steps.append((s, i, n)))
    assert ("refine", 2, 2) in steps and ("coarse", 1, 2) in steps
    assert view.inversion.size == (256, 256) and view.mask is not None and view.aligned.size == (256, 256)
    assert "photo_whole" in view.status and "whole image" in view.status
    ed = backend.edit(view.result, {"age": 1.5, "smile": 0.0})
    names = [Path(f).name for f in ed.files]
    assert names == ["photo_whole_age+1.5.png", "photo_whole_age+1.5_crop.png", "photo_whole.safetensors",
                     "photo_whole.json"]
    assert all(Path(f).is_file() and Path(f).is_relative_to(tmp_path / "work" / "default") for f in ed.files)
    assert Image.open(ed.files[0]).size == (48, 40)
    assert ed.pasted.size == (48, 40)
    # All sliders at zero give back the reconstruction.
    same = backend.edit(view.result, {"age": 0.0, "smile": 0.0})
    crop = np.asarray(Image.open(same.files[1]))
    assert np.array_equal(crop, view.result.to_numpy())
    # A user mask (white = out of domain) replaces the segmentation; a mask of the wrong size is refused.
    m = np.zeros((40, 48), np.uint8)
    m[:, 30:] = 255
    Image.fromarray(m).save(tmp_path / "ood.png")
    masked = backend.invert(str(photo), "dhr", whole_image=True, ood_mask=str(tmp_path / "ood.png"))
    assert "given by the user" in masked.status and "Kept out of the GAN" in masked.status
    # The mask panel is the crop with the kept-out part tinted red: the right side red, the left the crop.
    over = np.asarray(masked.mask).astype(int)
    right = over[100:156, -40:]
    assert (right[..., 0] - right[..., 1:].max(-1) > 60).mean() > 0.9
    assert np.array_equal(over[:, :40], np.asarray(masked.aligned)[:, :40])
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(DHRError, match="mask is 5x5"):
        backend.invert(str(photo), "dhr", whole_image=True, ood_mask=str(tmp_path / "small.png"))


def _bad_uploads(root: Path) -> tuple[Path, Path]:
    """A text file named .png and a 64x64 PNG (4096 px, over the 2000 px limit the tests use)."""
    fake = root / "notes.png"
    fake.write_text("this is a text file, not a picture\n")
    big = synthetic_photo(root / "big.png", size=(64, 64), seed=1)
    return fake, big


def test_backend_refuses_bad_uploads_and_keeps_working(env, tmp_path):
    pipe, photo, _ = env
    fake, big = _bad_uploads(tmp_path)
    backend = WebBackend(pipe, tmp_path / "work", max_pixels=2000)
    with pytest.raises(ImageError, match="not a readable image"):
        backend.check(str(fake))
    with pytest.raises(ImageError, match="not a readable image"):
        backend.invert(str(fake), "encoder")
    with pytest.raises(ImageError, match=r"big.png is 64x64 = 4,096 pixels; this page takes photos of up to 2,000 "
                       r"pixels\. Make it smaller and upload it again\.$"):
        backend.check(str(big))
    with pytest.raises(ImageError, match="up to 2,000 pixels"):
        backend.invert(str(big), "encoder")
    # No server path in any message, even when the file sits deep in a temporary folder.
    with pytest.raises(ImageError) as err:
        backend.check(str(fake))
    assert str(err.value) == ("notes.png is not a readable image; upload a JPEG, PNG, WebP, TIFF or BMP file.")
    view = backend.check(str(photo))  # 48x40 = 1920 px: accepted
    assert view.preview.size == (48, 40) and "48x40" in view.status
    inv = backend.invert(str(photo), "encoder", whole_image=True)
    assert inv.result.stem == "photo_whole"
    # The default limit accepts the 64x64 image.
    assert WebBackend(pipe, tmp_path / "w2").check(str(big)).preview.size == (64, 64)
    from dhr.errors import ConfigError

    with pytest.raises(ConfigError, match="max_pixels"):
        WebBackend(pipe, tmp_path / "w3", max_pixels=0)


def test_serve_passes_max_pixels(monkeypatch):
    import typer
    from typer.testing import CliRunner

    import dhr.web.app as web
    from dhr.cli.run import register

    seen = {}
    monkeypatch.setattr(web, "serve", lambda model, **kw: seen.update(kw, model=model))
    app = typer.Typer()
    register(app)
    r = CliRunner().invoke(app, ["serve", "--max-pixels", "2000", "--port", "7999"])
    assert r.exit_code == 0, r.output
    assert seen["max_pixels"] == 2000 and seen["port"] == 7999 and seen["host"] == "127.0.0.1"
    r = CliRunner().invoke(app, ["serve", "--max-pixels", "0"])
    assert r.exit_code == 2


def test_gradio_app_builds(env, tmp_path):
    pytest.importorskip("gradio", reason="gradio not installed (pip install gradio)")
    from dhr.web.app import build_app

    demo = build_app(env[0], workdir=tmp_path)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"photo", "preview", "status", "invert", "aligned", "mask", "inversion", "slider-age", "slider-smile", "edit", "pasted",
            "files"} <= ids


def _png_bomb(path: Path, size: int = 100_000) -> Path:
    """A valid 1x1 grey PNG whose header claims ``size`` x ``size`` pixels (a decompression bomb)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0\0"))
                     + chunk(b"IEND", b""))
    return path


def test_plain_error_drops_paths_reprs_and_cli_advice():
    from dhr.web.app import plain_error

    raw = ("/tmp/gradio/0a1b2c/my notes.png is not a readable image (cannot identify image file "
           "<_io.BytesIO object at 0x7f3a2b1c>); pass a JPEG, PNG, WebP, TIFF or BMP file.")
    assert plain_error(raw) == "my notes.png is not a readable image; upload a JPEG, PNG, WebP, TIFF or BMP file."
    # Known paths (folders with spaces too) are replaced as given.
    assert plain_error("/srv/a b/c.png is odd", names={"/srv/a b/c.png": "c.png"}) == "c.png is odd."
    msg = plain_error("x.png has 9x9 = 81 pixels, more than max_pixels=80; downscale the photo or raise max_pixels.")
    assert "max_pixels" not in msg and msg.startswith("x.png has 9x9")
    assert plain_error("model /srv/models/f/config.json: bad; set --set refine.steps=3") == "model config.json: bad."
    assert plain_error(ValueError("C:\\Users\\me\\AppData\\x.png is odd")) == "x.png is odd."


def test_mask_overlay_shows_the_face_when_nothing_is_out():
    from dhr.web.app import OOD_COLOUR, mask_overlay

    crop = Image.fromarray(np.full((8, 8, 3), 250, np.uint8))
    white = Image.fromarray(np.full((8, 8), 255, np.uint8), "L")
    assert np.array_equal(np.asarray(mask_overlay(crop, white)), np.asarray(crop))  # not a white square
    m = np.full((8, 8), 255, np.uint8)
    m[:, 4:] = 0
    out = np.asarray(mask_overlay(crop, Image.fromarray(m, "L")))
    assert tuple(out[0, 4]) == OOD_COLOUR and out[0, 6, 1] < 150 and tuple(out[0, 0]) == (250, 250, 250)


def test_ood_mask_bomb_and_bad_mask_are_plain_errors(env, tmp_path):
    pipe, photo, _ = env
    backend = WebBackend(pipe, tmp_path / "work", max_pixels=2000)
    with pytest.raises(ImageError) as err:
        backend.invert(str(photo), "dhr", ood_mask=str(_png_bomb(tmp_path / "mask.png")))
    claim = f"{2 * Image.MAX_IMAGE_PIXELS / 1e6:.3g}"  # Pillow refuses to open above twice its limit
    assert str(err.value) == (f"mask.png is far too large (its header claims more than {claim} megapixels); this "
                              "page takes masks of up to 2,000 pixels. Make it smaller and upload it again.")
    with pytest.raises(ImageError, match=r"^m3.png is 300x300 = 90,000 pixels; this page takes masks of up to 2,000"):
        backend.invert(str(photo), "dhr", ood_mask=str(_png_bomb(tmp_path / "m3.png", 300)))
    (tmp_path / "m.png").write_bytes(b"GIF89a garbage")
    with pytest.raises(ImageError, match=r"^m.png is (not a readable|corrupt)"):
        backend.invert(str(photo), "dhr", ood_mask=str(tmp_path / "m.png"))
    # With a large pixel limit the decoder's own bomb guard answers, still without a traceback or path.
    big = WebBackend(pipe, tmp_path / "w2", max_pixels=10**11)
    with pytest.raises(DHRError) as err:
        big.invert(str(photo), "dhr", ood_mask=str(_png_bomb(tmp_path / "mask2.png")))
    assert str(tmp_path) not in str(err.value) and "mask2.png" in str(err.value)


def test_unnamed_directions_are_split_out(tmp_path):
    from dhr.web.app import is_unnamed_direction

    assert is_unnamed_direction("pc3") and is_unnamed_direction("sefa0") and is_unnamed_direction("x", "ganspace")
    assert not is_unnamed_direction("age") and not is_unnamed_direction("pcx")
    pipe = Pipeline.from_pretrained(make_tiny_model(tmp_path / "m", directions=("age", "pc0", "smile", "sefa1")),
                                    device="cpu", config=TINY_CONFIG)
    assert WebBackend(pipe, tmp_path / "w").split_directions() == (["age", "smile"], ["pc0", "sefa1"])


def test_work_folder_is_cleaned_per_session_on_close_and_capped(env, tmp_path):
    pipe, photo, _ = env
    backend = WebBackend(pipe, max_work_bytes=10**9)  # owns a fresh temporary folder
    inv = backend.invert(str(photo), "encoder", whole_image=True).result
    a = backend.edit(inv, {"age": 1.0}, session="sess-a")
    b = backend.edit(inv, {"age": 2.0}, session="sess-b")
    assert all(Path(f).is_file() for f in a.files + b.files)
    backend.end_session("sess-a")
    assert not any(Path(f).exists() for f in a.files) and all(Path(f).is_file() for f in b.files)
    # Cap: each edit writes a few KB; with a cap of one edit's size only the newest edit folder stays.
    one = backend.work_bytes()
    backend.max_work_bytes = one
    c = backend.edit(inv, {"age": 3.0}, session="sess-b")
    assert all(Path(f).is_file() for f in c.files) and not any(Path(f).exists() for f in b.files)
    assert backend.work_bytes() <= one
    workdir = backend.workdir
    backend.close()
    assert not workdir.exists()
    from dhr.errors import ConfigError

    with pytest.raises(ConfigError, match="max_work_bytes"):
        WebBackend(pipe, tmp_path / "w", max_work_bytes=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


