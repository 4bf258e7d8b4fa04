"""The directory that ``tipsv2 index build`` writes: a global and/or a patch index plus the build record.

```
OUT/build.json      what was built from what: model, kinds, inputs, shard, counts (written last)
OUT/skipped.jsonl   one {"id", "path", "reason"} line per input that could not be decoded
OUT/global/         GlobalIndex directory (when a global kind was requested)
OUT/patch/          PatchIndex directory (with --patches / --kind patch|both)
OUT/.build/         work area of an unfinished build (journal + embedded chunks); gone when done
```
The search and info commands also accept a bare GlobalIndex / PatchIndex directory.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..io import atomic_write

GLOBAL_DIR = "global"
PATCH_DIR = "patch"
BUILD_FILE = "build.json"
SKIPPED_FILE = "skipped.jsonl"
WORK_DIR = ".build"
MANIFEST = "manifest.json"


@dataclass
class Collection:
    """The indexes found at a path, and its build record (empty for a bare index directory)."""

    path: Path
    global_path: Path | None = None
    patch_path: Path | None = None
    build: dict[str, Any] = field(default_factory=dict)

    @property
    def model_ref(self) -> str | None:
        """How the build loaded its model (a registry name or a directory), if recorded."""
        return self.build.get("model", {}).get("ref")


def _index_type(directory: Path) -> str | None:
    try:
        return json.loads((directory / MANIFEST).read_text(encoding="utf-8")).get("type")
    except (OSError, ValueError):
        return None


def locate(path: str | os.PathLike) -> Collection:
    """Find the indexes at ``path``; raises ``IndexNotFoundError`` (naming the path) if there are none."""
    from .errors import IndexNotFoundError

    path = Path(path)
    if not path.exists():
        raise IndexNotFoundError(f"no such index: {path}")
    if (path / MANIFEST).is_file():  # a bare library index
        kind = _index_type(path)
        return Collection(path, global_path=path if kind != "patch" else None, patch_path=path if kind == "patch" else None)
    found = Collection(
        path,
        global_path=path / GLOBAL_DIR if (path / GLOBAL_DIR / MANIFEST).is_file() else None,
        patch_path=path / PATCH_DIR if (path / PATCH_DIR / MANIFEST).is_file() else None,
        build=read_build(path),
    )
    if found.global_path is None and found.patch_path is None:
        hint = (" (an unfinished build: rerun the same `tipsv2 index build` command to finish it)"
                if (path / WORK_DIR).is_dir() else "")
        raise IndexNotFoundError(f"{path} is not an index: no manifest.json, {GLOBAL_DIR}/ or {PATCH_DIR}/{hint}")
    return found


def read_build(path: str | os.PathLike) -> dict[str, Any]:
    """The build record of an index directory, or ``{}``."""
    try:
        return json.loads((Path(path) / BUILD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        from .errors import IndexFormatError

        raise IndexFormatError(f"{Path(path) / BUILD_FILE} is not valid JSON: {exc}") from None


def read_skipped(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The skipped-input lines of an index directory (``[]`` when there are none)."""
    target = Path(path) / SKIPPED_FILE
    if not target.is_file():
        return []
    return [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_skipped(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Atomically replace ``skipped.jsonl`` (rows sorted by id, then path)."""
    rows = sorted(rows, key=lambda r: (r.get("id", -1), r.get("path", "")))
    with atomic_write(Path(path) / SKIPPED_FILE, "wb") as handle:
        for row in rows:
            handle.write((json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))


__all__ = ["BUILD_FILE", "Collection", "GLOBAL_DIR", "PATCH_DIR", "SKIPPED_FILE", "WORK_DIR", "locate",
           "read_build", "read_skipped", "write_skipped"]
