"""Parity with the official reference implementation, on golden values computed with it.

The fixtures (tests/fixtures/parity, see its README.md) hold random weights in the official npz
layout for tiny versions of every variant layout, and the reference's outputs for them. Each is
converted with ``convert_official``, loaded with ``tips.load`` and compared at the tiny stand-ins
for 448 px and 224 px.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import tipsv2_sdk as tips
from tipsv2_sdk.registry import get_spec
from tipsv2_sdk.tokenizer import TipsTokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parity"
INDEX = json.loads((FIXTURES / "layouts.json").read_text())
TOKEN_IDS = json.loads((FIXTURES / "token_ids.json").read_text(encoding="utf-8"))
LAYOUTS = sorted(INDEX["layouts"])
SIZES = INDEX["image_sizes"]
ATOL = 1e-4


def parity_spec(name: str):
    """The ModelSpec the fixture for ``name`` was generated with."""
    overrides = INDEX["layouts"][name]["overrides"]
    return dataclasses.replace(get_spec(name), name=f"{name}-parity", hub_id=None, **overrides)


def pixels(size: int) -> np.ndarray:
    return np.random.default_rng(INDEX["image_seed"] + size).random((INDEX["batch"], 3, size, size), dtype=np.float32)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """name -> the converted and loaded model (each layout converted once per module)."""
    cache: dict[str, tips.TipsV2] = {}

    def get(name: str) -> tips.TipsV2:
        if name not in cache:
            out = tmp_path_factory.mktemp(name) / "model"
            tips.convert_official(FIXTURES / f"{name}_vision.npz", FIXTURES / f"{name}_text.npz",
                                  FIXTURES / INDEX["tokenizer"], out, variant=parity_spec(name))
            cache[name] = tips.load(out)
        return cache[name]

    return get


def expected(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}_expected.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.where(norm > 0, x / np.maximum(norm, 1e-12), 0.0)


def test_inputs_regenerate_exactly():
    for size in SIZES:
        assert float(pixels(size).astype(np.float64).sum()) == INDEX["pixel_sums"][str(size)]


def test_fixtures_cover_every_layout_kind():
    assert {get_spec(n).name.split("-", 1)[1] for n in LAYOUTS} >= {"s14", "b14", "l14", "so400m14", "g14"}
    assert any(get_spec(n).swiglu for n in LAYOUTS) and {get_spec(n).version for n in LAYOUTS} == {1, 2}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", LAYOUTS)
def test_vision_tokens_match_reference(converted, name, size):
    model, ref = converted(name), expected(name)
    with torch.inference_mode():
        tokens = model.vision_tokens(torch.from_numpy(pixels(size)))
    batch, grid = INDEX["batch"], size // 14
    assert tokens.patches.shape == (batch, grid, grid, model.embed_dim)
    np.testing.assert_allclose(tokens.cls1.numpy(), ref[f"s{size}_cls1"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(tokens.cls2.numpy(), ref[f"s{size}_cls2"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(tokens.patches.reshape(batch, grid * grid, -1).numpy(), ref[f"s{size}_patches"],
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", LAYOUTS)
def test_encode_images_matches_normalised_reference(converted, name):
    """The public path: CHW tensors already at the target size go through unresampled."""
    model, ref, size = converted(name), expected(name), SIZES[0]
    emb = model.encode_images([torch.from_numpy(p) for p in pixels(size)], image_size=size, progress=False)
    np.testing.assert_allclose(emb.cls1, _unit(ref[f"s{size}_cls1"]), atol=ATOL, rtol=0)
    np.testing.assert_allclose(emb.cls2, _unit(ref[f"s{size}_cls2"]), atol=ATOL, rtol=0)
    grid = size // 14
    np.testing.assert_allclose(emb.patches.reshape(INDEX["batch"], grid * grid, -1), _unit(ref[f"s{size}_patches"]),
                               atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", LAYOUTS)
def test_text_embeddings_match_reference(converted, name):
    model, ref = converted(name), expected(name)["text"]
    ids = torch.tensor(INDEX["text_ids"])
    with torch.inference_mode():
        raw = model.text_features(ids, (ids != 0).long()).numpy()
    np.testing.assert_allclose(raw, ref, atol=ATOL, rtol=0)
    np.testing.assert_allclose(model.encode_texts(INDEX["texts"]), _unit(ref), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", LAYOUTS)
def test_temperature_comes_from_the_text_checkpoint(converted, name):
    assert converted(name).temperature == pytest.approx(INDEX["layouts"][name]["temperature"], rel=1e-6)


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_token_ids_match_reference_tokenizer(kind):
    tokenizer = TipsTokenizer(FIXTURES / f"tokenizer_{kind}.model", max_length=TOKEN_IDS["max_len"])
    ids, mask = tokenizer.encode(TOKEN_IDS["texts"])
    golden = np.asarray(TOKEN_IDS[kind])
    for text, row, want in zip(TOKEN_IDS["texts"], ids, golden):
        assert row.tolist() == want.tolist(), f"ids differ for {text!r}"
    np.testing.assert_array_equal(mask, (golden != 0).astype(np.int64))


def test_token_id_fixture_exercises_the_edge_cases():
    texts, ids = TOKEN_IDS["texts"], np.asarray(TOKEN_IDS["bpe"])
    assert "" in texts and ids[texts.index("")].sum() == 0  # empty: all padding
    assert ids.shape[1] == 64 and (ids != 0).all(axis=1).any()  # some string is truncated to 64
    assert any(t != t.lower() and not t.isascii() for t in texts)  # non-ASCII uppercase stays as is


def test_converted_model_tokenizes_like_the_reference(converted):
    model = converted(LAYOUTS[0])
    np.testing.assert_array_equal(model.tokenize(INDEX["texts"])["input_ids"].numpy(), np.asarray(INDEX["text_ids"]))


def test_automodel_loads_the_converted_directory(converted):
    from transformers import AutoModel

    model = converted("tipsv2-g14")
    hf = AutoModel.from_pretrained(model.source.split(":", 1)[1]).eval()
    with torch.inference_mode():
        out = hf.vision_model(pixel_values=torch.from_numpy(pixels(SIZES[0]))).last_hidden_state
    np.testing.assert_allclose(out[:, 0].numpy(), expected("tipsv2-g14")[f"s{SIZES[0]}_cls1"], atol=ATOL, rtol=0)
