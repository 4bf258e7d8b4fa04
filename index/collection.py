"""The directory that ``tipsv2 index build`` writes: a global and/or a patch index plus the build record.

```
OUT/generation.json the published generation: which manifest of each index, and the build record
                    (the commit point of every change; see generation.py)
OUT/build.json      a copy of the build record: model, kinds, inputs, shard, counts
OUT/skipped.jsonl   one {"id", "path", "reason"} line per input that could not be decoded
OUT/global/         GlobalIndex directory (when a global kind was requested)
OUT/patch/          PatchIndex directory (with --patches / --kind patch|both)
OUT/.build/         work area of an unfinished build (journal + embedded chunks); gone when done
OUT/.lock           the writer lock (see lock.py)
```
The search and info commands also accept a bare GlobalIndex / PatchIndex directory, and build
directories written before generations existed (their indexes' ``manifest.json``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tipsv2_sdk.io import atomic_write

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
    generation: int = 0  # published generation (bare index: its manifest's; 0: none recorded)
    manifests: dict[str, str] = field(default_factory=dict)  # index name -> manifest file to open
    plan: str | None = None  # id of the build plan the generation completed

    def manifest_name(self, index: str) -> str:
        """Which manifest file of ``index`` ("global" / "patch") belongs to this state."""
        return self.manifests.get(index, MANIFEST)

    @property
    def model_ref(self) -> str | None:
        """How the build loaded its model (a registry name or a directory), if recorded."""
        return self.build.get("model", {}).get("ref")


def locate(path: str | os.PathLike) -> Collection:
    """Find the indexes at ``path`` and the state to read; ``IndexNotFoundError`` (naming the path) if none.

    A build directory's published generation decides which manifests are opened; a directory
    without one (written before generations existed) uses each index's ``manifest.json``.
    """
    from .errors import IndexNotFoundError
    from .generation import read_generation
    from .manifest import read_manifest

    path = Path(path)
    if not path.exists():
        raise IndexNotFoundError(f"no such index: {path}")
    if not path.is_dir():
        raise IndexNotFoundError(f"{path} is a file, not an index directory")
    if (path / MANIFEST).is_file():  # a bare library index
        manifest = read_manifest(path)
        kind = manifest.type
        return Collection(path, global_path=path if kind != "patch" else None, patch_path=path if kind == "patch" else None,
                          generation=int(manifest.files.get("gen", 0)))
    generation = read_generation(path)
    if generation is not None:
        return Collection(
            path,
            global_path=path / GLOBAL_DIR if GLOBAL_DIR in generation.indexes else None,
            patch_path=path / PATCH_DIR if PATCH_DIR in generation.indexes else None,
            build=generation.build, generation=generation.number, plan=generation.plan,
            manifests={name: generation.manifest_name(name) for name in generation.indexes},
        )
    if (path / WORK_DIR / "journal.json").is_file() and not (path / BUILD_FILE).is_file():
        raise IndexNotFoundError(f"{path} is not an index yet: an unfinished build "
                                 "(rerun the same `tipsv2 index build` command to finish it)")
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
    """The build record of an index directory (its published generation's, else ``build.json``), or ``{}``."""
    from .errors import IndexFormatError
    from .generation import read_generation

    generation = read_generation(path)
    if generation is not None:
        return generation.build
    try:
        data = json.loads((Path(path) / BUILD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"{Path(path) / BUILD_FILE} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise IndexFormatError(f"{Path(path) / BUILD_FILE} does not hold a JSON object")
    return data


def read_skipped(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The skipped-input lines of an index directory (``[]`` when there are none or it is unreadable).

    The list is informational (which files to fix); a damaged one is not a damaged index.
    """
    target = Path(path) / SKIPPED_FILE
    try:
        if not target.is_file() or target.stat().st_size > 1 << 30:
            return []
        rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError, RecursionError):
        return []
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("path"), str)]


def write_skipped(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Atomically replace ``skipped.jsonl`` (rows sorted by id, then path).

    ASCII JSON, so that file names that are not valid UTF-8 round-trip (as ``\\udcXX`` escapes).
    """
    rows = sorted(rows, key=lambda r: (r.get("id", -1), r.get("path", "")))
    with atomic_write(Path(path) / SKIPPED_FILE, "wb") as handle:
        for row in rows:
            handle.write((json.dumps(row, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii"))


__all__ = ["BUILD_FILE", "Collection", "GLOBAL_DIR", "PATCH_DIR", "SKIPPED_FILE", "WORK_DIR", "locate",
           "read_build", "read_skipped", "write_skipped"]
