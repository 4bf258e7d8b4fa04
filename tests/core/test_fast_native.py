"""Native-aspect encoding: images grouped by target size (no padded batch), results in input order, threads."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tipsv2_sdk.native_size import NativeEmbeddings, native_size, size_batches


def test_native_size_keeps_aspect_rounds_to_patches_and_never_upscales():
    assert native_size(448, 448, 14, 448) == (448, 448)
    assert native_size(900, 600, 14, 448) == (448, 294)  # 600 * 448/900 = 298.7 -> 21 patches
    assert native_size(600, 900, 14, 448) == (294, 448)
    assert native_size(100, 60, 14, 448) == (98, 56)  # small images keep their size (rounded)
    assert native_size(3, 2000, 14, 448) == (14, 448)  # at least one patch
    with pytest.raises(ValueError, match="max_side=10"):
        native_size(100, 100, 14, 10)
    with pytest.raises(ValueError, match="empty"):
        native_size(0, 10, 14, 448)


def test_size_batches_group_by_size_largest_first_in_input_order():
    sizes = [(28, 56), (56, 56), (28, 56), (28, 28), (56, 56), (28, 56), (56, 56)]
    batches = size_batches(sizes, batch_size=2)
    assert batches == [[1, 4], [6], [0, 2], [5], [3]]
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))  # every input exactly once
    assert all(len({sizes[i] for i in b}) == 1 for b in batches)  # no batch mixes sizes, so none pads
    with pytest.raises(ValueError, match="batch_size"):
        size_batches(sizes, 0)


def _mixed_inputs(tmp_path):
    """Files, PIL images, arrays and a tensor of three aspect ratios, interleaved."""
    gen = np.random.default_rng(3)
    arrays = [gen.integers(0, 255, size=hw + (3,), dtype=np.uint8)
              for hw in [(28, 56), (56, 56), (28, 56), (56, 28), (56, 56), (28, 56)]]
    path = tmp_path / "wide.png"
    Image.fromarray(arrays[0]).save(path)
    tensor = torch.from_numpy(arrays[3].transpose(2, 0, 1).astype(np.float32) / 255.0)
    return [path, Image.fromarray(arrays[1]), arrays[2], tensor, arrays[4], arrays[5]]


def test_batches_are_one_size_and_results_match_encoding_each_alone(tiny_model, tmp_path, monkeypatch):
    images = _mixed_inputs(tmp_path)
    alone = [tiny_model.encode_images_native([img], progress=False) for img in images]
    shapes = []
    real = tiny_model.vision_tokens
    monkeypatch.setattr(tiny_model, "vision_tokens", lambda px: (shapes.append(tuple(px.shape)), real(px))[1])
    got = tiny_model.encode_images_native(images, batch_size=8, progress=False)
    assert isinstance(got, NativeEmbeddings) and len(got) == len(images)
    # 3 distinct sizes -> 3 forward passes, largest first, each batch holding one size only.
    assert shapes == [(2, 3, 56, 56), (3, 3, 28, 56), (1, 3, 56, 28)]
    assert got.indices.tolist() == list(range(len(images)))
    assert got.grids == [(2, 4), (4, 4), (2, 4), (4, 2), (4, 4), (2, 4)]
    for i, one in enumerate(alone):
        np.testing.assert_allclose(got.cls1[i], one.cls1[0], atol=1e-5)
        np.testing.assert_allclose(got.cls2[i], one.cls2[0], atol=1e-5)
        assert got.patches[i].shape == (*got.grids[i], tiny_model.embed_dim)
        np.testing.assert_allclose(got.patches[i], one.patches[0], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got.cls1, axis=1), 1.0, atol=1e-5)
    # A square image at the model's size is what encode_images computes.
    square = np.random.default_rng(5).integers(0, 255, size=(56, 56, 3), dtype=np.uint8)
    np.testing.assert_allclose(tiny_model.encode_images_native([square], progress=False).cls1,
                               tiny_model.encode_images([square], progress=False).cls1, atol=1e-5)


def test_small_windows_decoding_ahead_and_skips_keep_order(tiny_model, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    images = _mixed_inputs(tmp_path)
    images.insert(2, bad)
    ahead = tiny_model.encode_images_native(images, batch_size=2, window=3, workers=2, on_error="skip",
                                            progress=False)
    inline = tiny_model.encode_images_native(images, batch_size=4, workers=0, on_error="skip", progress=False)
    assert ahead.indices.tolist() == inline.indices.tolist() == [0, 1, 3, 4, 5, 6]
    assert [s.index for s in ahead.skipped] == [2] == [s.index for s in inline.skipped]
    np.testing.assert_allclose(ahead.cls1, inline.cls1, atol=1e-5)
    assert ahead.sources[0].endswith("wide.png")
    with pytest.raises(Exception, match="bad.png"):
        tiny_model.encode_images_native(images, progress=False)
    lean = tiny_model.encode_images_native(images[:2], with_patches=False, progress=False)
    assert lean.grids == [(2, 4), (4, 4)] and lean.patches[0].shape == (0, 0, tiny_model.embed_dim)


def test_native_path_runs_fast_modes_and_respects_threads(tiny_model, tmp_path, monkeypatch):
    images = _mixed_inputs(tmp_path)
    exact = tiny_model.encode_images_native(images, progress=False)
    int8 = tiny_model.encode_images_native(images, progress=False, precision="int8")
    assert float((exact.cls1 * int8.cls1).sum(-1).min()) >= 0.99 and not np.array_equal(exact.cls1, int8.cls1)
    seen = []
    real = tiny_model.vision_tokens
    monkeypatch.setattr(tiny_model, "vision_tokens", lambda px: (seen.append(torch.get_num_threads()), real(px))[1])
    before = torch.get_num_threads()
    tiny_model.encode_images_native(images, progress=False, threads=1)
    assert seen and set(seen) == {1} and torch.get_num_threads() == before


def test_encode_texts_respects_threads(tiny_model, monkeypatch):
    seen = []
    real = tiny_model.text_features
    monkeypatch.setattr(tiny_model, "text_features",
                        lambda ids, mask: (seen.append(torch.get_num_threads()), real(ids, mask))[1])
    before = torch.get_num_threads()
    tiny_model.encode_texts(["a cat", "a red square", "two dogs"], batch_size=2, threads=1)
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_bad_arguments_are_refused(tiny_model):
    with pytest.raises(ValueError, match="on_error"):
        tiny_model.encode_images_native([], on_error="ignore")
    with pytest.raises(ValueError, match="window"):
        tiny_model.encode_images_native([], window=0)
    empty = tiny_model.encode_images_native([], progress=False)
    assert len(empty) == 0 and empty.cls1.shape == (0, tiny_model.embed_dim)
