"""Parity with transformers for a hub-style model: same text and image embeddings as Tipsv2Model itself.

The model is written by transformers' own classes and sits in a fake HF cache
(``hub/models--google--tipsv2-b14/snapshots/<sha>/`` + ``refs/main``) that is read offline.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tipsv2_sdk as tips
from tipsv2_sdk.testing import fake_hub_cache, transformers_tiny_model

TEXTS = [
    "a photo of a dog",
    "A RED Square, Below a blue circle!",
    "  whitespace\t\truns \n here ",
    "école — 日本語 🐶",
    "ÉCOLE",
    " ".join(["three green triangles next to a star"] * 10),  # longer than 64 tokens
]


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    return fake_hub_cache(root / "hf" / "hub", "google/tipsv2-b14", transformers_tiny_model(root / "written"))


@pytest.fixture
def offline_cache(snapshot, monkeypatch):
    cache = snapshot.parents[2]
    assert (cache / "models--google--tipsv2-b14" / "refs" / "main").read_text() == snapshot.name
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(cache.parent))  # the cache found through HF_HOME/hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TIPSV2_HOME", str(cache.parent / "no-converted-models"))
    return snapshot


@pytest.fixture
def reference(offline_cache):
    from transformers import AutoTokenizer, Tipsv2Model

    return Tipsv2Model.from_pretrained(offline_cache).eval(), AutoTokenizer.from_pretrained(str(offline_cache))


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.mark.parametrize("name", ["google/tipsv2-b14", "tipsv2-b14"])
def test_text_embeddings_equal_transformers(name, reference):
    hf_model, hf_tokenizer = reference
    model = tips.load(name)
    enc = hf_tokenizer(TEXTS, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        pooled = hf_model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    expected = torch.nn.functional.normalize(pooled.pooler_output, dim=-1).numpy()
    ours = model.encode_texts(TEXTS, batch_size=4)
    assert ours.shape == expected.shape
    assert _cos(ours, expected).min() >= 0.9999
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    tokens = model.tokenize(TEXTS)
    assert tokens["input_ids"].tolist() == enc["input_ids"].tolist()
    assert tokens["attention_mask"].tolist() == enc["attention_mask"].tolist()


def test_image_embeddings_equal_transformers(reference):
    hf_model, _ = reference
    model = tips.load("google/tipsv2-b14")
    pixels = torch.rand(3, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pooled = hf_model.get_image_features(pixel_values=pixels).pooler_output
    expected = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    emb = model.encode_images(list(pixels), batch_size=2, progress=False)
    assert _cos(emb.cls1, expected).min() >= 0.9999
    np.testing.assert_allclose(emb.cls1, expected, atol=1e-5)
