"""How a build's plan becomes a new published generation, and what the build record remembers.

``builder.build_index`` embeds a plan into the work area; ``apply_plan`` folds the embedded chunks
into the indexes and publishes them together (``generation.publish``). It is idempotent: a plan
whose id the published generation already carries is not applied twice (a crash between the
publish and the removal of the work area), so a rerun only tidies up.

The build record keeps the manual changes made with ``index add`` / ``index remove``
(``"manual": {"added": [...], "removed": [...]}``): a later ``index build`` over the original
inputs keeps images added by hand and does not bring back images removed by hand.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .collection import GLOBAL_DIR, PATCH_DIR, Collection, read_build, read_skipped, write_skipped
from .errors import IndexWriteError

# Write failures that are about the disk, not a bug: reported in one line, nothing published.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
ADD_BYTES = 256 * 2**20  # embedded chunks are added to the indexes in groups of about this size


@contextmanager
def write_errors(where: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk (or read-only / unwritable directory) into ``IndexWriteError`` naming ``where``."""
    try:
        yield
    except IndexWriteError:
        raise
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        what = os.strerror(exc.errno).lower()
        raise IndexWriteError(exc.errno, f"cannot write to {where}: {what}; nothing was published (the index "
                              "is as it was), free space or fix permissions and rerun") from None


def published_state(out: Path) -> Collection | None:
    """What a writer starts from: the published generation, a directory of the older layout, or nothing."""
    from .collection import MANIFEST, locate
    from .generation import read_generation

    if read_generation(out) is not None:
        return locate(out)
    paths = {sub: out / sub for sub in (GLOBAL_DIR, PATCH_DIR) if (out / sub / MANIFEST).is_file()}
    if not paths:
        return None
    return Collection(out, global_path=paths.get(GLOBAL_DIR), patch_path=paths.get(PATCH_DIR), build=read_build(out))


def request_of(collected, mode: str) -> dict[str, Any]:
    """What a run was asked to do, as recorded in its journal (compared when it is resumed)."""
    from .inputs import fingerprint
    from .store import printable

    return {"mode": mode, "fingerprint": fingerprint(collected.paths), "count": len(collected.paths),
            "sources": [printable(os.fsdecode(s)) for s in collected.sources]}


def check_resume(out: Path, journal: dict[str, Any], request: dict[str, Any]) -> None:
    """Refuse to resume an interrupted plan for a command with other inputs (it would silently add them)."""
    from .builder import BuildError
    from .snapshot import describe_pending, pending_work

    old = journal.get("request")
    if not old:
        return  # journal of an older version: no record of its inputs
    if (old.get("mode"), old.get("fingerprint")) != (request["mode"], request["fingerprint"]):
        pending = pending_work(out)
        raise BuildError(describe_pending(pending, out, refused=True) if pending else
                         f"{out} holds an interrupted build; rerun it to finish it first, or pass --restart")


def model_record(record: dict[str, Any], settings_model: dict[str, Any], notes: list[str], out: Path) -> dict[str, Any]:
    """The build record's model: the one the index was first built with.

    A run with ``--model`` pointing elsewhere does not replace it; only a recorded model folder
    that no longer exists is replaced (with a note) by the folder of the matching model used now.
    """
    old = record.get("model")
    if not old:
        return dict(settings_model)
    out_model = dict(old)
    ref, new_ref = old.get("ref"), settings_model.get("ref")
    if ref and os.path.isabs(ref) and not os.path.exists(ref) and new_ref and new_ref != ref:
        out_model["ref"] = new_ref
        notes.append(f"the model folder {ref} recorded by {out} no longer exists; it now refers to {new_ref}")
    return out_model


def manual_changes(record: dict[str, Any]) -> dict[str, list[str]]:
    """``{"added": [...], "removed": [...]}``: paths changed by hand since the last full build."""
    manual = record.get("manual") if isinstance(record.get("manual"), dict) else {}
    return {key: [p for p in manual.get(key, []) if isinstance(p, str)] for key in ("added", "removed")}


def with_manual(manual: dict[str, list[str]], *, added=(), removed=()) -> dict[str, list[str]]:
    """The manual lists after adding ``added`` and removing ``removed`` by hand."""
    add_set, rem_set = set(manual["added"]), set(manual["removed"])
    add_set = (add_set | set(added)) - set(removed)
    rem_set = (rem_set | set(removed)) - set(added)
    return {"added": sorted(add_set), "removed": sorted(rem_set)}


def _read_chunk(work, chunk: int):
    from .builder import BuildError

    try:
        return work.read_chunk(chunk)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            raise
        raise BuildError(f"the work area {work.path} is damaged (chunk {chunk}: {exc}); "
                         "rerun with --restart to embed again") from None


