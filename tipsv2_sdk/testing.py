"""Tiny random TIPSv2 models for tests and examples (no downloads, built in a second).

``tiny_model("tipsv2-g14")`` keeps the g/14 *layout* (SwiGLU, two prefix tokens, text depth
ratio) at a width of 32 and a few blocks, with a SentencePiece tokenizer trained on a small
built-in corpus.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .model import TipsV2
from .registry import ModelSpec, make_config, tiny_spec
from .tokenizer import TipsTokenizer, train_sentencepiece

CORPUS_WORDS = (
    "a an the of in on at and with below above left right top bottom middle center small large big tiny "
    "red green blue yellow orange purple white black gray pink brown cyan circle square triangle star "
    "cross diamond hexagon ring striped dotted plain checkered gradient background photo picture image "
    "scene object objects shape shapes two three several many one near far next to dog cat car tree sky "
    "road house person bird flower water grass building street mountain beach city night day sunny"
).split()


def tiny_corpus(n_lines: int = 400, seed: int = 0) -> list[str]:
    """Deterministic pseudo-sentences over ``CORPUS_WORDS``."""
    gen = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(n_lines):
        idx = torch.randint(len(CORPUS_WORDS), (int(torch.randint(3, 12, (1,), generator=gen)),), generator=gen)
        lines.append(" ".join(CORPUS_WORDS[i] for i in idx.tolist()))
    return lines + [" ".join(CORPUS_WORDS)]


def tiny_tokenizer(directory: str | os.PathLike, vocab_size: int = 384, max_length: int = 64) -> TipsTokenizer:
    """Train a BPE SentencePiece tokenizer on the built-in corpus into ``directory``."""
    path = train_sentencepiece(tiny_corpus(), Path(directory) / "tokenizer.model", vocab_size=vocab_size)
    return TipsTokenizer(path, max_length=max_length)


def tiny_model(
    variant: str | ModelSpec = "tipsv2-b14",
    *,
    width: int = 32,
    image_size: int | None = None,
    seed: int = 0,
    directory: str | os.PathLike | None = None,
) -> TipsV2:
    """A randomly initialised tiny model with the layout of ``variant`` and a real tokenizer."""
    from transformers import Tipsv2Model

    spec = tiny_spec(variant, width=width, image_size=image_size)
    torch.manual_seed(seed)
    hf_model = Tipsv2Model(make_config(spec)).eval()
    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="tipsv2-tiny-"))
    tokenizer = tiny_tokenizer(directory, vocab_size=spec.vocab_size, max_length=spec.max_text_len)
    return TipsV2(hf_model, tokenizer, name=spec.name, source="random", meta={"trained": False, "variant": spec.name})
