"""Tiny random TIPSv2 models for tests and examples (no downloads, built in a second).

``tiny_model("tipsv2-g14")`` keeps the g/14 *layout* (SwiGLU, two prefix tokens, text depth
ratio) at a width of 32 and a few blocks, with a SentencePiece tokenizer trained on a small
built-in corpus. ``transformers_tiny_model`` writes a directory the way the hub releases are
written (transformers' own classes only) and ``fake_hub_cache`` places one in an HF cache layout.
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


def transformers_tiny_model(
    directory: str | os.PathLike, *, width: int = 32, image_size: int = 56, vocab_size: int = 384, seed: int = 0
) -> Path:
    """A tiny random TIPSv2 directory written only by transformers' own classes, like the hub releases.

    ``Tipsv2Model(config).save_pretrained`` writes config.json + model.safetensors and
    ``Tipsv2Tokenizer.save_pretrained`` writes tokenizer.json + tokenizer_config.json (no
    ``tokenizer.model``, no ``tipsv2_sdk.json``). The tokenizer's vocabulary is a SentencePiece BPE
    model trained on the built-in corpus, converted by transformers.
    """
    from transformers import Tipsv2Config, Tipsv2Model, Tipsv2TextConfig, Tipsv2Tokenizer, Tipsv2VisionConfig

    from .hf_utils import quiet_transformers

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = Tipsv2Config(
        vision_config=Tipsv2VisionConfig(hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                                         image_size=image_size, patch_size=14).to_dict(),
        text_config=Tipsv2TextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=4 * width,
                                     num_hidden_layers=1, num_attention_heads=2).to_dict(),
    )
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch, quiet_transformers():
        spm_file = train_sentencepiece(tiny_corpus(), Path(scratch) / "tokenizer.model", vocab_size=vocab_size)
        Tipsv2Tokenizer.from_pretrained(os.fspath(spm_file.parent)).save_pretrained(os.fspath(out))
        Tipsv2Model(config).eval().save_pretrained(out)
    return out


def fake_hub_cache(
    cache: str | os.PathLike, repo_id: str, model_dir: str | os.PathLike, *, revision: str = "main",
    commit: str | None = None,
) -> Path:
    """Copy ``model_dir`` into ``cache`` laid out as the HF hub cache lays out a download.

    ``models--org--name/blobs/<sha256>`` holds the files, ``snapshots/<commit>/`` links to them and
    ``refs/<revision>`` names the commit. Returns the snapshot directory.
    """
    import hashlib
    import shutil

    repo = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file())
    if commit is None:  # deterministic stand-in for a git commit id (40 hex digits)
        commit = hashlib.sha1("".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in files).encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in files:
        blob = repo / "blobs" / hashlib.sha256(path.read_bytes()).hexdigest()
        if not blob.exists():
            shutil.copyfile(path, blob)
        link = snapshot / path.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
