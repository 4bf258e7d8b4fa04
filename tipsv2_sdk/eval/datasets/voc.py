"""PASCAL VOC 2012 segmentation, exactly as ``VOCtrainval_11-May-2012.tar`` unpacks.

Layout (``--root`` may be the folder holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``)::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png     palette PNG: index 0..20, 255 = border/ignore
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

``voc21`` keeps ``background`` (index 0) as a class. ``voc20`` drops it as TCL / MaskCLIP do:
background pixels are ignored and the 20 object ids are shifted by -1 (mmseg's ``reduce_zero_label``).
"""
from __future__ import annotations

import os

from .base import SegmentationDataset, paired_samples, read_list, require_dir, resolve_root
from .class_names import VOC20, VOC21

ROOT_CANDIDATES = ("", "VOCdevkit/VOC2012", "VOC2012")


def voc_dataset(root: str | os.PathLike, split: str = "val", *, background: bool = True) -> SegmentationDataset:
    """The VOC 2012 ``split`` (a name in ``ImageSets/Segmentation``); ``background=False`` is ``voc20``."""
    base = resolve_root(root, ROOT_CANDIDATES, "ImageSets/Segmentation", "PASCAL VOC 2012 (VOCdevkit/VOC2012)")
    images = require_dir(base / "JPEGImages", "VOC")
    labels = require_dir(base / "SegmentationClass", "VOC")
    names = read_list(base / "ImageSets" / "Segmentation" / f"{split}.txt", "VOC")
    samples = paired_samples([images / f"{n}.jpg" for n in names], labels, ".png", ".jpg")
    key = "voc21" if background else "voc20"
    title = "PASCAL VOC 2012 (21 classes)" if background else "PASCAL VOC 2012 without background (20 classes)"
    return SegmentationDataset(key=key, title=title, root=base, split=split, classes=VOC21 if background else VOC20,
                               samples=samples, reduce_zero_label=not background, layout="VOCdevkit/VOC2012")


__all__ = ["voc_dataset"]
