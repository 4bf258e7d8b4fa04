"""Benchmark readers, one module per on-disk layout. Only ``os``/``pathlib`` at listing time (no torch).

``SEGMENTATION_DATASETS`` maps each ``--dataset`` key to its reader; ``open_segmentation`` checks a
root and returns the listed split; ``open_depth`` picks the NYU layout that ``--root`` has.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from .ade20k import ade20k_dataset
from .base import DatasetError, SegmentationDataset, SegSample, even_subset, read_label
from .coco_stuff import coco_stuff_dataset
from .image_folder import ClassificationDataset, image_folder_dataset
from .karpathy import RetrievalDataset, karpathy_dataset
from .nyu_lists import has_split_files, nyu_lists_dataset
from .nyu_mmseg import DepthDataset, DepthSample, nyu_mmseg_dataset, read_depth
from .pascal_context import pascal_context_dataset
from .voc import voc_dataset

# key -> (reader(root, split), the split the benchmark reports on, the training split)
SEGMENTATION_DATASETS: dict[str, tuple[Callable[[str | os.PathLike, str], SegmentationDataset], str, str]] = {
    "voc21": (lambda root, split: voc_dataset(root, split, background=True), "val", "train"),
    "voc20": (lambda root, split: voc_dataset(root, split, background=False), "val", "train"),
    "pc59": (lambda root, split: pascal_context_dataset(root, split, background=False), "val", "train"),
    "pc60": (lambda root, split: pascal_context_dataset(root, split, background=True), "val", "train"),
    "ade150": (ade20k_dataset, "val", "train"),
    "cocostuff": (coco_stuff_dataset, "val", "train"),
}


def open_segmentation(key: str, root: str | os.PathLike, split: str | None = None, *, train: bool = False) -> SegmentationDataset:
    """List dataset ``key`` under ``root``; ``split=None`` = its evaluation split (or training split if ``train``)."""
    if key not in SEGMENTATION_DATASETS:
        raise DatasetError(f"unknown dataset {key!r} (known: {', '.join(SEGMENTATION_DATASETS)})")
    reader, val_split, train_split = SEGMENTATION_DATASETS[key]
    return reader(root, split or (train_split if train else val_split))


def open_depth(root: str | os.PathLike, split: str, list_file: str | os.PathLike | None = None) -> DepthDataset:
    """NYU ``split`` from the mmseg layout (``images/``, ``annotations/``) or from split files."""
    if list_file is not None or has_split_files(root):
        return nyu_lists_dataset(root, split, list_file)
    return nyu_mmseg_dataset(root, split)


__all__ = ["SEGMENTATION_DATASETS", "open_segmentation", "open_depth", "DatasetError", "SegmentationDataset",
           "SegSample", "ClassificationDataset", "RetrievalDataset", "DepthDataset", "DepthSample", "read_label",
           "read_depth", "even_subset", "image_folder_dataset", "karpathy_dataset", "voc_dataset", "ade20k_dataset",
           "pascal_context_dataset", "coco_stuff_dataset", "nyu_mmseg_dataset", "nyu_lists_dataset"]
