"""Prompt templates, prompt-ensembled label embeddings and zero-shot classification."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tipsv2_sdk import zero_shot
from tipsv2_sdk.model import TipsV2
from tipsv2_sdk.templates import (IMAGENET_TEMPLATES, SUB_IMAGENET_TEMPLATES, TCL_TEMPLATES, TEMPLATE_SETS,
                                  resolve_templates)
from tipsv2_sdk.zero_shot import check_labels, label_embeddings, softmax, zero_shot_classify


def _images(n: int = 3, size: int = 56) -> list[np.ndarray]:
    gen = np.random.default_rng(7)
    return [gen.integers(0, 255, size=(size, size + 10, 3), dtype=np.uint8) for _ in range(n)]


# ------------------------------------------------------------------------------------------ templates
def test_template_sets_are_well_formed():
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert len(SUB_IMAGENET_TEMPLATES) == 7 and set(SUB_IMAGENET_TEMPLATES) <= set(IMAGENET_TEMPLATES)
    assert TCL_TEMPLATES == SUB_IMAGENET_TEMPLATES + ("a photo of many {}.", "a photo of {}s.")
    for patterns in TEMPLATE_SETS.values():
        assert all(p.count("{}") == 1 for p in patterns)


def test_resolve_templates():
    assert resolve_templates(None, "tcl") == TCL_TEMPLATES
    assert resolve_templates("imagenet7", "tcl") == SUB_IMAGENET_TEMPLATES
    assert resolve_templates(["x {} y"], "tcl") == ("x {} y",)
    assert resolve_templates("a drawing of a {}.", "tcl") == ("a drawing of a {}.",)
    with pytest.raises(ValueError, match="nope"):
        resolve_templates("nope", "tcl")
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates(["no slot here", "a {}"], "tcl")
    with pytest.raises(ValueError, match="empty"):
        resolve_templates([], "tcl")


def test_check_labels_refuses_bad_lists():
    assert check_labels(("a", "b")) == ["a", "b"]
    for bad, match in (([], "empty"), ("cat,dog", "not one string"), (["a", " "], "non-empty"),
                       (["a", "a"], "twice")):
        with pytest.raises(ValueError, match=match):
            check_labels(bad)


# ------------------------------------------------------------------------------------------ label embeddings
def test_label_embeddings_are_the_normalised_mean_of_normalised_prompts(tiny_model):
    labels = ["red circle", "blue square"]
    templates = ["a photo of a {}.", "art of the {}.", "a {} in a video game."]
    got = label_embeddings(tiny_model, labels, templates)
    per_prompt = tiny_model.encode_texts([t.replace("{}", lab) for lab in labels for t in templates])
    mean = per_prompt.reshape(2, 3, -1).mean(axis=1)
    expected = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # A single "{}" template is the plain text embedding.
    np.testing.assert_allclose(label_embeddings(tiny_model, labels, ["{}"]), tiny_model.encode_texts(labels), atol=1e-6)
    assert not np.allclose(got, tiny_model.encode_texts(labels), atol=1e-3)


def test_label_embeddings_are_cached_and_invalidated_by_weight_updates(tiny_model, monkeypatch):
    model = TipsV2(copy.deepcopy(tiny_model.hf_model), tiny_model.tokenizer, name="copy")
    calls = []
    original = model.encode_texts
    monkeypatch.setattr(model, "encode_texts", lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw))
    first = label_embeddings(model, ["dog", "cat"], "simple")
    second = label_embeddings(model, ["dog", "cat"], "simple")
    assert calls == [2]
    np.testing.assert_array_equal(first, second)
    second += 1.0  # callers get copies, never the cached array
    np.testing.assert_array_equal(label_embeddings(model, ["dog", "cat"], "simple"), first)
    label_embeddings(model, ["dog", "cat"], "tcl")  # other templates: another entry
    assert calls == [2, 18]
    with torch.no_grad():  # an optimizer step changes the weights in place
        model.hf_model.text_model.embeddings.token_embedding.weight.mul_(1.5).add_(0.01)
    third = label_embeddings(model, ["dog", "cat"], "simple")
    assert calls == [2, 18, 2]
    assert not np.allclose(third, first, atol=1e-4)


# ------------------------------------------------------------------------------------------ classification
def test_classify_shapes_and_rows_sum_to_one(tiny_model):
    images = _images(3)
    probs = zero_shot_classify(tiny_model, images + [images[0]], ["sky", "tree", "road", "car"], "imagenet7")
    assert probs.shape == (4, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()
    np.testing.assert_array_equal(probs[0], probs[3])  # identical images, identical rows
    assert not np.allclose(probs[0], probs[1])


def test_classify_is_softmax_of_cosine_over_the_model_temperature(tiny_model):
    images, labels = _images(2), ["dog", "cat", "bird"]
    probs = tiny_model.zero_shot_classify(images, labels, templates="simple")
    cls1 = tiny_model.encode_images(images, progress=False).cls1
    cos = cls1 @ label_embeddings(tiny_model, labels, "simple").T
    logits = cos / tiny_model.temperature
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probs, expected / expected.sum(1, keepdims=True), atol=1e-5)


def test_classify_known_answer_when_labels_match_images(tiny_model, monkeypatch):
    images = _images(3)
    emb = tiny_model.encode_images(images, progress=False)
    # Make each label's embedding equal one image's CLS1: image i must then be classified as label i.
    monkeypatch.setattr(zero_shot, "label_embeddings", lambda model, labels, templates=None, **kw: emb.cls1.copy())
    probs = zero_shot_classify(tiny_model, images, ["a", "b", "c"])
    assert probs.argmax(axis=1).tolist() == [0, 1, 2]
    monkeypatch.setattr(zero_shot, "label_embeddings", lambda model, labels, templates=None, **kw: emb.cls2.copy())
    assert zero_shot_classify(tiny_model, images, ["a", "b", "c"], embedding="cls2").argmax(1).tolist() == [0, 1, 2]


def test_classify_options(tiny_model):
    images, labels = _images(2), ["sky", "tree", "road"]
    sharp = zero_shot_classify(tiny_model, images, labels, "simple", temperature=0.001)
    soft = zero_shot_classify(tiny_model, images, labels, "simple", temperature=10.0)
    assert sharp.max(axis=1).min() > soft.max(axis=1).max()
    np.testing.assert_allclose(soft, 1 / 3, atol=0.01)
    cls1 = zero_shot_classify(tiny_model, images, labels, "simple", temperature=1.0)
    cls2 = zero_shot_classify(tiny_model, images, labels, "simple", temperature=1.0, embedding="cls2")
    mean = zero_shot_classify(tiny_model, images, labels, "simple", temperature=1.0, embedding="mean")
    assert not np.allclose(cls1, cls2)
    # softmax(a/2 + b/2) is the normalised geometric mean of softmax(a) and softmax(b)
    geo = np.sqrt(cls1 * cls2)
    np.testing.assert_allclose(mean, geo / geo.sum(1, keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match="embedding"):
        zero_shot_classify(tiny_model, images, labels, embedding="concat")
    with pytest.raises(ValueError, match="temperature"):
        zero_shot_classify(tiny_model, images, labels, temperature=0.0)
    with pytest.raises(ValueError, match="empty"):
        zero_shot_classify(tiny_model, images, [])


def test_classify_empty_image_list(tiny_model):
    assert zero_shot_classify(tiny_model, [], ["a", "b"]).shape == (0, 2)


def test_softmax_is_stable():
    out = softmax(np.array([[1000.0, 1000.0], [-1000.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.0, 1.0]], atol=1e-6)
