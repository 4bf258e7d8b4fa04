"""Zero-shot classification with prompt-template ensembling.

A class is represented by the mean of the L2-normalised text embeddings of its prompts
(``"a photo of a {}."`` with the class name filled in, for every template), re-normalised.
Images are represented by CLS1, the token TIPSv2 aligns with web alt-text (what the official
demo and ``transformers.Tipsv2Model`` use). Probabilities are ``softmax(cos / temperature)``
with the model's learned temperature, exactly the logits of ``Tipsv2Model.logits_per_image``.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .embeddings import l2_normalize
from .templates import DEFAULT_CLASSIFICATION, resolve_templates

if TYPE_CHECKING:
    from .images import ImageInput
    from .model import TipsV2

EMBEDDING_KINDS = ("cls1", "cls2", "mean")

# Label embeddings per model, so repeated calls with the same labels (an evaluation loop, the
# sliding windows of a segmentation) encode the prompts once. Entries are keyed by a stamp of the
# text tower's weights, so training steps or reloaded weights never reuse a stale entry.
_CACHE: "weakref.WeakKeyDictionary[TipsV2, OrderedDict]" = weakref.WeakKeyDictionary()
_CACHE_SIZE = 16


def check_labels(labels: Sequence[str]) -> list[str]:
    """Return ``labels`` as a list, refusing an empty list, blank names or duplicates."""
    if isinstance(labels, str):
        raise ValueError("labels must be a list of class names, not one string (split it first)")
    labels = list(labels)
    if not labels:
        raise ValueError("labels is empty: give at least one class name")
    seen = set()
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"label {label!r} is not a non-empty string")
        if label in seen:
            raise ValueError(f"label {label!r} appears twice")
        seen.add(label)
    return labels


def _weights_stamp(model: TipsV2) -> tuple:
    # ``_version`` increases on every in-place update (optimizer steps, load_state_dict), and the
    # data pointer changes when parameters move to another device or dtype.
    text = model.hf_model.text_model
    return (id(text), id(model.tokenizer)) + tuple((p.data_ptr(), p._version, p.dtype) for p in text.parameters())


def label_embeddings(
    model: TipsV2,
    labels: Sequence[str],
    templates: str | Sequence[str] | None = None,
    *,
    default: str = DEFAULT_CLASSIFICATION,
    batch_size: int = 256,
) -> np.ndarray:
    """Prompt-ensembled class embeddings, (C, D) float32, L2-normalised.

    Args:
        labels: class names.
        templates: a set name from ``tipsv2_sdk.templates.TEMPLATE_SETS``, a list of patterns with
            one ``{}``, or ``None`` for the ``default`` set.
    """
    labels = check_labels(labels)
    patterns = resolve_templates(templates, default)
    stamp = _weights_stamp(model)
    key = (tuple(labels), patterns)
    cache = _CACHE.setdefault(model, OrderedDict())
    hit = cache.get(key)
    if hit is not None and hit[0] == stamp:
        cache.move_to_end(key)
        return hit[1].copy()
    texts = [pattern.replace("{}", label) for label in labels for pattern in patterns]
    with torch.inference_mode():
        emb = model.encode_texts(texts, batch_size=batch_size)  # (C*T, D), each unit length
    emb = l2_normalize(emb.reshape(len(labels), len(patterns), -1).mean(axis=1))
    cache[key] = (stamp, emb)
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return emb.copy()


def image_text_similarity(image_emb: np.ndarray, text_emb: np.ndarray) -> np.ndarray:
    """Cosine similarities (N, C) of unit image vectors (N, D) and unit class vectors (C, D)."""
    return (image_emb.astype(np.float32) @ text_emb.astype(np.float32).T).astype(np.float32)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64, returned as float32."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def zero_shot_classify(
    model: TipsV2,
    images: Sequence[ImageInput] | ImageInput,
    labels: Sequence[str],
    templates: str | Sequence[str] | None = None,
    *,
    embedding: str = "cls1",
    temperature: float | None = None,
    batch_size: int = 16,
    image_size: int | None = None,
    progress: bool = False,
    autocast: bool = False,
) -> np.ndarray:
    """Class probabilities (N, C) for each image (rows sum to 1), float32.

    Args:
        images: paths, PIL images, uint8 arrays or CHW tensors (or one of them).
        labels: class names; each is filled into every template.
        templates: ``None`` = the 80 ImageNet prompts; a set name (``"imagenet7"``, ``"tcl"``,
            ``"simple"``) or a list of patterns with one ``{}``.
        embedding: image vector compared with the class vectors: ``"cls1"`` (default; alt-text
            token), ``"cls2"`` (synthetic-caption token) or ``"mean"`` (the average of the two
            cosine similarities).
        temperature: logits are ``cos / temperature``; ``None`` = the model's learned temperature.
        batch_size, image_size, progress, autocast: as in ``TipsV2.encode_images``.
    """
    if embedding not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDING_KINDS)}, not {embedding!r}")
    temp = model.temperature if temperature is None else float(temperature)
    if not temp > 0:
        raise ValueError(f"temperature must be positive, not {temp}")
    text = label_embeddings(model, labels, templates)
    emb = model.encode_images(images, batch_size=batch_size, image_size=image_size, progress=progress,
                              with_patches=False, autocast=autocast)
    if embedding == "cls1":
        cos = image_text_similarity(emb.cls1, text)
    elif embedding == "cls2":
        cos = image_text_similarity(emb.cls2, text)
    else:
        cos = 0.5 * (image_text_similarity(emb.cls1, text) + image_text_similarity(emb.cls2, text))
    if cos.shape[0] == 0:
        return np.zeros((0, len(text)), np.float32)
    return softmax(cos / temp, axis=1)


__all__ = ["zero_shot_classify", "label_embeddings", "check_labels", "image_text_similarity", "softmax",
           "EMBEDDING_KINDS"]
