"""Visualisation: PCA colours, palettes, overlays, heatmaps and their PNG files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tipsv2_sdk import ImageLoadError, viz


def _photo(h: int = 60, w: int = 80) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 255, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ loading
def test_load_rgb_accepts_every_input_kind(tmp_path):
    arr = _photo()
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    for source in (path, str(path), Image.fromarray(arr), arr, torch.from_numpy(arr).permute(2, 0, 1) / 255.0):
        img = viz.load_rgb(source)
        assert img.mode == "RGB" and img.size == (80, 60)
        np.testing.assert_array_equal(np.asarray(img), arr)
    assert viz.load_rgb(arr[..., 0]).mode == "RGB"  # grey array
    with pytest.raises(ImageLoadError, match="nope.png"):
        viz.load_rgb(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match=r"\[0, 1\]"):
        viz.load_rgb(torch.full((3, 4, 4), 2.0))


# ------------------------------------------------------------------------------------------ colours
def test_palette_is_distinct_and_deterministic():
    colours = viz.palette(40)
    assert colours.shape == (40, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 40
    np.testing.assert_array_equal(viz.palette(40)[:5], viz.palette(5))


def test_colormap_ramps_from_dark_to_bright():
    ramp = viz.colormap(np.linspace(0, 1, 11)).astype(float)
    luminance = ramp @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(luminance) > 0)
    assert tuple(viz.colormap(np.array(-3.0))) == tuple(viz.colormap(np.array(0.0)))


# ------------------------------------------------------------------------------------------ PCA
def test_pca_rgb_follows_the_main_directions():
    gen = np.random.default_rng(0)
    h, w, d = 6, 8, 16
    a = np.linspace(-1, 1, h * w)  # strongest direction, ramps over the grid
    b = gen.permutation(a)  # second direction
    basis = np.linalg.qr(gen.normal(size=(d, d)))[0]
    feats = 10 * a[:, None] * basis[0] + 3 * b[:, None] * basis[1] + 0.01 * gen.normal(size=(h * w, d))
    rgb = viz.pca_rgb(feats.reshape(h, w, d))
    assert rgb.shape == (h, w, 3) and rgb.dtype == np.uint8
    red = rgb[..., 0].ravel().astype(float)
    green = rgb[..., 1].ravel().astype(float)
    assert abs(np.corrcoef(red, a)[0, 1]) > 0.99 and abs(np.corrcoef(green, b)[0, 1]) > 0.95
    assert red.min() == 0 and red.max() == 255  # min-max scaled between percentiles
    np.testing.assert_array_equal(viz.pca_rgb(feats.reshape(h, w, d)), rgb)  # deterministic
    # Components have a fixed sign, so negated features give the complementary colours.
    flipped = viz.pca_rgb(-feats.reshape(h, w, d)).astype(int)
    assert np.abs(flipped - (255 - rgb.astype(int))).max() <= 1


def test_pca_rgb_is_robust_to_an_outlier_and_handles_small_inputs():
    gen = np.random.default_rng(1)
    feats = gen.normal(size=(20, 20, 8))
    feats[0, 0] *= 1000.0
    rgb = viz.pca_rgb(feats)
    assert np.std(rgb.reshape(-1, 3)[1:], axis=0).min() > 20  # the rest still spans the colour range
    assert viz.pca_rgb(np.ones((2, 2, 2))).shape == (2, 2, 3)  # fewer than 3 components
    joint = viz.pca_rgb(gen.normal(size=(2, 3, 3, 8)))
    assert joint.shape == (2, 3, 3, 3)
    with pytest.raises(ValueError, match="patches"):
        viz.pca_rgb(np.zeros((4, 8)))


def test_pca_image_upsamples_crisply():
    feats = np.random.default_rng(2).normal(size=(3, 4, 8))
    img = viz.pca_image(feats, (40, 30))
    assert img.size == (40, 30)
    arr = np.asarray(img)
    np.testing.assert_array_equal(arr[:10, :10], np.broadcast_to(viz.pca_rgb(feats)[0, 0], (10, 10, 3)))


# ------------------------------------------------------------------------------------------ overlays
def test_segmentation_overlay_colours_and_legend():
    photo = np.full((40, 60, 3), 128, np.uint8)
    label_map = np.zeros((40, 60), np.int64)
    label_map[:, 30:] = 1
    label_map[:5, :5] = -1
    plain = viz.segmentation_overlay(photo, label_map, ["sky", "road"], alpha=1.0, legend=False)
    assert plain.size == (60, 40)
    arr = np.asarray(plain)
    cols = viz.palette(2)
    np.testing.assert_array_equal(arr[20, 10], cols[0])
    np.testing.assert_array_equal(arr[20, 50], cols[1])
    assert arr[2, 2].max() < 128  # unassigned pixels: the image, dimmed
    with_legend = viz.segmentation_overlay(photo, label_map, ["sky", "road"])
    assert with_legend.height >= 40 and with_legend.width > 60 + 30
    # A coarse map (one cell per patch) is enlarged to the image with nearest sampling.
    coarse = viz.segmentation_overlay(photo, np.array([[0, 1]]), ["a", "b"], alpha=1.0, legend=False)
    np.testing.assert_array_equal(np.asarray(coarse)[0, 0], cols[0])
    with pytest.raises(ValueError, match="outside"):
        viz.segmentation_overlay(photo, label_map + 5, ["sky", "road"])


def test_heatmap_overlay_marks_the_hot_region():
    photo = np.full((28, 28, 3), 100, np.uint8)
    sim = np.zeros((2, 2), np.float32)
    sim[0, 1] = 1.0
    img = viz.heatmap_overlay(photo, sim, alpha=1.0)
    arr = np.asarray(img).astype(float)
    assert img.size == (28, 28)
    assert arr[2, 25].sum() > arr[25, 2].sum() + 300  # hot corner is brighter
    captioned = viz.heatmap_overlay(photo, sim, caption="a long query about a red circle")
    assert captioned.height > 28 and captioned.width >= 28
    with pytest.raises(ValueError, match="2-D"):
        viz.heatmap_overlay(photo, np.zeros(4))
    flat = viz.heatmap_overlay(photo, np.ones((2, 2)), alpha=1.0)  # constant map: no division by zero
    assert np.isfinite(np.asarray(flat, dtype=float)).all()


# ------------------------------------------------------------------------------------------ PNG files
def test_save_functions_write_pngs_of_the_expected_size(tmp_path):
    photo = _photo(42, 70)
    feats = np.random.default_rng(3).normal(size=(3, 5, 8))
    paths = {
        "pca": viz.save_pca(tmp_path / "pca.png", feats),
        "pca_img": viz.save_pca(tmp_path / "pca_img.png", feats, image=photo),
        "seg": viz.save_segmentation(tmp_path / "sub" / "seg.png", photo, np.zeros((3, 5), int), ["x"], legend=False),
        "heat": viz.save_heatmap(tmp_path / "heat.png", photo, feats[..., 0]),
    }
    sizes = {k: Image.open(v).size for k, v in paths.items()}
    assert sizes == {"pca": (80, 48), "pca_img": (70 * 2 + 4, 42), "seg": (70, 42), "heat": (70, 42)}
    for path in paths.values():
        assert Image.open(path).format == "PNG"
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # no temporaries left behind
