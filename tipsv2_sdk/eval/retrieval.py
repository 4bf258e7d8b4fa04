"""Zero-shot image-text retrieval on a Karpathy split (COCO 5k / Flickr30k 1k test): R@1/5/10.

Captions are encoded as written (no template); images by ``TipsV2.encode_images``. The image
vector is CLS1 by default (the alt-text token, which ``transformers.Tipsv2Model`` uses for its
image-text logits), or CLS2 (the synthetic-caption token), or ``mean``: the average of the two
cosine similarities. Image→text: a hit when any of the image's own captions ranks within k;
text→image: when the caption's image does. Ties count against the query.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..zero_shot import EMBEDDING_KINDS
from .datasets.base import DatasetError
from .datasets.karpathy import RetrievalDataset
from .metrics import recall_at_k, retrieval_ranks
from .report import model_record, percent, skipped_entry

if TYPE_CHECKING:
    from ..model import TipsV2

KS = (1, 5, 10)


def evaluate_retrieval(model: TipsV2, dataset: RetrievalDataset, *, embedding: str = "cls1", batch_size: int = 32,
                       text_batch_size: int = 128, image_size: int | None = None, limit: int | None = None,
                       progress: bool = True, autocast: bool = False) -> dict[str, Any]:
    """Recall@{1,5,10} (percent) in both directions; ``limit`` keeps the first N images and their captions."""
    if embedding not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDING_KINDS)}, not {embedding!r}")
    images = dataset.images[:limit] if limit is not None else dataset.images
    text_image = np.asarray(dataset.text_image, np.int64)
    keep_text = text_image < len(images)
    texts = [t for t, k in zip(dataset.texts, keep_text) if k]
    text_image = text_image[keep_text]
    emb = model.encode_images(images, batch_size=batch_size, image_size=image_size, progress=progress,
                              on_error="skip", with_patches=False, autocast=autocast)
    if len(emb.indices) == 0:
        raise DatasetError(f"no image of {dataset.annotations.name} could be decoded")
    # Captions of images that could not be decoded leave with them; the remaining images are renumbered.
    position = np.full(len(images), -1, np.int64)
    position[emb.indices] = np.arange(len(emb.indices))
    kept = position[text_image] >= 0
    texts = [t for t, k in zip(texts, kept) if k]
    text_image = position[text_image[kept]]
    text_emb = model.encode_texts(texts, batch_size=text_batch_size, progress=progress, autocast=autocast)
    if embedding == "cls1":
        image_emb = emb.cls1
    elif embedding == "cls2":
        image_emb = emb.cls2
    else:  # the mean of two cosine similarities is the similarity with the mean of the unit vectors
        image_emb = 0.5 * (emb.cls1 + emb.cls2)
    i2t, t2i = retrieval_ranks(image_emb, text_emb, text_image)
    result: dict[str, Any] = {
        "task": "zero-shot retrieval",
        "dataset": dataset.name,
        "annotations": str(dataset.annotations),
        "split": dataset.split,
        "model": model_record(model),
        "num_images": int(len(emb.indices)),
        "num_texts": int(len(texts)),
    }
    for k in KS:
        result[f"image_to_text_r{k}"] = percent(recall_at_k(i2t, k))
    for k in KS:
        result[f"text_to_image_r{k}"] = percent(recall_at_k(t2i, k))
    result["rsum"] = round(sum(result[f"{d}_r{k}"] for d in ("image_to_text", "text_to_image") for k in KS), 4)
    result["skipped"] = [skipped_entry(s.source, s.reason) for s in emb.skipped]
    result["missing_on_disk"] = len(dataset.missing)
    result["settings"] = {"embedding": embedding, "image_size": image_size or model.image_size, "limit": limit,
                          "templates": None, "resize": "square, bilinear (encode_images)"}
    return result


__all__ = ["evaluate_retrieval", "KS"]
