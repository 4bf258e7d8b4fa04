"""``TipsV2``: the user-facing wrapper around ``transformers.Tipsv2Model``.

The network is transformers' own; this class adds batching, image decoding, tokenisation,
normalisation and the numpy outputs described in the public API.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import fast
from .embeddings import ImageEmbeddings, SkippedImage, l2_normalize
from .errors import ImageLoadError
from .images import DEFAULT_MAX_PIXELS, ImageInput, describe, load_pixels
from .fingerprint import ModelFingerprint, short_fingerprint
from .prefetch import prefetched
from .wrapped_model import WrappedModel

if TYPE_CHECKING:
    from transformers import Tipsv2Model

    from .tokenizer import Tokenizer

SDK_CONFIG_FILE = "tipsv2_sdk.json"


def image_list(images: "Sequence[ImageInput] | ImageInput", on_error: str, batch_size: int) -> "Sequence[ImageInput]":
    """One input as a one-item list, a sequence as it is (not copied: it may be lazy), after checking
    the encoders' shared arguments."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    if isinstance(images, (str, os.PathLike)) or not isinstance(images, Sequence):
        return [images]
    return images


@dataclass
class VisionTokens:
    """Raw (un-normalised) vision outputs after the final layer norm, as torch tensors."""

    cls1: torch.Tensor  # (B, D)
    cls2: torch.Tensor  # (B, D)
    patches: torch.Tensor  # (B, h, w, D)


