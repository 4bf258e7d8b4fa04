"""COCO / Flickr30k retrieval in Karpathy's split files (``dataset_coco.json``, ``dataset_flickr30k.json``).

Each file is ``{"dataset": ..., "images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}]}]}``
with ``split`` one of ``train``, ``restval``, ``val``, ``test`` (COCO test: 5000 images, Flickr30k
test: 1000 images, about 5 captions each). Images are looked up under ``--root`` as
``ROOT/<filepath>/<filename>`` (COCO: ``val2014/COCO_val2014_...jpg``), then ``ROOT/<filename>``, then
``ROOT/flickr30k-images/<filename>`` and ``ROOT/images/<filename>`` (the usual Flickr30k folders).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .base import DatasetError

ANNOTATION_FILES = ("dataset_coco.json", "dataset_flickr30k.json", "dataset_flickr8k.json")
IMAGE_FOLDERS = ("flickr30k-images", "images")


@dataclass
class RetrievalDataset:
    """Images, their captions and, per caption, the index of its image."""

    name: str
    annotations: Path
    split: str
    images: list[Path]
    texts: list[str]
    text_image: list[int]
    missing: list[str]

    def __len__(self) -> int:
        return len(self.images)


def find_annotations(root: Path, annotations: str | os.PathLike | None) -> Path:
    """``annotations`` if given, else the one Karpathy file in ``root`` (or its parent)."""
    if annotations is not None:
        path = Path(annotations).expanduser()
        if not path.is_file():
            raise DatasetError(f"--annotations: no such file: {path}")
        return path
    found = [folder / name for folder in (root, root.parent) for name in ANNOTATION_FILES if (folder / name).is_file()]
    if not found:
        raise DatasetError(f"--root: no {' / '.join(ANNOTATION_FILES)} in {root} or its parent; pass --annotations FILE")
    return found[0]


def _image_path(root: Path, entry: dict) -> Path | None:
    name = entry.get("filename")
    if not isinstance(name, str) or not name:
        return None
    candidates = []
    if entry.get("filepath"):
        candidates.append(root / str(entry["filepath"]) / name)
    candidates.append(root / name)
    candidates.extend(root / folder / name for folder in IMAGE_FOLDERS)
    return next((c for c in candidates if c.is_file()), None)


def karpathy_dataset(root: str | os.PathLike, annotations: str | os.PathLike | None = None, split: str = "test",
                     max_captions: int | None = None) -> RetrievalDataset:
    """Read one split of a Karpathy file. Images missing on disk are listed in ``missing`` and left out
    together with their captions (the result says how many)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"--root: no such directory: {base}")
    path = find_annotations(base, annotations)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DatasetError(f"{path} is not a Karpathy split file (no 'images' list)")
    chosen = [e for e in entries if isinstance(e, dict) and e.get("split") == split]
    if not chosen:
        splits = sorted({str(e.get("split")) for e in entries if isinstance(e, dict)})
        raise DatasetError(f"{path} has no images in split {split!r} (splits: {', '.join(splits) or 'none'})")
    images, texts, text_image, missing = [], [], [], []
    for entry in chosen:
        sentences = [s.get("raw", "").strip() for s in entry.get("sentences", []) if isinstance(s, dict)]
        sentences = [s for s in sentences if s][:max_captions]
        image = _image_path(base, entry)
        if image is None or not sentences:
            missing.append(str(entry.get("filename")) + ("" if sentences else " (no captions)"))
            continue
        for sentence in sentences:
            texts.append(sentence)
            text_image.append(len(images))
        images.append(image)
    if not images:
        raise DatasetError(f"none of the {len(chosen)} {split} images of {path.name} were found under {base} "
                           f"(first: {missing[0]})")
    return RetrievalDataset(name=str(data.get("dataset", path.stem)), annotations=path, split=split, images=images,
                            texts=texts, text_image=text_image, missing=missing)


__all__ = ["RetrievalDataset", "karpathy_dataset", "find_annotations"]
