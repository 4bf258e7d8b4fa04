"""The zero-code path: an HF-format TIPSv2 directory loaded as SentenceTransformer(dir) directly.

sentence-transformers builds its generic multimodal ``Transformer`` from our files (transformers'
``Tipsv2Tokenizer`` converts ``tokenizer.model``; ``preprocessor_config.json`` is read as a CLIP
image processor). That path gives un-normalised CLS1 for images and the mean-pooled text
embedding; these tests pin down what agrees with ``TipsV2.encode_*``.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402
from sentence_transformers.base.modules import Normalize, Transformer  # noqa: E402

TEXTS = ["a red circle", "Two BLUE squares below a green star", "héllo wörld naïve 🐶", "digits 12345", "dog " * 80]
TOL = 1e-5


def pil_images(n: int = 4, seed: int = 0) -> list[Image.Image]:
    gen = np.random.default_rng(seed)
    return [Image.fromarray(gen.integers(0, 255, (30 + 9 * i, 44 + 5 * i, 3), dtype=np.uint8)) for i in range(n)]


@pytest.fixture(scope="module")
def generic(tiny_model_dir):
    return SentenceTransformer(str(tiny_model_dir))


def test_generic_path_loads_with_no_custom_code(generic, tiny_model_dir):
    assert not (tiny_model_dir / "modules.json").exists()
    assert type(generic[0]) is Transformer and len(generic) == 1
    assert {"text", "image"} <= set(generic.modalities)


def test_generic_image_embedding_is_cls1(generic, tiny_model):
    images = pil_images()
    ref = tiny_model.encode_images(images, progress=False)
    raw = generic.encode(images)
    assert np.linalg.norm(raw, axis=1).min() > 1.5  # not normalised: add Normalize() or normalize_embeddings
    got = generic.encode(images, normalize_embeddings=True)
    assert np.abs(got - ref.cls1).max() <= TOL
    assert np.abs(got - ref.cls2).max() > 1e-2  # CLS2 is not reachable on this path


def test_generic_text_embedding_and_token_ids_match(generic, tiny_model):
    got = generic.encode(TEXTS, normalize_embeddings=True)
    assert np.abs(got - tiny_model.encode_texts(TEXTS)).max() <= TOL
    # Why it agrees: our tokenizers are BPE SentencePiece models, which transformers' conversion
    # reproduces id for id (checked here on upper case, non-ASCII and over-long texts).
    hf_ids = generic.processor.tokenizer(TEXTS, truncation=True, max_length=64)["input_ids"]
    ids, mask = tiny_model.tokenizer.encode(TEXTS)
    assert hf_ids == [row[m.astype(bool)].tolist() for row, m in zip(ids, mask)]


def test_both_paths_agree(generic, tiny_model):
    custom = tiny_model.to_sentence_transformer(embedding="cls1")
    images = pil_images(3, seed=5)
    assert np.abs(custom.encode(images) - generic.encode(images, normalize_embeddings=True)).max() <= TOL
    assert np.abs(custom.encode(TEXTS) - generic.encode(TEXTS, normalize_embeddings=True)).max() <= TOL


def test_generic_path_with_normalize_reloads_without_trust_remote_code(tiny_model_dir, tiny_model, tmp_path):
    st = SentenceTransformer(str(tiny_model_dir))
    st.append(Normalize())
    st.save(str(tmp_path / "st"))
    types = [m["type"] for m in json.loads((tmp_path / "st" / "modules.json").read_text())]
    assert all(t.startswith("sentence_transformers.") for t in types), types
    back = SentenceTransformer(str(tmp_path / "st"))
    images = pil_images(2)
    assert np.array_equal(back.encode(images), st.encode(images))
    assert np.abs(back.encode(images) - tiny_model.encode_images(images, progress=False).cls1).max() <= TOL


def test_sdk_module_is_independent_of_the_tokenizer_conversion(tiny_model, tmp_path):
    """With a unigram SentencePiece model the SDK module still equals encode_texts.

    (transformers' conversion targets BPE; the generic path is only guaranteed for BPE models.)
    """
    from tipsv2_sdk.model import TipsV2
    from tipsv2_sdk.testing import tiny_corpus
    from tipsv2_sdk.tokenizer import TipsTokenizer, train_sentencepiece

    path = train_sentencepiece(tiny_corpus(), tmp_path / "tokenizer.model", vocab_size=300, model_type="unigram")
    unigram = TipsV2(tiny_model.hf_model, TipsTokenizer(path), name="unigram")
    st = unigram.to_sentence_transformer()
    assert np.abs(st.encode(TEXTS) - unigram.encode_texts(TEXTS)).max() <= TOL
