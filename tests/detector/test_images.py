"""Tests for detector/images.py: every kind of input ends as RGB uint8 or a named error."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detector.images import ImageReadError, image_size, is_image_file, read_image

EXIF_ORIENTATION = 0x0112  # EXIF tag id


def _pattern(w=12, h=8) -> np.ndarray:
    """A deterministic RGB pattern with distinct channels [h, w, 3]."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 20, y * 30, (x + y) * 7], axis=2).astype(np.uint8)


@pytest.mark.parametrize("ext", ["png", "bmp"])
def test_lossless_rgb_round_trip(tmp_path, ext):
    arr = _pattern()
    path = tmp_path / f"a.{ext}"
    Image.fromarray(arr).save(path)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, arr)
    assert image_size(path) == (12, 8)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _pattern()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (8, 12, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_keeps_colours_and_drops_alpha(tmp_path):
    rgba = np.dstack([_pattern(), np.full((8, 12), 10, np.uint8)])  # nearly transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), _pattern())


def test_palette_image(tmp_path):
    im = Image.fromarray(_pattern()).convert("P", palette=Image.ADAPTIVE, colors=16)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(im.convert("RGB")))


def test_sixteen_bit_grayscale_is_scaled_to_uint8(tmp_path):
    arr = np.array([[0, 1000], [2000, 4000]], np.uint16)
    Image.fromarray(arr).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    # Scaled by the maximum: 4000 -> 255, 2000 -> 127.
    np.testing.assert_array_equal(out[:, :, 0], [[0, 63], [127, 255]])


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    # Stored 40 wide x 20 tall: left half red, right half blue. EXIF orientation
    # 6 = "rotate 90 degrees clockwise to display": shown 20 wide x 40 tall, the
    # stored left edge becomes the top.
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    out = read_image(path)
    assert out.shape == (40, 20, 3)
    assert image_size(path) == (20, 40)
    top, bottom = out[:15].reshape(-1, 3).mean(0), out[25:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_truncated_jpeg_names_the_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "cut.jpg"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg") as err:
        read_image(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)


@pytest.mark.parametrize("content", [b"this is not an image\n", b""])
def test_non_image_file_names_the_file(tmp_path, content):
    path = tmp_path / "notes.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="not an image file") as err:
        read_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(ImageReadError, match="notes.jpg"):
        image_size(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="ghost.png: no such image file"):
        read_image(tmp_path / "ghost.png")
    with pytest.raises(ImageReadError, match="ghost.png: no such image file"):
        image_size(tmp_path / "ghost.png")
    with pytest.raises(ImageReadError, match="no such image file"):
        read_image(tmp_path)


def test_image_read_error_is_a_value_error():
    assert issubclass(ImageReadError, ValueError)


@pytest.mark.parametrize("name, expected", [("a.JPG", True), ("b.jpeg", True), ("c.png", True),
                                            ("d.bmp", True), ("e.txt", False), ("f", False), ("g.xml", False)])
def test_is_image_file(name, expected):
    assert is_image_file(name) is expected
