"""Preprocessing of odd images: modes, EXIF, 16-bit, alpha, corrupt files, tensors, pass-through."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tipsv2_sdk.errors import ImageLoadError
from tipsv2_sdk.image_processor import make_image_processor
from tipsv2_sdk.images import load_pixels, open_image, to_rgb


def test_rgb_png_matches_manual_bilinear(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (30, 45, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    got = load_pixels(path, 28)
    expected = np.asarray(Image.fromarray(arr).resize((28, 28), Image.BILINEAR), np.float32).transpose(2, 0, 1) / 255
    assert got.shape == (3, 28, 28) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-7)


def test_matches_transformers_image_processor():
    arr = np.random.default_rng(1).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    ours = load_pixels(img, 56)
    theirs = make_image_processor(56)(img, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_no_resample_when_already_target_size():
    arr = np.random.default_rng(2).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    exact = arr.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)  # rescale as transformers does
    np.testing.assert_array_equal(load_pixels(arr, 28), exact)
    t = torch.rand(3, 28, 28)
    assert torch.equal(torch.from_numpy(load_pixels(t, 28)), t)


def test_grayscale_palette_cmyk_become_rgb():
    gray = Image.new("L", (10, 10), 100)
    assert np.all(load_pixels(gray, 14) == pytest.approx(100 / 255))
    pal = Image.new("P", (10, 10), 0)
    pal.putpalette([255, 0, 0] + [0] * 765)
    px = load_pixels(pal, 14)
    assert px[0].min() == pytest.approx(1.0) and px[1].max() == 0.0
    cmyk = Image.new("CMYK", (10, 10), (0, 255, 255, 0))  # red in CMYK
    px = load_pixels(cmyk, 14)
    assert px[0].mean() > 0.9 and px[1].mean() < 0.1


def test_rgba_composited_over_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (8, 8), (0, 0, 0, 128))
    value = to_rgb(half).getpixel((0, 0))[0]
    assert 120 <= value <= 135


def test_16_bit_scaled_from_full_range(tmp_path):
    arr = np.full((12, 12), 65535, dtype=np.uint16)
    arr[:6] = 0
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    img = open_image(path)
    assert img.mode == "RGB"
    out = np.asarray(img)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    shown = open_image(path)
    assert shown.size == (20, 40)  # width and height swapped
    top = np.asarray(shown)[:5].mean()
    bottom = np.asarray(shown)[-5:].mean()
    assert top > 200 and bottom < 50  # the white half is now on top


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (b"not an image at all", "identify"), ("truncated", "truncated")],
)
def test_corrupt_files_raise_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_pixels(path, 14)
    assert str(path) in str(info.value)
    assert reason in str(info.value).lower()


def test_missing_file_and_decompression_bomb(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_pixels(tmp_path / "nope.png", 14)
    path = tmp_path / "big.png"
    Image.new("L", (200, 200)).save(path)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        open_image(path, max_pixels=100 * 100)


def test_bad_arrays_and_tensors_are_refused():
    with pytest.raises(ImageLoadError, match="uint8"):
        load_pixels(np.zeros((8, 8, 3), np.float32), 14)
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        load_pixels(torch.full((3, 8, 8), 3.0), 14)
    with pytest.raises(ImageLoadError, match="CHW"):
        load_pixels(torch.zeros(8, 8), 14)
    with pytest.raises(ImageLoadError, match="unsupported"):
        load_pixels(42, 14)


def test_float_tensor_resize_close_to_uint8_path():
    arr = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    t = torch.from_numpy(arr.transpose(2, 0, 1).astype(np.float32) / 255)
    np.testing.assert_allclose(load_pixels(t, 28), load_pixels(arr, 28), atol=1 / 255 + 1e-6)


def test_atomic_write_respects_umask(tmp_path):
    """Files written atomically get the usual permissions, not mkstemp's 0600."""
    import os

    from tipsv2_sdk.io import atomic_directory, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("tensor, reason", [
    (torch.rand(4, 8, 8), "is not CHW with 1 or 3 channels"),
    (torch.rand(3, 0, 8), "is not CHW with 1 or 3 channels"),
    (torch.rand(3, 8, 8) * 2, "must lie in [0, 1]"),
])
def test_tensor_refusals_are_the_same_for_every_decoder(tensor, reason):
    from tipsv2_sdk.native_size import load_native
    from tipsv2_sdk.viz import load_rgb

    for decode in (lambda t: load_pixels(t, 14), lambda t: load_rgb(t), lambda t: load_native(t, 14, 56)):
        with pytest.raises(ImageLoadError, match=re.escape(reason)):
            decode(tensor)
    grey = torch.rand(1, 28, 42)
    assert np.allclose(load_native(grey, 14, 56), grey.numpy().repeat(3, 0), atol=1e-6)  # own size: no resize
