"""The TIPS text tokenizers: lowercased, cut to 64 ids, right-padded with id 0, no BOS/EOS.

Two implementations with one interface (``encode(texts, max_length) -> (ids, mask)``):

* ``TransformersTokenizer`` wraps transformers' own ``Tipsv2Tokenizer`` (``tokenizer.json``), so
  ids are exactly those a transformers user gets. It is used whenever a directory has a
  ``tokenizer.json`` (the hub releases, directories written by transformers).
* ``TipsTokenizer`` wraps the ``sentencepiece`` library, as the official implementation does, so
  ids match the reference exactly whatever the SentencePiece model type. It is used for
  ``tokenizer.model``-only directories (``tipsv2 convert`` output, our own models).

On the same BPE vocabulary both give the same ids except where the reference itself differs from
transformers: the reference lowercases ASCII letters only (``"ÉCOLE"`` -> ``"École"``) and
lowercases before SentencePiece's NFKC normalisation (so full-width or Roman-numeral capitals
stay capitals); ``Tipsv2Tokenizer`` lowercases all of Unicode first, and reads the literal texts
``"<pad>"`` / ``"<unk>"`` as special tokens. ``load_tokenizer`` picks the implementation.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

TOKENIZER_FILE = "tokenizer.model"
HF_TOKENIZER_FILE = "tokenizer.json"
PAD_ID = 0
# The reference lowercases with tf.strings.lower, which maps ASCII letters only ("ÉCOLE" -> "École").
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lowercase ASCII letters only, exactly as the reference tokenizer does."""
    return text.translate(_ASCII_LOWER)


class TipsTokenizer:
    """Lowercase (ASCII) → SentencePiece ids → truncate to ``max_length`` → right-pad with 0."""

    kind = "sentencepiece"

    def __init__(self, model_file: str | os.PathLike, max_length: int = 64):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise FileNotFoundError(f"SentencePiece model not found: {self.model_file}")
        self.max_length = int(max_length)
        self._sp = spm.SentencePieceProcessor(model_file=os.fspath(self.model_file))

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(input_ids, attention_mask)``, both int64 of shape (N, max_length)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        length = self.max_length if max_length is None else int(max_length)
        ids = np.full((len(texts), length), PAD_ID, dtype=np.int64)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{row} is {type(text).__name__}, not str")
            pieces = self._sp.encode(ascii_lower(text))[:length]
            ids[row, : len(pieces)] = pieces
        # Padding is id 0 and SentencePiece never emits 0 for real text when pad_id=0.
        mask = (ids != PAD_ID).astype(np.int64)
        return ids, mask

    __call__ = encode

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Write ``tokenizer.model`` and a ``tokenizer_config.json`` that ``AutoTokenizer`` reads."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if self.model_file.resolve() != (out / TOKENIZER_FILE).resolve():
            shutil.copyfile(self.model_file, out / TOKENIZER_FILE)
        config = {
            "tokenizer_class": "Tipsv2Tokenizer",
            "model_max_length": self.max_length,
            "do_lower_case": True,
            "pad_token": "<pad>",
            "unk_token": "<unk>",
            "padding_side": "right",
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, max_length: int | None = None) -> "TipsTokenizer":
        directory = Path(directory)
        config_path = directory / "tokenizer_config.json"
        if max_length is None and config_path.is_file():
            max_length = json.loads(config_path.read_text()).get("model_max_length", 64)
        return cls(directory / TOKENIZER_FILE, max_length=max_length or 64)


class TransformersTokenizer:
    """transformers' ``Tipsv2Tokenizer`` behind the ``TipsTokenizer`` interface.

    ``encode`` calls it exactly as ``Tipsv2Processor`` does (``padding="max_length"``,
    ``truncation=True``), so ids and masks are transformers' own.
    """

    kind = "transformers"

    def __init__(self, hf_tokenizer: Any, max_length: int | None = None):
        self.hf_tokenizer = hf_tokenizer
        self.max_length = int(max_length if max_length is not None else min(hf_tokenizer.model_max_length, 10**6))

    @property
    def vocab_size(self) -> int:
        return len(self.hf_tokenizer)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(input_ids, attention_mask)``, both int64 of shape (N, max_length)."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of strings, not a single string")
        texts = list(texts)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{row} is {type(text).__name__}, not str")
        length = self.max_length if max_length is None else int(max_length)
        if not texts:
            return np.zeros((0, length), np.int64), np.zeros((0, length), np.int64)
        out = self.hf_tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        return out["input_ids"].astype(np.int64), out["attention_mask"].astype(np.int64)

    __call__ = encode

    def save_pretrained(self, out_dir: str | os.PathLike) -> None:
        """Write ``tokenizer.json`` + ``tokenizer_config.json`` with transformers' own writer."""
        self.hf_tokenizer.save_pretrained(os.fspath(out_dir))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, max_length: int | None = None) -> "TransformersTokenizer":
        from transformers import Tipsv2Tokenizer

        from .hf_utils import quiet_transformers

        with quiet_transformers():
            hf_tokenizer = Tipsv2Tokenizer.from_pretrained(os.fspath(directory))
        return cls(hf_tokenizer, max_length=max_length)


Tokenizer = Union[TipsTokenizer, TransformersTokenizer]


def load_tokenizer(directory: str | os.PathLike, max_length: int | None = None) -> Tokenizer | None:
    """The tokenizer saved in a model directory, or ``None`` (vision-only).

    ``tokenizer.json`` (transformers' ``Tipsv2Tokenizer``) takes precedence over
    ``tokenizer.model`` (SentencePiece): it is what transformers users of the same directory get.
    """
    directory = Path(directory)
    if (directory / HF_TOKENIZER_FILE).is_file():
        return TransformersTokenizer.from_pretrained(directory, max_length=max_length)
    if (directory / TOKENIZER_FILE).is_file():
        return TipsTokenizer.from_pretrained(directory, max_length=max_length)
    return None


def train_sentencepiece(
    corpus: Iterable[str], out_file: str | os.PathLike, vocab_size: int, model_type: str = "bpe"
) -> Path:
    """Train a lowercased SentencePiece model with the TIPS id layout (pad 0, unk 1, no BOS/EOS).

    BPE with byte fallback is the default because transformers' ``Tipsv2Tokenizer`` converts a
    model to BPE: with this type both tokenizers give the same ids.
    """
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=(line.lower() for line in corpus),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        byte_fallback=True,
        character_coverage=1.0,
        minloglevel=2,
        num_threads=1,
    )
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buffer.getvalue())
    return out
