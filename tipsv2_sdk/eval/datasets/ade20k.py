"""ADE20K SceneParsing (150 classes), exactly as ``ADEChallengeData2016.zip`` unpacks.

Layout (``--root`` may be the folder holding ``ADEChallengeData2016`` or that folder itself)::

    ADEChallengeData2016/images/{training,validation}/ADE_val_00000001.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_val_00000001.png   greyscale 0..150

Label 0 is "other" and ignored; classes 1..150 become ids 0..149 (mmseg's ``reduce_zero_label``,
the official TIPS notebook's ``where(mask == 0 | mask == 255, 255, mask - 1)``).
"""
from __future__ import annotations

import os

from .base import DatasetError, SegmentationDataset, list_files, paired_samples, require_dir, resolve_root
from .class_names import ADE150

ROOT_CANDIDATES = ("", "ADEChallengeData2016", "ade/ADEChallengeData2016")
SPLITS = {"val": "validation", "validation": "validation", "train": "training", "training": "training"}


def ade20k_dataset(root: str | os.PathLike, split: str = "val") -> SegmentationDataset:
    """The ADE20K ``split``: ``val``/``validation`` (2000 images) or ``train``/``training``."""
    if split not in SPLITS:
        raise DatasetError(f"ADE20K has no split {split!r} (use val or train)")
    folder = SPLITS[split]
    base = resolve_root(root, ROOT_CANDIDATES, f"images/{folder}", "ADE20K (ADEChallengeData2016)")
    images = list_files(require_dir(base / "images" / folder, "ADE20K"), ".jpg")
    if not images:
        raise DatasetError(f"ADE20K: no .jpg images in {base / 'images' / folder}")
    labels = require_dir(base / "annotations" / folder, "ADE20K")
    return SegmentationDataset(key="ade150", title="ADE20K (150 classes)", root=base, split=folder, classes=ADE150,
                               samples=paired_samples(images, labels, ".png", ".jpg"), reduce_zero_label=True,
                               layout="ADEChallengeData2016")


__all__ = ["ade20k_dataset"]
