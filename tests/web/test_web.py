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
    with pytest.raises(ImageError, match="upload"):
        backend.invert(None)
    with pytest.raises(FaceNotFoundError):
        backend.invert(str(photo), "encoder", whole_image=False)
    with pytest.raises(EditError, match="invert a photo first"):
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
    assert all(Path(f).is_file() and Path(f).is_relative_to(tmp_path / "work") for f in ed.files)
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
    assert "given by the user" in masked.status
    mk = np.asarray(masked.mask.convert("L"))
    assert mk[100:156, -40:].max() == 0 and mk[:, :40].min() == 255
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
    with pytest.raises(ImageError, match=r"64x64 = 4,096 pixels, more than max_pixels=2,000"):
        backend.check(str(big))
    with pytest.raises(ImageError, match="max_pixels"):
        backend.invert(str(big), "encoder")
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_browser_upload_invert_edit_download(env, tmp_path):
    pytest.importorskip("gradio", reason="gradio not installed (pip install gradio)")
    pw = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("chromium not found (Debian: apt-get install -y chromium)")
    from dhr.web.app import build_app

    pipe, photo, _ = env
    fake, big = _bad_uploads(tmp_path)
    demo = build_app(pipe, workdir=tmp_path / "work", max_pixels=2000)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with pw.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.wait_for_selector("#invert", timeout=30_000)
            upload = page.locator("#photo input[type=file]")
            status = page.locator("#status")
            # A text file named .png: a clear message in the page, no preview.
            upload.set_input_files(str(fake))
            pw.expect(status).to_contain_text("not a readable image", timeout=30_000)
            assert status.is_visible() and "Error" in status.inner_text()
            assert page.locator("#preview img").count() == 0
            # Over the pixel limit.
            page.click("#photo button[aria-label='Clear']")
            upload.set_input_files(str(big))
            pw.expect(status).to_contain_text("more than max_pixels=2,000", timeout=30_000)
            # The server still serves: a valid photo is previewed, inverted and edited.
            page.click("#photo button[aria-label='Clear']")
            upload.set_input_files(str(photo))
            pw.expect(status).to_contain_text("48x40 px", timeout=30_000)
            page.wait_for_selector("#preview img", timeout=30_000)
            page.click("#invert")
            page.wait_for_selector("#inversion img", timeout=120_000)
            page.wait_for_selector("#mask img", timeout=10_000)
            assert "photo_whole" in page.inner_text("#status")
            number = page.locator("#slider-age input[type=number]")
            number.fill("1.5")
            number.press("Enter")
            page.click("#edit")
            page.wait_for_selector("#pasted img", timeout=60_000)
            page.wait_for_selector("#files a", timeout=30_000)
            listing = page.inner_text("#files").replace("\n", "")
            assert "photo_whole_age+1.5.png" in listing and "photo_whole.safetensors" in listing, listing
            hrefs = [page.locator("#files a").nth(i).get_attribute("href") for i in range(4)]
            assert all(h and "photo_whole" in h for h in hrefs), hrefs
            browser.close()
    finally:
        demo.close()
    assert list((tmp_path / "work").rglob("photo_whole_age+1.5.png"))
