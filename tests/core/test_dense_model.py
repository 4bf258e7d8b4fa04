"""``tips.load_dense`` and ``DenseModel`` on tiny DPT directories written by transformers itself."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import dense_fixtures as fx  # tests/core is on pytest's pythonpath

import tipsv2_sdk as tips
from tipsv2_sdk.dense_model import _resize
from tipsv2_sdk.errors import CheckpointError, ImageLoadError, UnknownModelError
from tipsv2_sdk.images import pil_to_pixels


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    return fx.transformers_dpt(tmp_path_factory.mktemp("hub") / "tipsv2-tiny-dpt")


@pytest.fixture(scope="module")
def dense(dense_dir):
    return tips.load_dense(dense_dir)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return [fx.photo(root / f"p{i}.png", size, seed=i) for i, size in enumerate([(50, 40), (90, 61), (56, 56)])]


def test_predictions_have_each_images_resolution(dense, photos):
    arr = np.asarray(Image.open(photos[1]))
    inputs = [*map(str, photos), arr, Image.open(photos[0]), torch.rand(3, 33, 47)]
    sizes = [(40, 50), (61, 90), (56, 56), (61, 90), (40, 50), (33, 47)]
    results = dense.predict(inputs, batch_size=2, progress=False)
    assert [p.size for p in results.predictions] == sizes and not results.skipped
    assert [p.index for p in results.predictions] == list(range(len(inputs)))
    for p, (h, w) in zip(results.predictions, sizes):
        assert p.depth.shape == (h, w) and p.depth.dtype == np.float32
        assert 0.001 <= p.depth.min() and p.depth.max() <= 10.0  # expectation over the 0.001..10 m bins
        assert p.normals.shape == (h, w, 3)
        np.testing.assert_allclose(np.linalg.norm(p.normals, axis=-1), 1.0, atol=1e-5)
        assert p.segmentation.shape == (h, w) and p.segmentation.dtype == np.int32
        assert 0 <= p.segmentation.min() and p.segmentation.max() < fx.CLASSES
    assert dense.labels == [f"class {i}" for i in range(fx.CLASSES)]


def test_outputs_are_transformers_outputs_resized_to_the_image(dense, photos):
    img = Image.open(photos[1]).convert("RGB")
    px = torch.from_numpy(pil_to_pixels(img, 56))[None]
    with torch.no_grad():
        out = dense.hf_model(pixel_values=px)
    size = (img.height, img.width)
    depth = F.interpolate(out.predicted_depth[:, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    logits = F.interpolate(out.segmentation_logits, size=size, mode="bilinear", align_corners=False)[0]
    normals = F.normalize(F.interpolate(F.normalize(out.normals, dim=1), size=size, mode="bicubic",
                                        align_corners=False), dim=1)[0].permute(1, 2, 0)
    p = dense.predict([photos[1]], progress=False).predictions[0]
    np.testing.assert_allclose(p.depth, depth.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(p.normals, normals.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(p.segmentation, logits.argmax(0).numpy())


def test_the_predict_shortcuts_and_batching(dense, photos):
    one = dense.predict_depth(photos, batch_size=1, progress=False)
    three = dense.predict_depth(photos, batch_size=3, progress=False)
    for a, b in zip(one, three):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)  # float32 sums differ by batch size
    assert dense.predict_normals(str(photos[0]), progress=False)[0].shape == (40, 50, 3)
    assert dense.predict_segmentation(photos[:2], progress=False)[1].shape == (61, 90)


def test_any_network_input_size(dense, photos):
    small = dense.predict_depth(photos[0], image_size=28, progress=False)[0]
    large = dense.predict_depth(photos[0], image_size=84, progress=False)[0]
    assert small.shape == large.shape == (40, 50) and not np.allclose(small, large)
    with pytest.raises(ValueError, match="image_size=50 is not a positive multiple of the patch size 14"):
        dense.predict_depth(photos[0], image_size=50, progress=False)


def test_a_subset_of_heads_equals_the_full_forward(dense):
    px = torch.rand(2, 3, 56, 70)
    full = dense.raw_outputs(px)
    assert set(full) == {"depth", "normals", "segmentation"}
    for tasks in (["depth"], ["normals", "segmentation"], ["segmentation"]):
        part = dense.raw_outputs(px, tasks)
        assert set(part) == set(tasks)
        for task in tasks:
            assert torch.equal(part[task], full[task]), task


def test_task_loads_transformers_single_task_class(dense_dir, dense):
    depth_only = tips.load_dense(dense_dir, task="depth")
    assert type(depth_only.hf_model).__name__ == "Tipsv2DptForDepthEstimation"
    assert depth_only.tasks == ("depth",) and depth_only.labels == []
    px = torch.rand(1, 3, 56, 56)
    assert torch.allclose(depth_only.raw_outputs(px)["depth"], dense.raw_outputs(px, ["depth"])["depth"], atol=1e-6)
    with pytest.raises(ValueError, match="no trained normals head"):
        depth_only.predict_normals(np.zeros((20, 20, 3), np.uint8), progress=False)
    with pytest.raises(ValueError, match="task must be one of"):
        tips.load_dense(dense_dir, task="edges")


def test_single_task_directory(tmp_path):
    path = fx.transformers_dpt(tmp_path / "normals", "Tipsv2DptForNormalEstimation")
    model = tips.load_dense(path)
    assert model.tasks == ("normals",)
    assert model.predict_normals(np.zeros((30, 20, 3), np.uint8), progress=False)[0].shape == (30, 20, 3)
    with pytest.raises(CheckpointError, match=r"has no trained depth head \(it has: normals\)"):
        tips.load_dense(path, task="depth")


def test_unreadable_images_are_skipped_or_named(dense, photos, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    results = dense.predict([photos[0], broken, photos[1]], "depth", progress=False, on_error="skip")
    assert [p.index for p in results.predictions] == [0, 2]
    assert [(s.index, s.source) for s in results.skipped] == [(1, str(broken))]
    with pytest.raises(ImageLoadError, match="broken.png"):
        dense.predict_depth([photos[0], broken], progress=False)


def test_not_a_dpt_directory(tmp_path, tiny_model_dir):
    with pytest.raises(UnknownModelError, match="'tipsv2' model, not a TIPSv2 DPT model.*load it with tips.load"):
        tips.load_dense(tiny_model_dir)
    with pytest.raises(UnknownModelError, match="config.json is missing"):
        tips.load_dense(tmp_path)
    with pytest.raises(UnknownModelError, match="unknown DPT model 'no-such-dpt'.*tipsv2-b14-dpt"):
        tips.load_dense("no-such-dpt")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "tipsv2_dpt", "architectures": ["Other"]}))
    with pytest.raises(UnknownModelError, match="names no Tipsv2Dpt model class"):
        tips.load_dense(odd)


def test_weights_that_do_not_fill_the_model_are_refused(tmp_path, dense_dir):
    import shutil

    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(dense_dir, broken)
    weights = load_file(broken / "model.safetensors")
    del weights[next(k for k in weights if "fusion_blocks.3.out_conv.weight" in k)]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="does not fill Tipsv2DptForDensePrediction: missing weights"):
        tips.load_dense(broken)


def test_dense_names_follow_the_registry():
    names = tips.dense_names()
    assert names["tipsv2-b14-dpt"] == "google/tipsv2-b14-dpt"
    assert sorted(names) == sorted(f"tipsv2-{s}-dpt" for s in ("b14", "l14", "so400m14", "g14"))


def test_cached_converted_directory_is_found_by_name(tmp_path, dense_dir, monkeypatch):
    import shutil

    monkeypatch.setenv("TIPSV2_HOME", str(tmp_path))
    shutil.copytree(dense_dir, tmp_path / "tipsv2-b14-dpt")
    assert tips.load_dense("tipsv2-b14-dpt").source == str(tmp_path / "tipsv2-b14-dpt")


def test_hub_snapshot_in_the_hf_cache_loads_offline(hub_env, dense_dir, tiny_model_dir):
    from tipsv2_sdk.testing import fake_hub_cache

    snapshot = fake_hub_cache(hub_env, "google/tipsv2-b14-dpt", dense_dir)
    for name in ("tipsv2-b14-dpt", "google/tipsv2-b14-dpt"):
        model = tips.load_dense(name)
        assert model.source == str(snapshot) and model.tasks == ("depth", "normals", "segmentation")
        assert model.name == "tipsv2-b14-dpt"
    assert tips.load_dense("google/tipsv2-b14-dpt", revision="main", task="normals").tasks == ("normals",)
    fake_hub_cache(hub_env, "someone/tipsv2-encoder", tiny_model_dir)
    with pytest.raises(UnknownModelError, match="not a TIPSv2 DPT model.*'tipsv2'.*load it with tips.load"):
        tips.load_dense("someone/tipsv2-encoder")


def test_missing_offline_is_one_line_naming_the_hub_id_the_cache_and_convert(hub_env):
    from tipsv2_sdk.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError) as info:
        tips.load_dense("tipsv2-l14-dpt")
    message = str(info.value)
    assert "google/tipsv2-l14-dpt" in message and str(hub_env) in message and "\n" not in message
    assert "tipsv2 convert --variant tipsv2-l14 --vision VISION.npz --dpt DECODER.zip" in message


def test_revision_suffix_on_names():
    from tipsv2_sdk.dense import split_revision

    assert split_revision("tipsv2-b14-dpt@v1") == ("tipsv2-b14-dpt", "v1")
    assert split_revision("google/tipsv2-b14-dpt@abc") == ("google/tipsv2-b14-dpt", "abc")
    assert split_revision("my@dir") == ("my@dir", None)


def test_segmentation_label_map_in_class_chunks_equals_one_argmax():
    logits = torch.randn(40, 6, 9)
    labels = _resize("segmentation", logits, (25, 31))
    full = F.interpolate(logits[None], size=(25, 31), mode="bilinear", align_corners=False)[0].argmax(0)
    np.testing.assert_array_equal(labels, full.numpy())


def test_pictures():
    from tipsv2_sdk.dense_viz import class_fractions, depth_image, normals_image, segmentation_image

    depth = np.array([[1.0, 2.0], [3.0, np.nan]], np.float32)
    rgb = np.asarray(depth_image(depth))
    assert rgb.shape == (2, 2, 3) and rgb[0, 0].sum() > rgb[0, 1].sum() > rgb[1, 0].sum()  # near is bright
    normals = np.zeros((1, 2, 3), np.float32)
    normals[0, 0] = (0, 0, 1)
    normals[0, 1] = (-1, 0, 0)
    assert np.asarray(normals_image(normals)).tolist() == [[[128, 128, 255], [0, 128, 128]]]
    labels = [f"c{i}" for i in range(150)]
    lm = np.zeros((20, 30), np.int32)
    lm[:, 20:] = 77
    assert [r["label"] for r in class_fractions(lm, labels)] == ["c0", "c77"]
    picture = segmentation_image(Image.new("RGB", (30, 20)), lm, labels)
    assert picture.height >= 20 and picture.width < 30 + 200  # a legend of two classes, not 150


@pytest.mark.parametrize("module", ["tipsv2_sdk.dense", "tipsv2_sdk.dense_viz", "tipsv2_sdk.cli.dense"])
def test_importing_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
