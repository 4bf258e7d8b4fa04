"""COCO-Stuff 164k (171 classes) in the layout written by mmsegmentation's ``coco_stuff164k.py``.

The converter maps the 182 raw ``stuffthingmaps`` ids to 171 train ids and writes::

    coco_stuff164k/images/{train2017,val2017}/000000000139.jpg
    coco_stuff164k/annotations/{train2017,val2017}/000000000139_labelTrainIds.png   0..170, 255 = ignore

(``--root`` may be ``coco_stuff164k`` or its parent.) No zero reduction (mmseg ``COCOStuffDataset``
with the 164k version). The raw ``stuffthingmaps`` PNGs (ids up to 181, no ``_labelTrainIds``
suffix) are not read: convert them first, so the ids mean what the class list says.
"""
from __future__ import annotations

import os

from .base import DatasetError, SegmentationDataset, list_files, paired_samples, require_dir, resolve_root
from .class_names import COCO_STUFF171

ROOT_CANDIDATES = ("", "coco_stuff164k")
LABEL_SUFFIX = "_labelTrainIds.png"
SPLITS = {"val": "val2017", "val2017": "val2017", "train": "train2017", "train2017": "train2017"}


def coco_stuff_dataset(root: str | os.PathLike, split: str = "val") -> SegmentationDataset:
    """The COCO-Stuff 164k ``split``: ``val``/``val2017`` (5000 images) or ``train``/``train2017``."""
    if split not in SPLITS:
        raise DatasetError(f"COCO-Stuff has no split {split!r} (use val or train)")
    folder = SPLITS[split]
    base = resolve_root(root, ROOT_CANDIDATES, f"annotations/{folder}", "COCO-Stuff 164k in mmseg layout")
    images = list_files(require_dir(base / "images" / folder, "COCO-Stuff"), ".jpg")
    if not images:
        raise DatasetError(f"COCO-Stuff: no .jpg images in {base / 'images' / folder}")
    labels = require_dir(base / "annotations" / folder, "COCO-Stuff")
    if not any(labels.glob(f"*{LABEL_SUFFIX}")):
        raise DatasetError(f"COCO-Stuff: no *{LABEL_SUFFIX} files in {labels}; run mmsegmentation's "
                           "tools/dataset_converters/coco_stuff164k.py on the stuffthingmaps first")
    return SegmentationDataset(key="cocostuff", title="COCO-Stuff 164k (171 classes)", root=base, split=folder,
                               classes=COCO_STUFF171, samples=paired_samples(images, labels, LABEL_SUFFIX, ".jpg"),
                               layout="mmseg coco_stuff164k")


__all__ = ["coco_stuff_dataset"]
