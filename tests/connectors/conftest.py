"""Shared pieces for the connector tests: a word-level LM tokenizer and a tiny Llama config.

The tiny TIPSv2 comes from the root ``tiny_model`` fixture (B/14 layout, width 32, 2 blocks,
56 px, 4x4 patches).
"""
from __future__ import annotations

import re

import pytest

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>"]


def make_tokenizer(words):
    """A whitespace/punctuation word-level ``PreTrainedTokenizerFast`` over ``words`` (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(words) - set(SPECIALS)))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def words_of(texts):
    return [w for text in texts for w in re.findall(r"[\w]+|[^\w\s]", text)]


def llama_config(vocab_size: int, hidden: int = 32, layers: int = 1):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )


@pytest.fixture
def tokenizer():
    """A fresh tokenizer per test (build_llava_processor adds <image> to it)."""
    from tipsv2_sdk.testing import CORPUS_WORDS

    return make_tokenizer(CORPUS_WORDS + [",", ":", "navy", "teal"])


@pytest.fixture
def lm_config(tokenizer):
    return llama_config(len(tokenizer))


@pytest.fixture
def tokenizer_factory():
    """``tokenizer_factory(texts)``: a tokenizer whose vocabulary covers every word of ``texts``."""
    from tipsv2_sdk.testing import CORPUS_WORDS

    return lambda texts=(): make_tokenizer(CORPUS_WORDS + words_of(texts))


@pytest.fixture
def llama_factory():
    """``llama_factory(vocab_size, hidden=32, layers=1)``: a tiny LlamaConfig."""
    return llama_config