class TipsV2(WrappedModel):
    """A loaded TIPS / TIPSv2 model. Build it with ``tipsv2_sdk.load``."""

    def __init__(
        self,
        hf_model: Tipsv2Model,
        tokenizer: Tokenizer | None,
        *,
        name: str = "custom",
        source: str = "memory",
        meta: dict[str, Any] | None = None,
        weights_dir: str | os.PathLike | None = None,
    ):
        """``weights_dir``: the directory the weights were loaded from (identifies them by its files)."""
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.source = source
        self.meta = dict(meta or {})
        self._fingerprint = ModelFingerprint(self.hf_model, weights_dir)

    # ------------------------------------------------------------------ properties
    @property
    def config(self):
        return self.hf_model.config

    @property
    def vision_config(self):
        return self.hf_model.config.vision_config

    @property
    def image_size(self) -> int:
        size = self.vision_config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def patch_size(self) -> int:
        size = self.vision_config.patch_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.vision_config.hidden_size)

    @property
    def num_prefix_tokens(self) -> int:
        """CLS1 plus the register tokens (CLS2): 2 for every TIPS checkpoint."""
        return 1 + int(self.vision_config.num_register_tokens)

    @property
    def weights_fingerprint(self) -> str:
        """SHA-256 of the weights as saved (lowercase hex); see ``tipsv2_sdk.fingerprint``.

        The same for every dtype/device the same files are loaded to; different for different
        weights. The first call hashes (or reads the stored value); later calls are cheap unless
        the tensors were changed in place since.
        """
        return self._fingerprint.value(self.hf_model)

    @property
    def display_name(self) -> str:
        """The name and the short fingerprint, e.g. ``"tipsv2-tiny (weights 1a2b3c4d)"``."""
        return f"{self.name} (weights {short_fingerprint(self.weights_fingerprint)})"

    @property
    def temperature(self) -> float:
        return float(self.hf_model.temperature.detach().float().cpu())

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts of the vision and text towers."""
        vision = sum(p.numel() for p in self.hf_model.vision_model.parameters())
        text = sum(p.numel() for p in self.hf_model.text_model.parameters())
        return {"vision": vision, "text": text, "total": vision + text + 1}

    # ------------------------------------------------------------------ vision
    def vision_tokens(self, pixel_values: torch.Tensor, bool_masked_pos: torch.Tensor | None = None) -> VisionTokens:
        """Run the vision tower on a (B, 3, H, W) batch in [0, 1]; no normalisation of the outputs."""
        b, _, h, w = pixel_values.shape
        out = self.hf_model.vision_model(
            pixel_values=pixel_values.to(device=self.device, dtype=self.dtype),
            bool_masked_pos=bool_masked_pos,
        )
        seq = out.last_hidden_state
        p = self.num_prefix_tokens
        grid_h, grid_w = h // self.patch_size, w // self.patch_size
        return VisionTokens(cls1=seq[:, 0], cls2=seq[:, 1], patches=seq[:, p:].reshape(b, grid_h, grid_w, -1))

    def _autocast(self, enabled: bool):
        if not enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _decoded_batches(
        self, images: Sequence[ImageInput], size: int, batch_size: int, on_error: str, max_pixels: int, workers: int
    ) -> Iterator[tuple[np.ndarray, list[int], list[SkippedImage]]]:
        """Decode images in a thread pool, one batch ahead of the model (PIL releases the GIL).

        ``workers=0`` decodes in the calling thread when each batch is needed (no overlap).
        """

        def decode(i: int):
            try:
                return i, load_pixels(images[i], size, max_pixels=max_pixels), None
            except ImageLoadError as exc:
                if on_error == "raise":
                    raise
                return i, None, SkippedImage(i, exc.source, exc.reason)

        def batch(chunk):
            ok = [(i, px) for i, px, err in chunk if err is None]
            skipped = [err for _, _, err in chunk if err is not None]
            pixels = np.stack([px for _, px in ok]) if ok else np.zeros((0, 3, size, size), np.float32)
            return pixels, [i for i, _ in ok], skipped

        for chunk in prefetched(decode, len(images), batch_size, workers):
            yield batch(chunk)

    @torch.inference_mode()
    def encode_images(
        self,
        images: Sequence[ImageInput] | ImageInput,
        batch_size: int = 16,
        image_size: int | None = None,
        progress: bool = True,
        *,
        on_error: str = "raise",
        with_patches: bool = True,
        autocast: bool = False,
        workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        precision: str | None = None,
        compile: bool | None = None,
        threads: int | None = None,
    ) -> ImageEmbeddings:
        """Encode images into L2-normalised CLS1, CLS2 and patch embeddings (numpy float32).

        Args:
            images: paths, PIL images, uint8 HWC arrays or CHW float tensors in [0, 1] (or one of them).
            batch_size: images per forward pass.
            image_size: square input size; ``None`` = the model's own. Any multiple of the patch size
                works (position embeddings are interpolated). Inputs already at that size are not resampled.
            progress: show a tqdm bar on stderr.
            on_error: ``"raise"`` (default) raises ``ImageLoadError`` naming the file; ``"skip"`` skips
                it and lists it in ``.skipped``.
            with_patches: return the (N, h, w, D) patch grid; ``False`` gives an (N, 0, 0, D) array.
            autocast: run the towers under bf16 autocast (outputs stay float32).
            workers: decoding threads working ahead of the model; 0 decodes each batch in this thread.
            max_pixels: images with more pixels are refused (decompression-bomb guard).
            precision: ``"fp32"`` (exact), ``"bf16"``, ``"int8"`` (CPU) or ``"auto"``; ``None`` = the
                model's default (``set_encoding``, else fp32). See ``tipsv2_sdk.fast``.
            compile: run the tower through ``torch.compile`` (cached on disk across processes).
            threads: torch intra-op threads for the forward passes; ``None`` keeps the caller's setting.
        """
        images = image_list(images, on_error, batch_size)
        size = self.check_image_size(image_size)
        mode, threads = fast.resolve(self, precision, compile, threads)
        forward = fast.vision_runner(self, mode)
        grid = (size // self.patch_size, size // self.patch_size)
        d = self.embed_dim
        cls1, cls2, patches, indices, skipped = [], [], [], [], []
        bar = _progress(len(images), "images", progress)
        for pixels, idx, skip in self._decoded_batches(images, size, batch_size, on_error, max_pixels, workers):
            skipped.extend(skip)
            if idx:
                with self._autocast(autocast), fast.num_threads(threads):
                    tokens = forward(torch.from_numpy(pixels))
                cls1.append(_unit(tokens.cls1))
                cls2.append(_unit(tokens.cls2))
                patches.append(_unit(tokens.patches) if with_patches else np.zeros((len(idx), 0, 0, d), np.float32))
                indices.extend(idx)
            bar.update(len(idx) + len(skip))
        bar.close()
        empty_patch = (0, *grid, d) if with_patches else (0, 0, 0, d)
        return ImageEmbeddings(
            cls1=np.concatenate(cls1) if cls1 else np.zeros((0, d), np.float32),
            cls2=np.concatenate(cls2) if cls2 else np.zeros((0, d), np.float32),
            patches=np.concatenate(patches) if patches else np.zeros(empty_patch, np.float32),
            grid=grid,
            indices=np.asarray(indices, dtype=np.int64),
            sources=[describe(images[i]) for i in indices],
            skipped=skipped,
        )

    def encode_images_native(self, images: Sequence[ImageInput] | ImageInput, batch_size: int = 16,
                             max_side: int | None = None, progress: bool = True, **kwargs):
        """Encode images at their own aspect ratio (longer side <= ``max_side``), batched by size.

        Returns ``NativeEmbeddings`` (one patch grid per image) in input order; see
        ``tipsv2_sdk.native_size``. Keyword arguments as in ``encode_images``.
        """
        from .native_size import encode_native

        return encode_native(self, images, batch_size=batch_size, max_side=max_side, progress=progress, **kwargs)

    def set_encoding(self, precision: str = "fp32", compile: bool = False, threads: int | None = None) -> "TipsV2":
        """Defaults for the ``precision``/``compile``/``threads`` of later ``encode_*`` calls that leave them unset.

        Code that encodes on your behalf (index builds, searches, zero-shot) then runs the same mode.
        The mode is validated now; returns ``self``.
        """
        fast.set_defaults(self, precision, compile, threads)
        return self

    # ------------------------------------------------------------------ text
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask as torch tensors (pad 0, no BOS/EOS, cut to the text positions).

        transformers' ``Tipsv2Tokenizer`` when the model came with a ``tokenizer.json``, else the
        SentencePiece ``tokenizer.model`` (docs/getting_models.md, "Tokenizers").
        """
        if self.tokenizer is None:
            raise RuntimeError(f"model {self.name!r} was loaded without a tokenizer (vision-only)")
        ids, mask = self.tokenizer.encode(list(texts), max_length=self.config.text_config.max_position_embeddings)
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw mean-pooled text embeddings (B, D), not normalised."""
        out = self.hf_model.text_model(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
        )
        return out.pooler_output

    @torch.inference_mode()
    def encode_texts(
        self, texts: Sequence[str] | str, batch_size: int = 64, progress: bool = False, *, autocast: bool = False,
        precision: str | None = None, compile: bool | None = None, threads: int | None = None,
    ) -> np.ndarray:
        """Encode texts into L2-normalised float32 vectors of shape (N, D).

        Texts are sorted by token count and each batch is cut to its longest text: padding is
        masked out of attention and pooling, so the result equals padding everything to the
        maximum length, at a fraction of the cost for short texts. ``precision``, ``compile`` and
        ``threads`` as in ``encode_images``.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        dim = self.config.text_config.hidden_size
        if not texts:
            return np.zeros((0, dim), np.float32)
        mode, threads = fast.resolve(self, precision, compile, threads)
        forward = fast.text_runner(self, mode)
        tokens = self.tokenize(texts)
        lengths = tokens["attention_mask"].sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True)
        out = np.zeros((len(texts), dim), np.float32)
        bar = _progress(len(texts), "texts", progress)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            width = fast.text_width(int(lengths[rows].max()), mode, tokens["input_ids"].shape[1])
            ids = tokens["input_ids"][rows, :width]
            mask = tokens["attention_mask"][rows, :width]
            with self._autocast(autocast), fast.num_threads(threads):
                out[rows.numpy()] = _unit(forward(ids, mask))
            bar.update(len(rows))
        bar.close()
        return out

    # ------------------------------------------------------------------ zero-shot
    def zero_shot_classify(self, images: Sequence[ImageInput], labels: Sequence[str], templates=None, **kwargs) -> np.ndarray:
        """Class probabilities (N, C) from prompt-ensembled label embeddings and CLS1."""
        from .zero_shot import zero_shot_classify

        return zero_shot_classify(self, images, labels, templates=templates, **kwargs)

    def zero_shot_segment(self, image: ImageInput, labels: Sequence[str], **kwargs):
        """Per-pixel labels following the TIPS zero-shot segmentation protocol."""
        from .segmentation import zero_shot_segment

        return zero_shot_segment(self, image, labels, **kwargs)

    # ------------------------------------------------------------------ persistence
    def image_processor(self, image_size: int | None = None):
        """A transformers image processor (PIL backend) for this model's input size."""
        from .image_processor import make_image_processor

        return make_image_processor(self.check_image_size(image_size))

    def save_pretrained(self, out_dir: str | os.PathLike) -> Path:
        """Write an HF-format directory that ``tips.load`` and ``AutoModel.from_pretrained`` read.

        Besides transformers' files it holds ``weights_fingerprint.json`` (the weights'
        fingerprint, hashed from the written file) and ``tipsv2_sdk.json`` (name, provenance).
        """
        from .fingerprint import write_fingerprint
        from .hf_utils import quiet_transformers
        from .io import atomic_directory

        out_dir = Path(out_dir)
        with atomic_directory(out_dir) as tmp, quiet_transformers():
            self.hf_model.save_pretrained(tmp)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            self.image_processor().save_pretrained(tmp)
            write_fingerprint(tmp)
            meta = {**self.meta, "name": self.name}
            (tmp / SDK_CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return out_dir

    def to_sentence_transformer(self, out_dir: str | os.PathLike | None = None, embedding: str = "cls1"):
        """A multimodal ``SentenceTransformer`` (TipsV2Module + Normalize, cosine) sharing these weights.

        ``embedding``: ``"cls1" | "cls2" | "concat" | "mean_patch"`` for images. With ``out_dir`` the
        model is also saved there; reload it with ``SentenceTransformer(out_dir, trust_remote_code=True)``.
        """
        from .sentence_transformers_module import build_sentence_transformer

        return build_sentence_transformer(self, out_dir=out_dir, embedding=embedding)

    def __repr__(self) -> str:
        return (
            f"TipsV2(name={self.name!r}, dim={self.embed_dim}, image_size={self.image_size}, "
            f"patch={self.patch_size}, device={self.device}, dtype={self.dtype})"
        )


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return torch.nn.functional.normalize(x, dim=-1).cpu().numpy()


def _progress(total: int, unit: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=not enabled or total == 0, dynamic_ncols=True)


__all__ = ["TipsV2", "VisionTokens", "l2_normalize"]
