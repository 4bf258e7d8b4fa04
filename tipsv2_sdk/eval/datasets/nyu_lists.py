"""NYU Depth v2 listed by BTS-style split files (``nyu_train.txt`` / ``nyu_test.txt``).

Each line is ``RGB_PATH DEPTH_PATH [FOCAL]``, e.g.
``kitchen_0028b/rgb_00045.jpg kitchen_0028b/sync_depth_00045.png 518.8579``. This is the
``nyu`` folder that mmsegmentation's converter reads and the layout of the BTS / AdaBins /
DINOv2 depth code. A path is looked up, with a leading ``/`` removed, under ``--root``, then
``ROOT/sync`` (BTS training frames) or ``ROOT/official_splits/test`` (BTS test frames), so both
the flat folder and BTS's ``nyu_depth_v2`` folder work. Depth PNGs are uint16 millimetres.
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import DatasetError
from .nyu_mmseg import DepthDataset, DepthSample

SPLIT_FILES = {"train": "nyu_train.txt", "test": "nyu_test.txt"}
# Where BTS keeps each split's frames (looked at after --root itself).
BASES = {"train": ("sync", "official_splits/train"), "test": ("official_splits/test",)}


def has_split_files(root: str | os.PathLike) -> bool:
    return any((Path(root).expanduser() / name).is_file() for name in SPLIT_FILES.values())


def _locate(root: Path, rel: str, split: str) -> Path:
    rel = rel.lstrip("/")
    for path in [root / rel] + [root / base / rel for base in BASES[split]]:
        if path.is_file():
            return path
    return root / rel  # reported as missing when it is read


def nyu_lists_dataset(root: str | os.PathLike, split: str = "test", list_file: str | os.PathLike | None = None) -> DepthDataset:
    """The ``train`` or ``test`` pairs of ``ROOT/nyu_<split>.txt`` (or of ``list_file``)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"--root: no such directory: {base}")
    if split not in SPLIT_FILES:
        raise DatasetError(f"NYU has no split {split!r} (use train or test)")
    path = Path(list_file).expanduser() if list_file else base / SPLIT_FILES[split]
    if not path.is_file():
        raise DatasetError(f"NYU: split file not found: {path}")
    samples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DatasetError(f"{path}:{number}: expected 'RGB_PATH DEPTH_PATH [FOCAL]', got {line.strip()!r}")
        image = _locate(base, parts[0], split)
        samples.append(DepthSample(parts[0].lstrip("/").rsplit(".", 1)[0], image, _locate(base, parts[1], split)))
    if not samples:
        raise DatasetError(f"NYU: split file {path} lists no pairs")
    return DepthDataset(root=base, split=split, samples=samples, layout=f"split file {path.name}")


__all__ = ["nyu_lists_dataset", "has_split_files"]
