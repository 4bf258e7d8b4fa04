"""Miniature benchmark datasets written in the exact on-disk layouts the readers expect.

Images are small JPEGs whose left part is red and right part blue; labels mark the same split, so
a probe can learn them and a reader that pairs the wrong files is caught. Every builder returns
the directory to pass as ``--root``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

H, W = 42, 56  # 3 x 4 patches of 14 px at the native size; not square on purpose

VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 251 + [224, 224, 192]


def scene(i: int, h: int = H, w: int = W) -> tuple[np.ndarray, np.ndarray]:
    """RGB image and a 0/1 mask: pixels left of a column (varying with ``i``) are "object" (1)."""
    split = 14 * (1 + i % 3)
    mask = np.zeros((h, w), np.int64)
    mask[:, :split] = 1
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[mask == 1] = (220, 30, 30)
    rgb[mask == 0] = (30, 30, 220)
    return rgb, mask


def _jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95)


def _png(path: Path, values: np.ndarray, mode: str = "L") -> None:
    """Greyscale ("L"), 16-bit ("I;16") or palette ("P": the values become palette indices) PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.uint8))
    if mode == "P":
        img.putpalette(VOC_PALETTE)  # turns the "L" image into "P" with the same indices
    img.save(path)


def make_voc(base: Path, n_train: int = 3, n_val: int = 2, object_id: int = 15) -> Path:
    """VOCdevkit/VOC2012 with palette labels: 0 background, ``object_id`` (person) on the red part, a 255 border."""
    root = base / "VOCdevkit" / "VOC2012"
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 100)):
        names = []
        for i in range(n):
            name = f"2007_{offset + i:06d}"
            rgb, mask = scene(i + offset)
            label = np.where(mask == 1, object_id, 0)
            label[:, 0] = 255  # VOC's "void" outline
            _jpg(root / "JPEGImages" / f"{name}.jpg", rgb)
            _png(root / "SegmentationClass" / f"{name}.png", label, mode="P")
            names.append(name)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    return base