def apply_plan(out: Path, work, journal: dict[str, Any], plan, glob, patch, collected, settings: dict[str, Any],
               record: dict[str, Any], shard, state: Collection | None):
    """Fold the embedded chunks into the indexes and publish them as one generation; returns the report.

    Safe to repeat after a crash: a plan already published is recognised by its id and not applied
    again.
    """
    from .builder import BuildReport
    from .engines.chunks import decode_meta
    from .generation import current_generation, publish
    from .manifest import now_iso
    from .shard import select

    plan_id = journal.get("plan_id")
    done_before = bool(plan_id) and state is not None and state.plan == plan_id
    indexes = {name: ix for name, ix in ((GLOBAL_DIR, glob), (PATCH_DIR, patch)) if ix is not None}
    before = max((len(ix) for ix in indexes.values()), default=0)
    skipped: list[dict[str, Any]] = []
    chunk_rows: list[dict[str, np.ndarray]] = []
    by_id = dict(zip(plan.add_ids, plan.add_paths))
    if not done_before and plan.remove_ids:
        for ix in indexes.values():
            ix.remove(ids=plan.remove_ids, missing_ok=True)

    def flush() -> None:
        # Several chunks go in one add(): fewer, larger segments on disk.
        if not chunk_rows:
            return
        ids = np.concatenate([a["ids"] for a in chunk_rows])
        paths = [by_id[int(i)] for i in ids]
        metas = [m for a in chunk_rows for m in decode_meta(a)]  # captions / JSON of container samples
        metadata = metas if any(m is not None for m in metas) else None
        if glob is not None:
            glob.add(np.concatenate([a["global"] for a in chunk_rows]), paths, ids=ids, metadata=metadata)
        if patch is not None:
            patch.add(np.concatenate([a["patches"] for a in chunk_rows]), paths, ids=ids, metadata=metadata)
        chunk_rows.clear()

    for c in range(int(journal["chunks"])):
        arrays, rows = _read_chunk(work, c)
        skipped += rows
        if done_before:
            continue
        if len(arrays["ids"]):
            chunk_rows.append(arrays)
        if sum(a.nbytes for p in chunk_rows for a in p.values()) >= ADD_BYTES:
            flush()
    flush()
    skipped_paths = {r["path"] for r in skipped}
    added_paths = [p for p in plan.add_paths if p not in skipped_paths]
    mode = settings["mode"]
    manual = manual_changes(record)
    if mode == "add":
        manual = with_manual(manual, added=added_paths)
    notes: list[str] = []
    counts = {name: len(ix) for name, ix in indexes.items()}
    build = {"format": 1, "model": model_record(record, settings["model"], notes, out), "kind": settings["kind"],
             "patches": settings["patches"], "image_size": settings["image_size"], "dtype": settings["dtype"],
             "inputs": plan.inputs, "sources": record.get("sources", collected.sources) if mode == "add" and record
             else collected.sources, "shard": settings["shard"], "next_id": plan.next_id, "counts": counts,
             "manual": manual, "created": record.get("created") or now_iso(), "updated": now_iso()}
    if settings.get("sources"):
        build["source_options"] = settings["sources"]  # parquet columns: search reads thumbnails the same way
    if not done_before and (plan.add_ids or plan.remove_ids or state is None or build["model"] != record.get("model")):
        retried = set(plan.add_paths)
        current = set(collected.paths) if mode == "sync" else None
        kept = [r for r in read_skipped(out) if r.get("path") not in retried and (current is None or r.get("path") in current)]
        write_skipped(out, kept + skipped)
        build["skipped"] = len(kept) + len(skipped)
        build["last_run"] = {"command": "index add" if mode == "add" else "index build", "added": len(added_paths),
                             "removed": len(plan.remove_ids), "skipped": len(skipped)}
        publish(out, indexes, build, plan=plan_id)
    selected = len(select(len(collected.paths), shard))
    collected_set = set(collected.paths)
    kept_manual = len(set(manual["added"]) - collected_set) if mode == "sync" else 0
    left_out = len(set(manual["removed"]) & collected_set) if mode == "sync" else 0
    report = BuildReport(
        out=str(out), model=settings["model"], kind=settings["kind"], patches=settings["patches"],
        shard=settings["shard"], inputs=len(collected.paths), selected=selected, ignored=collected.ignored,
        added=len(added_paths), removed=len(plan.remove_ids), unchanged=max(0, before - len(plan.remove_ids)),
        skipped=sorted(skipped, key=lambda r: r["id"]), chunks=int(journal["chunks"]), counts=counts,
        unreadable_sources=list(getattr(collected, "problems", [])),
    )
    report.manual = {"kept": kept_manual, "left_out": left_out}
    report.notes = notes
    report.generation = current_generation(out)
    work.remove()
    return report


__all__ = ["apply_plan", "check_resume", "manual_changes", "model_record", "published_state", "request_of",
           "with_manual", "write_errors"]
