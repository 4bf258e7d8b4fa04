"""Zero-shot segmentation: windows, value features, the protocol end to end and a known-answer case."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tipsv2_sdk import segmentation
from tipsv2_sdk.segmentation import (dense_features, short_side_shape, similarity_map, sliding_windows,
                                     value_features, zero_shot_segment)


def _image(h: int = 70, w: int = 100, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("h,w,window,stride", [(448, 597, 448, 336), (448, 448, 448, 336), (56, 93, 56, 42),
                                               (100, 1000, 56, 42), (30, 40, 56, 42), (57, 56, 56, 42)])
def test_sliding_windows_cover_the_image(h, w, window, stride):
    boxes = sliding_windows(h, w, window, stride)
    cover = np.zeros((h, w), np.int32)
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= h and 0 <= x1 < x2 <= w
        assert (y2 - y1, x2 - x1) == (min(window, h), min(window, w))  # one shape: windows batch together
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1
    rows = max(-(-(h - window) // stride), 0) + 1
    cols = max(-(-(w - window) // stride), 0) + 1
    assert len(boxes) == rows * cols


def test_sliding_windows_tips_numbers():
    # 448-px short side of a 4:3 image: two windows side by side, stride 336, the second shifted to the edge.
    assert sliding_windows(448, 597, 448, 336) == [(0, 448, 0, 448), (0, 448, 149, 597)]
    with pytest.raises(ValueError):
        sliding_windows(10, 10, 0, 1)


def test_short_side_shape():
    assert short_side_shape(480, 640, 448) == (448, 597)
    assert short_side_shape(640, 480, 448) == (597, 448)
    assert short_side_shape(100, 100, 56) == (56, 56)


# ------------------------------------------------------------------------------------------ features
def test_value_features_match_a_manual_computation(tiny_model):
    vision = tiny_model.hf_model.vision_model
    pixels = torch.rand(2, 3, 56, 70, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = value_features(tiny_model, pixels)
        x = vision.embeddings(pixels)
        for layer in vision.encoder.layer[:-1]:
            x = layer(x, None)
        last = vision.encoder.layer[-1]
        att = last.attention
        y = F.layer_norm(x, (x.shape[-1],), last.norm1.weight, last.norm1.bias, last.norm1.eps)
        v = y @ att.v_proj.weight.T + (att.v_proj.bias if att.v_proj.bias is not None else 0)
        x = x + (v @ att.o_proj.weight.T + att.o_proj.bias) * last.layer_scale1.lambda1
        x = x + last.mlp(last.norm2(x)) * last.layer_scale2.lambda1
        x = vision.layernorm(x)
        expected = x[:, 2:].reshape(2, 4, 5, -1)
        plain = tiny_model.vision_tokens(pixels).patches
    assert got.shape == (2, 4, 5, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dense_features(tiny_model, pixels, "patch"), plain, atol=1e-6, rtol=1e-6)
    assert (got - plain).abs().max() > 1e-2  # value features are not the ordinary patch tokens
    with pytest.raises(ValueError, match="features"):
        dense_features(tiny_model, pixels, "cls")


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("mode", ["sliding", "whole"])
def test_segment_shapes_probabilities_and_determinism(tiny_model, mode):
    img = _image()
    labels = ["sky", "tree", "road"]
    seg = tiny_model.zero_shot_segment(img, labels, mode=mode)
    assert seg.probs.shape == (3, 70, 100) and seg.probs.dtype == np.float32
    assert seg.label_map.shape == (70, 100) and seg.size == (70, 100)
    np.testing.assert_allclose(seg.probs.sum(axis=0), 1.0, atol=1e-5)
    assert (seg.probs >= 0).all()
    np.testing.assert_array_equal(seg.label_map, seg.probs.argmax(axis=0))
    assert seg.labels == labels and seg.mode == mode
    # 70x100 -> short side 56 -> 56x80: two 56-px windows (stride 42) in sliding mode.
    assert seg.windows == (2 if mode == "sliding" else 1)
    again = zero_shot_segment(tiny_model, img, labels, mode=mode)
    np.testing.assert_array_equal(again.probs, seg.probs)
    summary = seg.summary()
    assert [row["label"] for row in summary] == labels
    assert sum(row["fraction"] for row in summary) == pytest.approx(1.0)


def test_segment_defaults_to_tcl_templates_and_value_features(tiny_model):
    img, labels = _image(56, 84), ["red", "green"]
    default = zero_shot_segment(tiny_model, img, labels)
    np.testing.assert_array_equal(default.probs, zero_shot_segment(tiny_model, img, labels, templates="tcl").probs)
    assert not np.allclose(default.probs, zero_shot_segment(tiny_model, img, labels, templates="simple").probs)
    patch = zero_shot_segment(tiny_model, img, labels, features="patch")
    assert patch.features == "patch" and not np.allclose(default.probs, patch.probs)


def test_segment_temperature_and_background_threshold(tiny_model):
    img, labels = _image(), ["sky", "tree", "road"]
    flat = zero_shot_segment(tiny_model, img, labels, temperature=1.0)
    sharp = zero_shot_segment(tiny_model, img, labels)  # the model's temperature (~0.005)
    assert flat.temperature == 1.0 and sharp.temperature == pytest.approx(tiny_model.temperature)
    assert flat.probs.max() < 0.5 < sharp.probs.max()  # cosines of a random model are small
    none = zero_shot_segment(tiny_model, img, labels, background_threshold=1.01)
    assert (none.label_map == -1).all()
    assert none.summary()[0]["fraction"] == 0.0
    some = zero_shot_segment(tiny_model, img, labels, background_threshold=0.0)
    assert (some.label_map >= 0).all()


def test_segment_refuses_bad_arguments(tiny_model, tmp_path):
    img = _image()
    for kwargs, match in (({"mode": "slide"}, "mode"), ({"features": "cls"}, "features"),
                          ({"image_size": 50}, "multiple"), ({"temperature": -1.0}, "temperature"),
                          ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            zero_shot_segment(tiny_model, img, ["a", "b"], **kwargs)
    with pytest.raises(ValueError, match="empty"):
        zero_shot_segment(tiny_model, img, [])
    from tipsv2_sdk import ImageLoadError

    with pytest.raises(ImageLoadError, match="missing.png"):
        zero_shot_segment(tiny_model, tmp_path / "missing.png", ["a"])


def test_segment_encodes_label_prompts_once(tiny_model, monkeypatch):
    calls = []
    original = tiny_model.encode_texts
    monkeypatch.setattr(tiny_model, "encode_texts", lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw))
    labels = ["unique label one", "unique label two"]
    for _ in range(3):
        zero_shot_segment(tiny_model, _image(), labels, mode="whole")
    assert calls == [18]  # 2 labels x 9 TCL templates, encoded on the first call only


# ------------------------------------------------------------------------------------------ known answer
def _colour_features(model, pixels, features="value"):
    """Stand-in for the network: each patch's feature is its mean colour minus grey, padded to D."""
    pooled = F.avg_pool2d(pixels.float(), model.patch_size) - 0.5  # (B, 3, h, w)
    feats = pooled.permute(0, 2, 3, 1)
    return torch.cat([feats, torch.zeros(*feats.shape[:3], model.embed_dim - 3)], dim=-1)


