"""ImageNet-style classification folders: one sub-folder per class, images inside.

Layout::

    ROOT/n01440764/ILSVRC2012_val_00000293.JPEG
    ROOT/n01443537/...

Class ``i`` is the ``i``-th sub-folder in sorted order (torchvision's ``ImageFolder`` rule). The
names used in the prompts come from ``--class-names``:

* a ``.txt`` file with one name per line, in sorted folder order (e.g. the usual 1000 ImageNet
  names), or with ``FOLDER<TAB>NAME`` lines (any order, every folder once);
* a ``.json`` file with a list (sorted folder order) or an object ``{"FOLDER": "NAME"}``;
* nothing: the folder names, with ``_`` read as a space.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...images import IMAGE_SUFFIXES
from .base import DatasetError


@dataclass
class ClassificationDataset:
    """Image paths with integer labels and the class names used for the prompts."""

    root: Path
    folders: list[str]
    class_names: list[str]
    images: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.images)


def _names_from_file(path: Path, folders: list[str]) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"--class-names: no such file: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"--class-names: {path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            mapping = {str(k): str(v) for k, v in data.items()}
        elif isinstance(data, list):
            mapping = dict(zip(folders, map(str, data))) if len(data) == len(folders) else None
            if mapping is None:
                raise DatasetError(f"--class-names: {path} lists {len(data)} names for {len(folders)} class folders")
        else:
            raise DatasetError(f"--class-names: {path} must hold a list or an object, not {type(data).__name__}")
    else:
        lines = [line.strip("\r") for line in text.splitlines() if line.strip()]
        if lines and all("\t" in line for line in lines):
            mapping = dict(line.split("\t", 1) for line in lines)
            mapping = {k.strip(): v.strip() for k, v in mapping.items()}
        elif len(lines) == len(folders):
            mapping = dict(zip(folders, (line.strip() for line in lines)))
        else:
            raise DatasetError(f"--class-names: {path} has {len(lines)} names for {len(folders)} class folders "
                               "(one name per line in sorted folder order, or FOLDER<TAB>NAME lines)")
    missing = [f for f in folders if f not in mapping]
    if missing:
        raise DatasetError(f"--class-names: {path} has no name for folder(s) {', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else ""))
    return [mapping[f] for f in folders]


def image_folder_dataset(root: str | os.PathLike, class_names: str | os.PathLike | None = None) -> ClassificationDataset:
    """List ``root``'s class folders and images; the class names come from ``class_names`` if given."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DatasetError(f"--root: no such directory: {base}")
    folders = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"--root: {base} has no class sub-folders (expected ROOT/<class>/<image>)")
    names = _names_from_file(Path(class_names), folders) if class_names else [f.replace("_", " ") for f in folders]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or any(not n.strip() for n in names):
        source = f"--class-names {class_names}" if class_names else "the folder names"
        raise DatasetError(f"{source}: empty or repeated class names: {', '.join(dupes[:5])}")
    images, labels = [], []
    for index, folder in enumerate(folders):
        for path in sorted((base / folder).rglob("*")):
            if path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES):
                images.append(path)
                labels.append(index)
    if not images:
        raise DatasetError(f"--root: no image files under the class folders of {base}")
    return ClassificationDataset(root=base, folders=folders, class_names=names, images=images, labels=labels)


__all__ = ["ClassificationDataset", "image_folder_dataset"]
