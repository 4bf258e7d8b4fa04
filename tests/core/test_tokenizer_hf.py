"""Both tokenizer paths: transformers' Tipsv2Tokenizer (tokenizer.json) and SentencePiece (tokenizer.model).

On one BPE vocabulary they must give identical ids and masks on everything except the three
documented differences of the reference tokenizer (non-ASCII capitals, capitals that appear only
after NFKC normalisation, literal special-token texts), which are asserted exactly as documented.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import tipsv2_sdk as tips
from tipsv2_sdk.testing import tiny_tokenizer, transformers_tiny_model
from tipsv2_sdk.tokenizer import TipsTokenizer, TransformersTokenizer, load_tokenizer

IDENTICAL = [
    "a photo of a dog",
    "A PHOTO OF A DOG",
    "A Photo Of a DoG",
    "red, green; blue! (yellow) [purple] {pink} \"quoted\" 'single' #hash $5.00 50% a&b a/b a\\b a_b a-b",
    "   leading and trailing   ",
    "many    spaces\tand\ttabs\nand\n\nnewlines",
    "",
    "   ",
    "école café naïve",  # lowercase non-ASCII: identical
    "日本語のテキスト 中文",
    "emoji 🐶🐱 ✨",
    "combining e\u0301 and ﬁ ligature",  # NFKC composes / decomposes the same way in both
    "ß straße",
    "1234567890 3.14159",
    " ".join(["red square below a blue circle"] * 12),  # far more than 64 tokens
]
# (text, what SentencePiece receives after the reference's lowercasing, what Tipsv2Tokenizer reads)
DIFFERENT = [
    ("ÉCOLE", "École", "école"),  # the reference lowercases ASCII only
    ("İstanbul", "İstanbul", "i̇stanbul"),
    ("ＡＢＣ Ⅻ", "ABC XII", "abc xii"),  # capitals that appear only after NFKC stay capitals
]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The SentencePiece tokenizer and transformers' conversion of the same model, saved as tokenizer.json."""
    from transformers import Tipsv2Tokenizer

    spm_dir = tmp_path_factory.mktemp("spm")
    spm = tiny_tokenizer(spm_dir)
    hf_dir = tmp_path_factory.mktemp("hf_tok")
    Tipsv2Tokenizer.from_pretrained(str(spm_dir)).save_pretrained(str(hf_dir))
    assert (hf_dir / "tokenizer.json").is_file() and not (hf_dir / "tokenizer.model").exists()
    return spm, load_tokenizer(hf_dir), hf_dir


def test_transformers_tokenizer_is_picked_for_tokenizer_json(both, tmp_path):
    spm, hf, hf_dir = both
    assert isinstance(hf, TransformersTokenizer) and hf.kind == "transformers" and hf.max_length == 64
    # tokenizer.json wins when a directory has both files (the hub releases may).
    shutil.copytree(hf_dir, tmp_path / "both")
    shutil.copyfile(spm.model_file, tmp_path / "both" / "tokenizer.model")
    assert isinstance(load_tokenizer(tmp_path / "both"), TransformersTokenizer)
    assert isinstance(load_tokenizer(spm.model_file.parent), TipsTokenizer)
    assert load_tokenizer(tmp_path) is None


@pytest.mark.parametrize("max_length", [64, 16])
def test_identical_ids_and_masks(both, max_length):
    spm, hf, _ = both
    ids_s, mask_s = spm.encode(IDENTICAL, max_length=max_length)
    ids_h, mask_h = hf.encode(IDENTICAL, max_length=max_length)
    assert ids_h.dtype == mask_h.dtype == np.int64 and ids_h.shape == (len(IDENTICAL), max_length)
    for row, text in enumerate(IDENTICAL):
        assert ids_h[row].tolist() == ids_s[row].tolist(), text
        assert mask_h[row].tolist() == mask_s[row].tolist(), text
    # Right padding with id 0, no BOS/EOS, truncation at max_length.
    long_row = len(IDENTICAL) - 1
    assert mask_h[long_row].sum() == max_length
    assert ids_h[IDENTICAL.index("")].tolist() == [0] * max_length
    n = int(mask_h[0].sum())
    assert mask_h[0].tolist() == [1] * n + [0] * (max_length - n) and ids_h[0, n:].tolist() == [0] * (max_length - n)