def make_ade(base: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """ADEChallengeData2016: greyscale labels, 0 = other (ignored), 13 = person (id 12), 3 = sky (id 2)."""
    root = base / "ADEChallengeData2016"
    for folder, n, prefix in (("training", n_train, "ADE_train"), ("validation", n_val, "ADE_val")):
        for i in range(n):
            rgb, mask = scene(i)
            label = np.where(mask == 1, 13, 3)
            label[0, :] = 0
            name = f"{prefix}_{i + 1:08d}"
            _jpg(root / "images" / folder / f"{name}.jpg", rgb)
            _png(root / "annotations" / folder / f"{name}.png", label)
    return base


def make_pascal_context(base: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """mmseg's VOC2010 + SegmentationClassContext: 0 background, 37 = person (PC59 id 36)."""
    root = base / "VOCdevkit" / "VOC2010"
    sets = root / "ImageSets" / "SegmentationContext"
    sets.mkdir(parents=True)
    for split, n, offset in (("train", n_train, 0), ("val", n_val, 50)):
        names = []
        for i in range(n):
            name = f"2008_{offset + i:06d}"
            rgb, mask = scene(i)
            _jpg(root / "JPEGImages" / f"{name}.jpg", rgb)
            _png(root / "SegmentationClassContext" / f"{name}.png", np.where(mask == 1, 37, 0))
            names.append(name)
        (sets / f"{split}.txt").write_text("\n".join(names) + "\n")
    return base


def make_coco_stuff(base: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """coco_stuff164k: *_labelTrainIds.png, 0 = person, 145 = sky-other, 255 ignored."""
    root = base / "coco_stuff164k"
    for folder, n, offset in (("train2017", n_train, 0), ("val2017", n_val, 1000)):
        for i in range(n):
            rgb, mask = scene(i)
            label = np.where(mask == 1, 0, 145)
            label[-1, :] = 255
            name = f"{offset + i:012d}"
            _jpg(root / "images" / folder / f"{name}.jpg", rgb)
            _png(root / "annotations" / folder / f"{name}_labelTrainIds.png", label)
    return base


def make_image_folder(base: Path, per_class: int = 2) -> tuple[Path, Path]:
    """ROOT/<wnid>/<image>.JPEG for two classes, and a names file in sorted folder order."""
    root = base / "val"
    for c, wnid in enumerate(("n00000002", "n00000001")):
        for i in range(per_class):
            rgb = np.full((30, 40, 3), (200, 20, 20) if c else (20, 20, 200), np.uint8)
            _jpg(root / wnid / f"ILSVRC2012_val_{c * 10 + i:08d}.JPEG", rgb)
    names = base / "classnames.txt"
    names.write_text("red square\nblue square\n")  # sorted folder order: n00000001 holds the red images
    return root, names


def make_karpathy(base: Path, n_test: int = 3) -> Path:
    """dataset_coco.json with COCO-style filepath/filename entries and images under val2014/."""
    entries = []
    for i in range(n_test + 1):
        rgb, _ = scene(i)
        name = f"COCO_val2014_{i:012d}.jpg"
        _jpg(base / "val2014" / name, rgb)
        entries.append({"filepath": "val2014", "filename": name, "split": "test" if i < n_test else "train",
                        "imgid": i, "sentences": [{"raw": f"a red block {k} left of blue", "tokens": []}
                                                   for k in range(2 if i else 3)]})
    (base / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": entries}))
    return base


def depth_scene(i: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB brightness encodes depth: red (near, 1.5 m) left of the split, blue (far, 4 m) right; a hole of 0s."""
    rgb, mask = scene(i)
    depth_mm = np.where(mask == 1, 1500, 4000).astype(np.uint16)
    depth_mm[0, 0] = 0
    return rgb, depth_mm


def make_nyu_mmseg(base: Path, n_train: int = 4, n_test: int = 2) -> Path:
    root = base / "nyu"
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            rgb, depth = depth_scene(i)
            _jpg(root / "images" / split / f"kitchen_{i:05d}.jpg", rgb)
            _png(root / "annotations" / split / f"kitchen_{i:05d}.png", depth, mode="I;16")
    return base


def make_nyu_lists(base: Path, n_train: int = 4, n_test: int = 2) -> Path:
    """BTS's nyu_depth_v2 layout: sync/<scene>/rgb_*.jpg, official_splits/test/<scene>/..., split files."""
    for split, n, folder in (("train", n_train, "sync"), ("test", n_test, "official_splits/test")):
        lines = []
        for i in range(n):
            rgb, depth = depth_scene(i)
            _jpg(base / folder / "kitchen_0028b" / f"rgb_{i:05d}.jpg", rgb)
            _png(base / folder / "kitchen_0028b" / f"sync_depth_{i:05d}.png", depth, mode="I;16")
            lead = "/" if split == "train" else ""
            lines.append(f"{lead}kitchen_0028b/rgb_{i:05d}.jpg {lead}kitchen_0028b/sync_depth_{i:05d}.png 518.8579")
        (base / f"nyu_{split}.txt").write_text("\n".join(lines) + "\n")
    return base


BUILDERS = {"voc": make_voc, "ade": make_ade, "pascal_context": make_pascal_context, "coco_stuff": make_coco_stuff,
            "image_folder": make_image_folder, "karpathy": make_karpathy, "nyu_mmseg": make_nyu_mmseg,
            "nyu_lists": make_nyu_lists, "scene": scene, "depth_scene": depth_scene}


class Layouts:
    """The builders, reachable from test modules through the ``layouts`` fixture."""

    def __init__(self, base: Path):
        self.base = base
        self.size = (H, W)
        for name, func in BUILDERS.items():
            setattr(self, name, func)

    def root(self, name: str) -> Path:
        return self.base / name


@pytest.fixture
def layouts(tmp_path):
    return Layouts(tmp_path)
