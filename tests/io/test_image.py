"""Tests of dhr.io.image: decoding edge cases, EXIF/ICC preservation and tensor conversion."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from dhr.errors import ImageError, ShapeError
from dhr.io.image import Photo, load_image, save_image, tensor_to_uint8, uint8_to_tensor

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def _encode(im: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _halves(w: int = 20, h: int = 10) -> Image.Image:
    im = Image.new("RGB", (w, h), BLUE)
    im.paste(RED, (0, 0, w // 2, h))
    return im


def test_plain_rgb_and_sha(tmp_path: Path) -> None:
    data = _encode(_halves())
    path = tmp_path / "a.png"
    path.write_bytes(data)
    photo = load_image(path)
    assert photo.pixels.shape == (10, 20, 3) and photo.pixels.dtype == np.uint8
    assert photo.original_size == (20, 10)
    assert photo.sha256 == hashlib.sha256(data).hexdigest()
    assert photo.path == path and photo.notes == ()
    assert tuple(photo.pixels[0, 0]) == RED and tuple(photo.pixels[0, -1]) == BLUE


def test_exif_orientation_is_applied_and_reset() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    exif[0x010F] = "TestCam"
    photo = load_image(_encode(_halves(), exif=exif.tobytes()))
    # Stored 20x10 with red on the left; displayed 10 wide, 20 high with red on top.
    assert photo.pixels.shape == (20, 10, 3)
    assert photo.original_size == (20, 10)
    assert tuple(photo.pixels[0, 5]) == RED and tuple(photo.pixels[-1, 5]) == BLUE
    assert any("orientation 6" in n for n in photo.notes)
    loaded = Image.Exif()
    loaded.load(photo.exif)
    assert loaded[0x0112] == 1 and loaded[0x010F] == "TestCam"


def test_cmyk_is_converted() -> None:
    im = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    photo = load_image(_encode(im, "JPEG", quality=100))
    assert photo.pixels.shape == (8, 8, 3)
    assert "converted from CMYK" in photo.notes
    r, g, b = photo.pixels[4, 4].astype(int)
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_composites_on_white() -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((1, 1), 1)
    im.info["transparency"] = 1
    photo = load_image(_encode(im, transparency=1))
    assert tuple(photo.pixels[0, 0]) == RED
    assert tuple(photo.pixels[1, 1]) == (255, 255, 255)
    assert "converted from palette" in photo.notes


def test_rgba_composites_on_white() -> None:
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[..., 0] = 255
    arr[0, 0, 3] = 255  # opaque red
    arr[0, 1, 3] = 0  # transparent -> white
    arr[1, 0, 3] = 128  # half red over white
    photo = load_image(_encode(Image.fromarray(arr, "RGBA")))
    assert tuple(photo.pixels[0, 0]) == RED
    assert tuple(photo.pixels[0, 1]) == (255, 255, 255)
    r, g, b = photo.pixels[1, 0].astype(int)
    assert r == 255 and 120 <= g <= 135 and g == b
    assert any("alpha" in n for n in photo.notes)


def test_grayscale_and_16_bit() -> None:
    photo = load_image(_encode(Image.new("L", (3, 3), 77)))
    assert (photo.pixels == 77).all() and "converted from grayscale" in photo.notes
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    photo16 = load_image(_encode(Image.fromarray(arr)))
    assert photo16.pixels[0, :, 0].tolist() == [0, 128, 255]
    assert (photo16.pixels[..., 0] == photo16.pixels[..., 2]).all()
    assert any("8-bit" in n for n in photo16.notes)


def test_corrupt_truncated_and_non_images(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, not an image")
    with pytest.raises(ImageError, match="notes.txt.*not a readable image") as err:
        load_image(bad)
    assert "BytesIO" not in str(err.value)  # Pillow's object repr is no use to a user
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.jpg is an empty file \(0 bytes\)"):
        load_image(empty)
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg.*(corrupt|truncated)"):
        load_image(cut)
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")


def test_pixel_limit() -> None:
    data = _encode(Image.new("RGB", (100, 100)))
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(data, max_pixels=5_000)
    assert load_image(data, max_pixels=10_000).pixels.shape == (100, 100, 3)


def test_save_keeps_exif_and_icc(tmp_path: Path) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 3
    exif[0x010F] = "TestCam"
    src = load_image(_encode(_halves(), exif=exif.tobytes(), icc_profile=icc))
    assert src.icc_profile == icc
    for suffix in (".png", ".jpg"):
        out = save_image(tmp_path / f"out{suffix}", src)
        again = load_image(out)
        assert again.pixels.shape == src.pixels.shape  # not rotated a second time
        assert again.icc_profile == icc
        tags = Image.Exif()
        tags.load(again.exif)
        assert tags[0x0112] == 1 and tags[0x010F] == "TestCam"
    exact = load_image(tmp_path / "out.png")
    np.testing.assert_array_equal(exact.pixels, src.pixels)


def test_save_tensor_and_bad_input(tmp_path: Path) -> None:
    t = torch.zeros(3, 4, 5)
    path = save_image(tmp_path / "t.png", t)
    assert (load_image(path).pixels == 128).all()  # 127.5 rounds to 128 (half to even: 128)
    with pytest.raises(ImageError, match="uint8"):
        save_image(tmp_path / "x.png", np.zeros((4, 4), dtype=np.uint8))


def test_tensor_round_trip_and_rounding() -> None:
    values = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    t = uint8_to_tensor(values)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert float(t.min()) == -1.0 and float(t.max()) == 1.0
    np.testing.assert_array_equal(tensor_to_uint8(t), values)
    # p = (x + 1) * 127.5: 100.4 -> 100, 100.6 -> 101 (rounding, not truncation)
    x = torch.tensor([100.4, 100.6, 300.0, -5.0]).view(1, 1, 4).expand(3, 1, 4) / 127.5 - 1
    assert tensor_to_uint8(x)[0, :, 0].tolist() == [100, 101, 255, 0]
    batch = uint8_to_tensor(values[None].repeat(2, 0))
    assert batch.shape == (2, 3, 16, 16)
    assert tensor_to_uint8(batch).shape == (2, 16, 16, 3)
    with pytest.raises(ShapeError):
        uint8_to_tensor(values.astype(np.float32))
    with pytest.raises(ShapeError):
        tensor_to_uint8(torch.zeros(4, 2, 2))


def test_photo_is_frozen_and_read_only() -> None:
    photo = load_image(_encode(_halves()))
    assert isinstance(photo, Photo)
    with pytest.raises(AttributeError):
        photo.path = None  # type: ignore[misc]
    with pytest.raises(ValueError):
        photo.pixels[0, 0, 0] = 1
    assert photo.to_tensor().shape == (3, 10, 20)
