"""Shared pieces of the dataset readers: errors, sample records, root resolution, label decoding.

Readers only list files (``os``/``pathlib``); nothing here imports torch, so the CLI can check a
``--root`` before any heavy import. Pixel data is decoded lazily with Pillow and numpy.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import TipsV2Error

IGNORE_INDEX = 255  # the value every benchmark below uses for "not labelled"


class DatasetError(TipsV2Error, ValueError):
    """A dataset directory, split file or annotation is missing or not in the expected layout."""


@dataclass(frozen=True)
class SegSample:
    """One image and its label PNG (raw values, decoded by the dataset's rules)."""

    id: str
    image: Path
    label: Path


@dataclass
class SegmentationDataset:
    """A semantic-segmentation split as it lies on disk.

    ``classes`` are the names of the training ids after decoding: a label value ``v`` becomes
    class ``v`` (or ``v - 1`` when ``reduce_zero_label``, where 0 is then ignored); the value
    ``ignore_index`` is always ignored.
    """

    key: str
    title: str
    root: Path
    split: str
    classes: tuple[str, ...]
    samples: list[SegSample]
    reduce_zero_label: bool = False
    ignore_index: int = IGNORE_INDEX
    layout: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)


def resolve_root(root: str | os.PathLike, candidates: Sequence[str], marker: str, what: str) -> Path:
    """The first of ``root/<candidate>`` that contains ``marker`` (a relative path).

    ``candidates`` lists the sub-folders a user may point ``--root`` above, e.g. ``("", "VOCdevkit/VOC2012",
    "VOC2012")`` so that the dataset folder itself, its parent or the devkit all work.
    """
    base = Path(root).expanduser()
    if not base.exists():
        raise DatasetError(f"--root: no such directory: {base}")
    if not base.is_dir():
        raise DatasetError(f"--root: {base} is a file, not a directory")
    for sub in candidates:
        folder = base / sub if sub else base
        if (folder / marker).exists():
            return folder
    tried = ", ".join(str((base / sub) if sub else base) for sub in candidates)
    raise DatasetError(f"--root: {base} does not look like {what}: no {marker} in {tried}")


def read_list(path: Path, what: str) -> list[str]:
    """Non-empty, stripped lines of a split file such as ``ImageSets/Segmentation/val.txt``."""
    if not path.is_file():
        raise DatasetError(f"{what}: split file not found: {path}")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [line for line in lines if line]
    if not names:
        raise DatasetError(f"{what}: split file {path} is empty")
    return names


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: directory not found: {path}")
    return path


def list_files(folder: Path, suffix: str) -> list[Path]:
    """Files in ``folder`` (not recursive) whose name ends with ``suffix`` (case-insensitive), sorted."""
    suffix = suffix.lower()
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(suffix))


def paired_samples(images: Sequence[Path], label_dir: Path, label_suffix: str, image_suffix: str) -> list[SegSample]:
    """Pair each image with ``label_dir/<stem><label_suffix>``; images without a label are kept
    (the evaluation reports them as skipped rather than silently shrinking the split)."""
    out = []
    for image in images:
        stem = image.name[: -len(image_suffix)] if image.name.lower().endswith(image_suffix) else image.stem
        out.append(SegSample(stem, image, label_dir / f"{stem}{label_suffix}"))
    return out


def read_label(path: Path) -> np.ndarray:
    """Decode a label PNG into an (H, W) int64 array of raw values.

    Palette ("P") PNGs such as VOC's give their palette indices, greyscale PNGs their values.
    Colour (RGB) PNGs are refused: they are visualisations, not label maps.
    """
    from PIL import Image

    if not path.is_file():
        raise DatasetError(f"label not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("RGB", "RGBA"):
                raise DatasetError(f"label {path} is a colour ({mode}) image; expected palette or greyscale class ids")
            arr = np.asarray(img)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read label {path}: {exc}") from None
    if arr.ndim != 2:
        raise DatasetError(f"label {path} has shape {arr.shape}; expected one channel")
    return arr.astype(np.int64)


def even_subset(items: Sequence, count: int | None) -> list:
    """``count`` items spread evenly over ``items`` (all of them when ``count`` is None or larger).

    Used for training subsets: split lists are sorted by scene, so the first N would be one scene.
    """
    items = list(items)
    if count is None or count >= len(items):
        return items
    if count <= 0:
        return []
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(idx.tolist()))]


__all__ = ["DatasetError", "SegSample", "SegmentationDataset", "resolve_root", "read_list", "require_dir",
           "list_files", "paired_samples", "read_label", "even_subset", "IGNORE_INDEX"]