@pytest.mark.parametrize("mode", ["sliding", "whole"])
def test_segment_known_answer_geometry(tiny_model, monkeypatch, mode):
    """Red top-left block on blue: with colour features and colour text vectors the map must match."""
    h, w = 84, 140  # sliding: short side 84 -> 56, resized 56x93, two windows
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = 255
    img[:42, :70] = (255, 0, 0)
    text = np.zeros((2, tiny_model.embed_dim), np.float32)
    text[0, :3] = np.array([1, -1, -1]) / np.sqrt(3)  # red
    text[1, :3] = np.array([-1, -1, 1]) / np.sqrt(3)  # blue
    monkeypatch.setattr(segmentation, "dense_features", _colour_features)
    monkeypatch.setattr(segmentation, "label_embeddings", lambda *a, **k: text.copy())
    seg = zero_shot_segment(tiny_model, img, ["red", "blue"], mode=mode)
    expected = np.ones((h, w), np.int64)
    expected[:42, :70] = 0
    # Away from the block's edges (one patch of the resized image is 21-25 px here) the answer is exact.
    yy, xx = np.mgrid[:h, :w]
    near = ((np.abs(xx - 70) <= 26) & (yy <= 42 + 26)) | ((np.abs(yy - 42) <= 26) & (xx <= 70 + 26))
    far = ~near
    np.testing.assert_array_equal(seg.label_map[far], expected[far])
    assert seg.probs[0, 5, 5] > 0.99 and seg.probs[1, -5, -5] > 0.99


# ------------------------------------------------------------------------------------------ similarity map
def test_similarity_map_is_cosine_of_value_features_and_text(tiny_model):
    img = _image(56, 56)
    sim = similarity_map(tiny_model, img, "a red circle")
    assert sim.shape == (4, 4) and sim.dtype == np.float32
    pixels = torch.from_numpy(np.asarray(Image.fromarray(img), np.float32).transpose(2, 0, 1) / 255.0)[None]
    with torch.no_grad():
        feats = F.normalize(value_features(tiny_model, pixels)[0], dim=-1).numpy()
    expected = feats @ tiny_model.encode_texts(["a red circle"])[0]
    np.testing.assert_allclose(sim, expected, atol=1e-5)
    assert similarity_map(tiny_model, img, "circle", templates="tcl").shape == (4, 4)
    with pytest.raises(ValueError, match="text"):
        similarity_map(tiny_model, img, " ")
