"""Zero-shot classification over an ImageNet-style folder (top-1 / top-5).

Class embeddings are prompt ensembles (``tipsv2_sdk.zero_shot.label_embeddings``; default the 80
ImageNet templates); images are encoded by ``TipsV2.encode_images`` (square resize to the model's
size) and compared by cosine with CLS1 (default, as the official demo and ``Tipsv2Model``), CLS2
or the mean of both similarities. The temperature does not change a ranking, so none is applied.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..templates import DEFAULT_CLASSIFICATION
from ..zero_shot import EMBEDDING_KINDS, image_text_similarity, label_embeddings
from .datasets.base import DatasetError
from .datasets.image_folder import ClassificationDataset
from .metrics import topk_accuracy
from .report import model_record, percent, skipped_entry

if TYPE_CHECKING:
    from ..model import TipsV2


def image_scores(model: TipsV2, images: Sequence, text: np.ndarray, embedding: str, *, batch_size: int,
                 image_size: int | None, progress: bool, autocast: bool = False) -> tuple[np.ndarray, Any]:
    """Cosine scores (N_ok, C) of the decodable images against unit class vectors, and the embeddings
    (whose ``indices``/``skipped`` say which images were used)."""
    if embedding not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDING_KINDS)}, not {embedding!r}")
    emb = model.encode_images(list(images), batch_size=batch_size, image_size=image_size, progress=progress,
                              on_error="skip", with_patches=False, autocast=autocast)
    if embedding == "cls1":
        scores = image_text_similarity(emb.cls1, text)
    elif embedding == "cls2":
        scores = image_text_similarity(emb.cls2, text)
    else:
        scores = 0.5 * (image_text_similarity(emb.cls1, text) + image_text_similarity(emb.cls2, text))
    return scores, emb


def evaluate_classification(model: TipsV2, dataset: ClassificationDataset, *, templates: str | Sequence[str] = DEFAULT_CLASSIFICATION,
                            embedding: str = "cls1", batch_size: int = 32, image_size: int | None = None,
                            limit: int | None = None, progress: bool = True, autocast: bool = False) -> dict[str, Any]:
    """Top-1 / top-5 accuracy (percent) of zero-shot classification on ``dataset``.

    ``limit`` keeps that many images spread over the classes (every k-th of the sorted list).
    """
    images, labels = dataset.images, np.asarray(dataset.labels, np.int64)
    if limit is not None and limit < len(images):
        keep = np.linspace(0, len(images) - 1, max(limit, 1)).round().astype(int)
        images, labels = [images[i] for i in keep], labels[keep]
    text = label_embeddings(model, dataset.class_names, templates, default=DEFAULT_CLASSIFICATION)
    scores, emb = image_scores(model, images, text, embedding, batch_size=batch_size, image_size=image_size,
                               progress=progress, autocast=autocast)
    if len(emb.indices) == 0:
        raise DatasetError(f"no image under {dataset.root} could be decoded ({emb.skipped[0].reason if emb.skipped else 'none'})")
    y = labels[emb.indices]
    num_classes = len(dataset.class_names)
    predicted = scores.argmax(axis=1)
    per_class = {}  # fraction of each class's images predicted as that class; None without images
    for c, name in enumerate(dataset.class_names):
        mask = y == c
        per_class[name] = float(np.mean(predicted[mask] == c)) if mask.any() else None
    present = [v for v in per_class.values() if v is not None]
    return {
        "task": "zero-shot classification",
        "root": str(dataset.root),
        "model": model_record(model),
        "top1": percent(topk_accuracy(scores, y, 1)),
        "top5": percent(topk_accuracy(scores, y, 5)) if num_classes > 5 else None,
        "mean_per_class_accuracy": percent(float(np.mean(present))),
        "num_images": int(len(y)),
        "num_classes": num_classes,
        "per_class_accuracy": {name: percent(v) for name, v in per_class.items()},
        "skipped": [skipped_entry(s.source, s.reason) for s in emb.skipped],
        "settings": {"embedding": embedding, "templates": templates if isinstance(templates, str) else list(templates),
                     "image_size": image_size or model.image_size, "batch_size": batch_size, "limit": limit,
                     "resize": "square, bilinear (encode_images)"},
    }


__all__ = ["evaluate_classification", "image_scores"]
