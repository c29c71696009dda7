"""Tests of dhr.editing.media (grids, sheets, GIF, MP4)."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dhr.editing.media import contact_sheet, save_gif, save_mp4, save_png, sweep_grid
from dhr.errors import ConfigError, ImageError


def _img(h: int, w: int, value: int) -> np.ndarray:
    img = np.full((h, w, 3), value, np.uint8)
    img[: h // 2, :, 0] = 255 - value  # not flat, so GIF frames stay distinct
    return img


def test_sweep_grid_layout_and_labels(tmp_path: Path) -> None:
    rows = [[_img(16, 16, 10 * (i + j)) for j in range(3)] for i in range(2)]
    plain = sweep_grid(rows, pad=2)
    assert plain.dtype == np.uint8 and plain.shape == (2 * 16 + 3 * 2, 3 * 16 + 4 * 2, 3)
    np.testing.assert_array_equal(plain[2:18, 2:18], rows[0][0])
    labelled = sweep_grid(rows, ["smile", "age"], ["-2", "0", "+2"], pad=2, font_size=10)
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    top = labelled.shape[0] - plain.shape[0]
    left = labelled.shape[1] - plain.shape[1]
    assert (labelled[:top] < 128).any()  # column labels drawn (dark text on white)
    assert (labelled[:, :left] < 128).any()  # row labels drawn
    np.testing.assert_array_equal(labelled[top + 2:top + 18, left + 2:left + 18], rows[0][0])
    path = save_png(labelled, tmp_path / "out" / "grid.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), labelled)


def test_grid_errors() -> None:
    with pytest.raises(ConfigError, match="same length"):
        sweep_grid([[_img(4, 4, 0)], [_img(4, 4, 0), _img(4, 4, 0)]])
    with pytest.raises(ConfigError, match="column labels"):
        sweep_grid([[_img(4, 4, 0)]], col_labels=["a", "b"])
    with pytest.raises(ImageError, match="uint8"):
        sweep_grid([[np.zeros((4, 4, 3), np.float32)]])


def test_contact_sheet() -> None:
    sheet = contact_sheet({"input": _img(20, 12, 0), "edit": _img(16, 16, 200)}, pad=2)
    assert sheet.dtype == np.uint8 and sheet.ndim == 3
    assert sheet.shape[1] == 2 * 16 + 3 * 2  # cells as wide as the widest image
    with pytest.raises(ConfigError):
        contact_sheet({})


@pytest.mark.parametrize("pingpong", [False, True])
def test_save_gif(tmp_path: Path, pingpong: bool) -> None:
    frames = [_img(16, 16, 40 * i) for i in range(5)]
    path = save_gif(frames, tmp_path / "a.gif", fps=10, pingpong=pingpong)
    with Image.open(path) as im:
        assert im.n_frames == (8 if pingpong else 5)
        assert im.info["duration"] == 100
        im.seek(2)
        np.testing.assert_allclose(np.asarray(im.convert("RGB"), float), frames[2], atol=8)
    with pytest.raises(ImageError, match="same size"):
        save_gif([_img(16, 16, 0), _img(8, 8, 0)], tmp_path / "b.gif")
    with pytest.raises(ConfigError, match="fps"):
        save_gif(frames, tmp_path / "c.gif", fps=0)


def test_save_mp4_odd_size(tmp_path: Path) -> None:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    frames = [_img(17, 23, 20 * i) for i in range(6)]
    path = save_mp4(frames, tmp_path / "v.mp4", fps=12, pingpong=True)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert tuple(meta["size"]) == (24, 18)  # padded to even width and height
    count = sum(1 for _ in reader)
    assert count == 10  # 6 forward + 4 back


def test_save_mp4_missing_dependency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args, **kwargs):
        if name == "imageio_ffmpeg":
            raise ImportError("no imageio_ffmpeg")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match="pip install imageio-ffmpeg"):
        save_mp4([_img(8, 8, 0)], tmp_path / "v.mp4")


def test_mask_overlay_tints_out_of_domain_and_keeps_an_all_white_mask_visible():
    from dhr.editing.media import OOD_COLOUR, mask_overlay

    img = np.full((6, 8, 3), 200, np.uint8)
    assert np.array_equal(mask_overlay(img, np.full((6, 8), 255, np.uint8)), img)
    m = np.ones((3, 4), np.float32)  # half size, float: resized to the image
    m[:, 2:] = 0
    out = mask_overlay(img, m)
    assert out.shape == img.shape and tuple(out[0, 4]) == OOD_COLOUR  # outline on the boundary
    assert out[0, 7, 0] > out[0, 7, 1] + 60 and tuple(out[0, 0]) == (200, 200, 200)
    with pytest.raises(ImageError, match=r"mask must be \(H, W\)"):
        mask_overlay(img, np.zeros((2, 2, 3)))


def test_animation_strengths_and_frames():
    from dhr.editing.media import ANIMATION_MIN_FRAMES, animation_frames, animation_strengths, fit_long_side

    s = animation_strengths((-3, -2, -1, 0, 1, 2, 3))
    assert s[0] == -3 and s[-1] == 3 and 2 * len(s) - 2 >= ANIMATION_MIN_FRAMES >= 24
    assert np.allclose(np.diff(s), s[1] - s[0]) and 0.0 in s  # the reconstruction is one of the frames
    assert animation_strengths((2.0,)) == (2.0,) and len(animation_strengths(range(40))) == 40
    assert fit_long_side(np.zeros((40, 64, 3), np.uint8)).shape == (320, 512, 3)
    assert fit_long_side(np.zeros((2000, 1000, 3), np.uint8)).shape == (512, 256, 3)
    frames = animation_frames([np.full((32, 32, 3), v, np.uint8) for v in (0, 255)], (-1.0, 1.0), "age")
    assert frames[0].shape == (512, 512, 3) and frames[0][300, 300, 0] == 0 and frames[1][300, 300, 0] == 255
    assert frames[0][5:15, 5:40].min() == 0 and frames[0][2, 2].tolist() == [255, 255, 255]  # the label box
