"""PASCAL Context 59 / 60 in the layout written by mmsegmentation's ``pascal_context.py`` converter.

The converter reads VOC 2010 plus ``trainval_merged.json`` and writes, next to the VOC files::

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    VOCdevkit/VOC2010/SegmentationClassContext/<id>.png       greyscale: 0 = background, 1..59
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt

(``--root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` or ``VOC2010``.)

* ``pc60``: all 60 classes, ``background`` included (mmseg ``PascalContextDataset``,
  ``reduce_zero_label=False``; 255 would be ignored).
* ``pc59``: background ignored and ids 1..59 shifted by -1 (mmseg ``PascalContextDataset59``,
  ``reduce_zero_label=True``).
"""
from __future__ import annotations

import os

from .base import SegmentationDataset, paired_samples, read_list, require_dir, resolve_root
from .class_names import PC59, PC60

ROOT_CANDIDATES = ("", "VOCdevkit/VOC2010", "VOC2010")


def pascal_context_dataset(root: str | os.PathLike, split: str = "val", *, background: bool = False) -> SegmentationDataset:
    """The PASCAL Context ``split``; ``background=True`` is ``pc60``, otherwise ``pc59``."""
    base = resolve_root(root, ROOT_CANDIDATES, "SegmentationClassContext",
                        "PASCAL Context in mmseg layout (VOCdevkit/VOC2010 with SegmentationClassContext)")
    images = require_dir(base / "JPEGImages", "PASCAL Context")
    labels = require_dir(base / "SegmentationClassContext", "PASCAL Context")
    names = read_list(base / "ImageSets" / "SegmentationContext" / f"{split}.txt", "PASCAL Context")
    samples = paired_samples([images / f"{n}.jpg" for n in names], labels, ".png", ".jpg")
    key = "pc60" if background else "pc59"
    return SegmentationDataset(key=key, title=f"PASCAL Context ({60 if background else 59} classes)", root=base,
                               split=split, classes=PC60 if background else PC59, samples=samples,
                               reduce_zero_label=not background, layout="mmseg VOC2010/SegmentationClassContext")


__all__ = ["pascal_context_dataset"]
