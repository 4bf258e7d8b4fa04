"""Combine the build directories of a sharded build into one (``tipsv2 index merge``).

Each sub-index (global, patch) is merged by the index library; this module checks that the
shards belong together (same model, kinds and input list; every shard present exactly once),
merges their skipped-file lists and writes the combined build record.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tipsv2_sdk.errors import TipsV2Error
from .collection import BUILD_FILE, GLOBAL_DIR, PATCH_DIR, WORK_DIR, read_build, read_skipped, write_skipped


class ShardSetError(TipsV2Error, ValueError):
    """The directories given to merge are not the complete, matching shards of one build."""


def _check_shards(dirs: list[Path], allow_partial: bool) -> tuple[list[dict[str, Any]], list[int]]:
    """The build records of ``dirs`` and the shard numbers missing from them (checked to match)."""
    records = []
    for d in dirs:
        if (d / WORK_DIR / "journal.json").is_file():
            raise ShardSetError(f"{d} is an unfinished build; rerun its `tipsv2 index build` command first")
        from .lock import describe_holder, read_holder

        if read_holder(d) is not None:
            raise ShardSetError(f"{d} is being written by {describe_holder(read_holder(d))}; merge it when that is done")
        record = read_build(d)
        if not record:
            raise ShardSetError(f"{d} has no {BUILD_FILE}: not a directory written by `tipsv2 index build`")
        records.append(record)
    first = records[0]
    for d, r in zip(dirs[1:], records[1:]):
        for key, a, b in (("model", first["model"].get("config_hash"), r["model"].get("config_hash")),
                          ("kind", first.get("kind"), r.get("kind")), ("patches", first.get("patches"), r.get("patches")),
                          ("image_size", first.get("image_size"), r.get("image_size")),
                          ("input list", first["inputs"].get("fingerprint"), r["inputs"].get("fingerprint"))):
            if a != b:
                raise ShardSetError(f"{dirs[0]} and {d} differ in {key} ({a} vs {b}); they are not shards of one build")
    specs = [r.get("shard") for r in records]
    missing: list[int] = []
    if any(s is not None for s in specs):
        counts = {int(s.split("/")[1]) for s in specs if s}
        seen = [int(s.split("/")[0]) for s in specs if s]
        if len(counts) != 1 or None in specs:
            raise ShardSetError(f"the directories come from different shard splits: {', '.join(map(str, specs))}")
        total = counts.pop()
        dupes = sorted({i for i in seen if seen.count(i) > 1})
        if dupes:
            raise ShardSetError(f"shard {dupes[0]}/{total} is given more than once")
        missing = sorted(set(range(total)) - set(seen))
        if missing and not allow_partial:
            raise ShardSetError(f"shard {missing[0]}/{total} is missing ({len(missing)} of {total} absent); "
                                "pass --allow-partial to merge the others anyway")
    return records, missing


def merge_builds(out: str | os.PathLike, shard_dirs: list[str | os.PathLike], *, strategy: str = "auto",
                 on_disk: bool = False, allow_partial: bool = False, overwrite: bool = False,
                 wait: float = 0.0) -> dict[str, Any]:
    """Merge shard build directories into ``out``; returns the combined build record.

    ``out`` is written under its writer lock (``wait`` seconds for another writer) and its global
    and patch indexes are published together as one generation.
    """
    from . import merge_indexes
    from .generation import publish
    from .lock import LOCK_NAME, WriterLock
    from .update import write_errors

    out = Path(out)
    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise ShardSetError("give at least one shard directory to merge")
    if out.resolve() in {d.resolve() for d in dirs}:
        raise ShardSetError(f"the output {out} is also one of the shards; merge into a new directory")
    if out.exists() and any(e.name != LOCK_NAME for e in out.iterdir()) and not overwrite:
        raise ShardSetError(f"{out} already exists and is not empty; choose a new directory or pass --overwrite")
    records, missing = _check_shards(dirs, allow_partial)
    first = records[0]
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out, command="index merge", wait=wait), write_errors(out):
        counts, merged = {}, {}
        for sub in (GLOBAL_DIR, PATCH_DIR):
            parts = [d / sub for d in dirs if (d / sub / "manifest.json").is_file()]
            if not parts:
                continue
            if len(parts) != len(dirs):
                raise ShardSetError(f"only {len(parts)} of {len(dirs)} shards have a {sub} index")
            merged[sub] = merge_indexes(out / sub, parts, strategy=strategy, on_disk=on_disk, overwrite=overwrite,
                                        commit=False)
            counts[sub] = len(merged[sub])
        write_skipped(out, [row for d in dirs for row in read_skipped(d)])
        inputs = {**first["inputs"], "shard": None}
        record = {**first, "shard": None, "inputs": inputs, "counts": counts,
                  "next_id": max(int(r.get("next_id", 0)) for r in records),
                  "skipped": sum(int(r.get("skipped", 0)) for r in records),
                  "merged_from": [{"path": os.fspath(d), "shard": r.get("shard")} for d, r in zip(dirs, records)],
                  "last_run": {"merged": len(dirs), "missing_shards": missing}}
        publish(out, merged, record)
    return record


__all__ = ["ShardSetError", "merge_builds"]
