"""NYU Depth v2 in the layout written by mmsegmentation's ``nyu.py`` converter (mmseg ``NYUDataset``).

Layout (``--root`` may be ``nyu`` or its parent)::

    nyu/images/{train,test}/<scene>_<n>.jpg          RGB, 640 x 480
    nyu/annotations/{train,test}/<scene>_<n>.png     uint16 depth in millimetres (value / 1000 = metres), 0 = no depth

The depth-map readers are shared with the split-file layout (``nyu_lists.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import DatasetError, list_files, require_dir, resolve_root

ROOT_CANDIDATES = ("", "nyu")
DEPTH_SCALE = 1000.0  # PNG value per metre


@dataclass(frozen=True)
class DepthSample:
    id: str
    image: Path
    depth: Path


@dataclass
class DepthDataset:
    root: Path
    split: str
    samples: list[DepthSample]
    layout: str
    depth_scale: float = DEPTH_SCALE

    def __len__(self) -> int:
        return len(self.samples)


def read_depth(path: Path, scale: float = DEPTH_SCALE) -> np.ndarray:
    """A depth PNG as (H, W) float32 metres; 0 where the sensor gave no depth."""
    from PIL import Image

    if not path.is_file():
        raise DatasetError(f"depth map not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGB", "RGBA", "P"):
                raise DatasetError(f"depth map {path} is a {img.mode} image; expected 16-bit greyscale (millimetres)")
            arr = np.asarray(img)
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read depth map {path}: {exc}") from None
    if arr.ndim != 2:
        raise DatasetError(f"depth map {path} has shape {arr.shape}; expected one channel")
    return (arr.astype(np.float32) / np.float32(scale)).astype(np.float32)


def nyu_mmseg_dataset(root: str | os.PathLike, split: str = "test") -> DepthDataset:
    """The ``train`` or ``test`` split of the mmseg NYU layout."""
    if split not in ("train", "test"):
        raise DatasetError(f"NYU (mmseg layout) has no split {split!r} (use train or test)")
    base = resolve_root(root, ROOT_CANDIDATES, f"images/{split}", "NYU Depth v2 in mmseg layout (images/, annotations/)")
    images = list_files(require_dir(base / "images" / split, "NYU"), ".jpg")
    if not images:
        raise DatasetError(f"NYU: no .jpg images in {base / 'images' / split}")
    depth_dir = require_dir(base / "annotations" / split, "NYU")
    samples = [DepthSample(p.stem, p, depth_dir / f"{p.stem}.png") for p in images]
    return DepthDataset(root=base, split=split, samples=samples, layout="mmseg images/annotations")


__all__ = ["DepthSample", "DepthDataset", "read_depth", "nyu_mmseg_dataset", "DEPTH_SCALE"]