def test_ids_equal_tipsv2_tokenizer_called_like_its_processor(both):
    from transformers import AutoTokenizer

    _, hf, hf_dir = both
    auto = AutoTokenizer.from_pretrained(str(hf_dir))
    assert type(auto).__name__ == "Tipsv2Tokenizer"
    texts = IDENTICAL + [t for t, _, _ in DIFFERENT] + ["<pad> <unk> tokens"]
    ref = auto(texts, padding="max_length", truncation=True, max_length=64, return_tensors="np")
    ids, mask = hf.encode(texts)
    assert ids.tolist() == ref["input_ids"].tolist() and mask.tolist() == ref["attention_mask"].tolist()


@pytest.mark.parametrize("text, as_spm, as_hf", DIFFERENT)
def test_documented_differences(both, text, as_spm, as_hf):
    import sentencepiece

    spm, hf, _ = both
    raw = sentencepiece.SentencePieceProcessor(model_file=str(spm.model_file)).encode(as_spm)
    ids, mask = spm.encode([text])
    assert ids[0, : mask[0].sum()].tolist() == raw
    assert hf.encode([text])[0].tolist() == hf.encode([as_hf])[0].tolist()
    assert spm.encode([text])[0].tolist() != hf.encode([text])[0].tolist()


def test_literal_special_token_texts(both):
    spm, hf, _ = both
    ids, mask = hf.encode(["<pad> x"])
    assert ids[0, 0] == 0 and mask[0, 0] == 1  # Tipsv2Tokenizer reads "<pad>" as the pad token ...
    ids, mask = spm.encode(["<pad> x"])
    assert ids[0, 0] != 0 and mask[0].sum() > 2  # ... SentencePiece as the five characters


def test_bad_input(both):
    _, hf, _ = both
    with pytest.raises(TypeError, match="single string"):
        hf.encode("a dog")
    with pytest.raises(TypeError, match="text #1 is int"):
        hf.encode(["a", 3])
    ids, mask = hf.encode([])
    assert ids.shape == mask.shape == (0, 64)


# ---------------------------------------------------------------------------- save_pretrained round trips
def _hf_text_features(directory, texts):
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(directory)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    return enc["input_ids"].numpy(), torch.nn.functional.normalize(out.pooler_output, dim=-1).numpy()


def test_transformers_directory_round_trip(tmp_path):
    """transformers-written → tips.load → save_pretrained → transformers' Auto classes (and back)."""
    source = transformers_tiny_model(tmp_path / "hf")
    model = tips.load(source)
    saved = model.save_pretrained(tmp_path / "saved")
    assert (saved / "tokenizer.json").is_file() and not (saved / "tokenizer.model").exists()
    texts = ["A red square", "two blue circles " * 20, "ÉCOLE"]
    ids_a, feats_a = _hf_text_features(source, texts)
    ids_b, feats_b = _hf_text_features(saved, texts)
    assert ids_a.tolist() == ids_b.tolist()
    np.testing.assert_allclose(feats_b, feats_a, atol=1e-6)
    np.testing.assert_allclose(tips.load(saved).encode_texts(texts), model.encode_texts(texts), atol=1e-6)
    assert tips.load(saved).weights_fingerprint == model.weights_fingerprint


def test_sentencepiece_directory_loads_in_transformers(tiny_model, tiny_model_dir):
    """Our SentencePiece directories: AutoTokenizer gives our ids, AutoModel our embeddings."""
    texts = [t for t in IDENTICAL if t.strip()]
    ids, feats = _hf_text_features(tiny_model_dir, texts)
    ours, _ = tiny_model.tokenizer.encode(texts, max_length=64)
    assert ids.tolist() == ours.tolist()
    np.testing.assert_allclose(tiny_model.encode_texts(texts), feats, atol=1e-5)
    # Re-saving keeps the SentencePiece path (and so the reference's ids).
    assert isinstance(tips.load(tiny_model_dir).tokenizer, TipsTokenizer)


def test_sentence_transformers_export_keeps_the_transformers_tokenizer(tmp_path):
    from tipsv2_sdk.sentence_transformers_module import load_sentence_transformer

    model = tips.load(transformers_tiny_model(tmp_path / "hf"))
    texts = ["ÉCOLE", "a red circle " * 30]
    model.to_sentence_transformer(tmp_path / "st")
    assert (tmp_path / "st" / "tokenizer.json").is_file()
    reloaded = load_sentence_transformer(tmp_path / "st")
    assert reloaded[0].tokenizer.kind == "transformers"
    np.testing.assert_allclose(reloaded.encode(texts), model.encode_texts(texts), atol=1e-5)
