"""The TIPS text tokenizer: lowercased SentencePiece, padded with id 0, no BOS/EOS.

This wraps the ``sentencepiece`` library directly, the same library the official implementation
uses, so token ids match it exactly whatever the SentencePiece model type. (transformers'
``Tipsv2Tokenizer`` converts the model to a BPE ``tokenizers`` object, which agrees with
SentencePiece only for BPE-type models; we save its config alongside for ``AutoTokenizer`` users.)
"""
from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

TOKENIZER_FILE = "tokenizer.model"
PAD_ID = 0
# The reference lowercases with tf.strings.lower, which maps ASCII letters only ("ÉCOLE" -> "École").
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(text: str) -> str:
    """Lowercase ASCII letters only, exactly as the reference tokenizer does."""
    return text.translate(_ASCII_LOWER)


class TipsTokenizer:
    """Lowercase → SentencePiece ids → truncate to ``max_length`` → right-pad with 0."""

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
