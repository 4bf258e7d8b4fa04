"""Generations of a build directory: the global and the patch index change together, atomically.

Every change to a build directory (``index build``, ``add``, ``remove``, ``merge``) writes a new
*generation*: each index writes its new files under new names plus an immutable
``<index>/manifest-<gen>.json`` (``BaseIndex.stage``), and then a single atomic rename of
``generation.json`` publishes both at once::

    {"format": 1, "generation": 7,
     "indexes":  {"global": "global/manifest-000007.json", "patch": "patch/manifest-000005.json"},
     "previous": {"global": "global/manifest-000006.json", "patch": "patch/manifest-000004.json"},
     "build": {...the build record...}, "plan": "<id of the journaled plan it completed>", "published": "..."}

Readers (``snapshot.open_snapshot``) read ``generation.json`` first and open exactly the manifests
it names, so they see the old pair or the new pair, never one of each. Files are never rewritten
under the same name. After publishing, files that neither the new nor the previous generation
names are deleted: a reader still opening the previous generation finds its files, and one that
is older still retries with the current generation. A file a reader has already opened or
memory-mapped stays readable after it is deleted (POSIX).

``<index>/manifest.json`` and ``build.json`` are refreshed after each publish as plain copies, for
tools that open one index directory directly.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tipsv2_sdk.io import write_json
from .errors import IndexFormatError

GENERATION_FILE = "generation.json"
GENERATION_FORMAT = 1
INDEX_NAMES = ("global", "patch")
_MANIFEST_REF = re.compile(r"^(global|patch)/(manifest-[0-9]{6,12}\.json)$")
_STAGED = re.compile(r"^\.?manifest-[0-9]{6,12}\.json")
_TMP = re.compile(r"^\..+\.tmp$")
MAX_GENERATION_BYTES = 256 * 2**20  # the build record lists manual edits; still far below this


@dataclass
class Generation:
    """One published state of a build directory."""

    number: int
    indexes: dict[str, str]  # index name -> "global/manifest-000007.json"
    previous: dict[str, str] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    plan: str | None = None  # id of the journaled build plan this generation completed

    def manifest_name(self, index: str) -> str:
        """The manifest file name (inside the index's folder) this generation uses for ``index``."""
        return self.indexes[index].split("/", 1)[1]


def read_generation(path: str | os.PathLike) -> Generation | None:
    """The published generation of a build directory, ``None`` if it has none (older layout or unbuilt)."""
    file = Path(path) / GENERATION_FILE
    try:
        if file.stat().st_size > MAX_GENERATION_BYTES:
            raise IndexFormatError(f"{file} is too large ({file.stat().st_size} bytes)")
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexFormatError(f"cannot read {file}: {exc}") from None
    return _parse(data, file)


def _parse(data: Any, file: Path) -> Generation:
    def bad(why: str) -> IndexFormatError:
        return IndexFormatError(f"{file}: {why}")

    if not isinstance(data, dict) or type(data.get("format")) is not int or data["format"] != GENERATION_FORMAT:
        raise bad(f"not a generation record of format {GENERATION_FORMAT}")
    number = data.get("generation")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise bad(f"generation must be a positive integer, not {number!r}")
    tables = {}
    for key in ("indexes", "previous"):
        table = data.get(key, {})
        if not isinstance(table, dict):
            raise bad(f"{key} must be an object")
        for name, ref in table.items():
            found = _MANIFEST_REF.match(ref) if isinstance(ref, str) else None
            if found is None or found.group(1) != name:
                raise bad(f"{key}.{name} = {ref!r} is not a manifest of the {name} index"[:200])
        tables[key] = dict(table)
    if not tables["indexes"]:
        raise bad("names no index")
    build = data.get("build", {})
    if not isinstance(build, dict):
        raise bad("build must be an object")
    plan = data.get("plan")
    if plan is not None and not isinstance(plan, str):
        raise bad("plan must be a string")
    return Generation(number, tables["indexes"], tables["previous"], build, plan)


def current_generation(path: str | os.PathLike) -> int:
    """A number that grows with every published change of an index directory.

    For a build directory, the number in ``generation.json`` (0 when it has none yet: a directory
    written before generations existed, or a first build not finished). For a bare index
    directory, its manifest's generation. Cheap: one small file is read. Poll it and open a new
    ``open_snapshot`` when it changes.
    """
    path = Path(path)
    if (path / "manifest.json").is_file():
        from .manifest import read_manifest

        return int(read_manifest(path).files.get("gen", 0))
    gen = read_generation(path)
    return gen.number if gen is not None else 0


def publish(out: str | os.PathLike, indexes: dict[str, Any], build: dict[str, Any], *,
            plan: str | None = None) -> Generation:
    """Stage every index of ``out`` and publish them together as the next generation.

    ``indexes`` maps ``"global"`` / ``"patch"`` to opened indexes of ``out`` (the caller holds the
    writer lock). Until the rename of ``generation.json`` nothing a reader uses has changed, so a
    failure (full disk, kill) leaves the previous generation in place, complete.
    """
    out = Path(out)
    previous = read_generation(out)
    staged = {name: f"{name}/{index.stage()}" for name, index in indexes.items()}
    number = (previous.number if previous else 0) + 1
    from .manifest import now_iso

    record = {"format": GENERATION_FORMAT, "generation": number, "indexes": staged,
              "previous": previous.indexes if previous else {}, "build": build, "plan": plan, "published": now_iso()}
    write_json(out / GENERATION_FILE, record)  # the commit point
    generation = Generation(number, staged, record["previous"], build, plan)
    # Published. What follows only tidies up; a failure here (e.g. the disk filled up just now)
    # changes nothing for readers and is repaired by the next publish.
    with contextlib.suppress(OSError):
        from .collection import BUILD_FILE

        for index in indexes.values():
            index.manifest.save(index.path)
        write_json(out / BUILD_FILE, build)
        collect_garbage(out, generation)
    return generation


def referenced_files(files: dict[str, Any]) -> set[str]:
    """Every file a manifest's ``files`` table names."""
    names = set()
    for seg in files.get("segments", []) or []:
        if isinstance(seg, dict) and isinstance(seg.get("name"), str):
            n = seg["name"]
            names |= {f"vectors-{n}.npy", f"ids-{n}.npy", f"records-{n}.jsonl"}
    names |= {files[k] for k in ("index", "ivfdata", "trained", "dead") if isinstance(files.get(k), str)}
    return names


def collect_garbage(out: str | os.PathLike, generation: Generation) -> list[str]:
    """Delete index files neither ``generation`` nor the one before it names; returns the deleted paths.

    Only files this library writes are candidates (and temporary files of interrupted writes);
    the caller holds the writer lock, so no other writer is creating files meanwhile.
    """
    from .index_files import _OWN_FILES
    from .manifest import MANIFEST_NAME, read_manifest

    out = Path(out)
    deleted = []
    for name in INDEX_NAMES:
        folder = out / name
        if not folder.is_dir():
            continue
        keep = {MANIFEST_NAME}
        for table in (generation.indexes, generation.previous):
            ref = table.get(name)
            if not ref:
                continue
            manifest_name = ref.split("/", 1)[1]
            keep.add(manifest_name)
            with contextlib.suppress(IndexFormatError, OSError):
                keep |= referenced_files(read_manifest(folder, manifest_name).files)
        with contextlib.suppress(IndexFormatError, OSError):
            keep |= referenced_files(read_manifest(folder).files)
        for entry in os.scandir(folder):
            if entry.name in keep or not entry.is_file(follow_symlinks=False):
                continue
            if _OWN_FILES.match(entry.name) or _STAGED.match(entry.name) or _TMP.match(entry.name):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                deleted.append(entry.path)
    for entry in os.scandir(out):  # temporary files of top-level writes (generation.json, build.json, ...)
        if _TMP.match(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            deleted.append(entry.path)
    return deleted


__all__ = ["GENERATION_FILE", "Generation", "collect_garbage", "current_generation", "publish", "read_generation",
           "referenced_files"]
