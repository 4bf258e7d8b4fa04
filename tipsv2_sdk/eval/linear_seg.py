"""Linear-probe semantic segmentation: frozen patch features + one linear layer, mIoU on the val split.

1. Every training image (optionally an evenly spread subset) is resized to ``image_size`` x
   ``image_size`` and encoded once; its label is decoded (ignore / zero reduction as the dataset
   says) and resized with nearest neighbours to ``target_size`` (default 4x the patch grid).
2. ``probe.LinearProbe`` is trained with cross-entropy on the logits upsampled to the targets.
3. Each validation image is encoded the same way; the logits are upsampled bilinearly to the
   label's full size, argmax, and summed into one confusion matrix (``metrics``; mmseg convention).

The paper's PASCAL / ADE20K linear numbers follow DINOv2's setup (larger crops, augmentation,
multi-layer variants); this probe is the simple, deterministic form of it.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .datasets.base import DatasetError, SegmentationDataset, even_subset, read_label
from .features import FeatureStore, extract_training_set, image_batches
from .metrics import ConfusionMatrix, prepare_target
from .probe import LinearProbe, ProbeConfig, channel_stats, segmentation_loss, train_probe
from .report import model_record, percent, progress_bar, rounded, skipped_entry
from .segmentation import argmax_resized

if TYPE_CHECKING:
    from ..model import TipsV2


def probe_sizes(model: TipsV2, image_size: int | None, target_size: int | None) -> tuple[int, int]:
    """The checked encoder input size and the training-target size (default: 4x the patch grid)."""
    size = model.check_image_size(image_size)
    target = 4 * (size // model.patch_size) if target_size is None else int(target_size)
    if target < 1:
        raise ValueError(f"target_size must be positive, not {target}")
    return size, target


def evaluate_linear_segmentation(model: TipsV2, train: SegmentationDataset, val: SegmentationDataset, *,
                                 config: ProbeConfig | None = None, image_size: int | None = None,
                                 target_size: int | None = None, train_limit: int | None = None,
                                 limit: int | None = None, batch_size: int = 16, cache_dir: str | os.PathLike | None = None,
                                 progress: bool = True, autocast: bool = False) -> dict[str, Any]:
    """Train a linear head on ``train`` and report mIoU (percent) on ``val`` (the same dataset's two splits)."""
    if train.classes != val.classes:
        raise DatasetError(f"train ({train.key}) and val ({val.key}) splits have different classes")
    config = (config or ProbeConfig()).check()
    size, tsize = probe_sizes(model, image_size, target_size)
    samples = even_subset(train.samples, train_limit)

    def load_target(i: int) -> np.ndarray:
        label = read_label(samples[i].label)
        return prepare_target(label, train.num_classes, train.ignore_index, train.reduce_zero_label).astype(np.int16)

    with FeatureStore(cache_dir) as store:
        feats, targets, train_skipped = extract_training_set(
            model, store, [s.image for s in samples], load_target, image_size=size, target_size=tsize,
            target_dtype=np.int16, batch_size=batch_size, progress=progress, autocast=autocast)
        if len(feats) == 0:
            raise DatasetError(f"no training image of {train.key} could be used"
                               + (f" ({train_skipped[0]['reason']})" if train_skipped else ""))
        mean, std = channel_stats(feats)
        head = LinearProbe(mean, std, train.num_classes, seed=config.seed)
        history = train_probe(head, feats, targets, segmentation_loss, config, device=model.device, progress=progress)
        num_train = len(feats)

    val_samples = val.samples[:limit] if limit is not None else val.samples
    conf = ConfusionMatrix(val.num_classes)
    skipped: list[dict[str, str]] = []
    bar = progress_bar(len(val_samples), "img", progress, desc=f"{val.key} val")
    with torch.inference_mode():
        for i, hw, patches in image_batches(model, [s.image for s in val_samples], image_size=size,
                                            batch_size=batch_size, autocast=autocast):
            sample = val_samples[i]
            bar.update(1)
            if hw is None:
                skipped.append(skipped_entry(sample.id, patches))
                continue
            try:
                target = prepare_target(read_label(sample.label), val.num_classes, val.ignore_index, val.reduce_zero_label)
                if target.shape != hw:
                    raise DatasetError(f"image is {hw[1]}x{hw[0]} but its label is {target.shape[1]}x{target.shape[0]}")
            except (DatasetError, ValueError) as exc:
                skipped.append(skipped_entry(sample.id, str(exc)))
                continue
            logits = head(torch.from_numpy(patches)[None].to(model.device))[0]
            _, pred = argmax_resized(logits, target.shape)
            conf.update(pred.cpu().numpy(), target)
    bar.close()
    if len(skipped) == len(val_samples):
        raise DatasetError(f"no validation image of {val.key} could be evaluated"
                           + (f" ({skipped[0]['reason']})" if skipped else ""))
    scores = conf.scores()
    return {
        "task": "linear-probe segmentation",
        "dataset": val.key,
        "title": val.title,
        "root": str(val.root),
        "split": val.split,
        "train_split": train.split,
        "model": model_record(model),
        "miou": percent(scores.miou),
        "pixel_accuracy": percent(scores.pixel_accuracy),
        "mean_accuracy": percent(scores.mean_accuracy),
        "num_images": len(val_samples) - len(skipped),
        "num_train_images": num_train,
        "num_classes": val.num_classes,
        "classes_in_mean": scores.present_classes,
        "per_class_iou": {name: percent(v) for name, v in zip(val.classes, scores.iou)},
        "train_loss": [rounded(v) for v in history],
        "skipped": skipped,
        "train_skipped": train_skipped,
        "settings": {"image_size": size, "target_size": tsize, "train_limit": train_limit, "limit": limit,
                     "features": "final patch tokens, unit length, standardised per channel", **config.to_dict(),
                     "miou_convention": "nanmean over classes present in the ground truth or the predictions "
                                        "(mmseg IoUMetric); percent"},
    }


__all__ = ["evaluate_linear_segmentation", "probe_sizes"]
