"""Resumable, robust index builds: inputs → embedded chunks (journaled) → global / patch indexes.

One run:
1. collects the inputs (sorted; an image's id is its position in that list, also under ``--shard``),
2. plans what to embed and what to remove against what ``OUT`` already holds,
3. embeds the plan in fixed chunks, each written atomically and then recorded in the journal,
4. adds every chunk to the indexes and publishes them together as a new generation
   (``update.apply_plan``, ``generation.publish``).

The whole run holds the directory's writer lock (``lock.py``): another build, add, remove or
merge of the same directory is refused (or waits ``wait`` seconds). Readers are never blocked and
keep seeing the previous generation until the new one is published.

Killed at any point and rerun with the same command, it continues from the first chunk that is
not in the journal. Chunks have fixed boundaries and batches, so the result is bit-identical to a
build that was never interrupted. Undecodable inputs are skipped and listed, never fatal. A run
with other inputs than an interrupted one is refused until that one is finished or ``restart``ed.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.errors import TipsV2Error
from tipsv2_sdk.images import DEFAULT_MAX_PIXELS
from .collection import BUILD_FILE, GLOBAL_DIR, PATCH_DIR, WORK_DIR
from .engines import ChunkJob, ChunkSpec, EngineOptions, InOrderCommitter, make_engine, pending_chunks
from .inputs import CollectedInputs, InputError, fingerprint
from .journal import Plan, WorkArea
from .lock import LOCK_NAME, WriterLock
from .manifest import weights_fingerprint
from .update import apply_plan, check_resume, manual_changes, published_state, request_of, write_errors
from .sources import SourceOptions, collect_sources
from .shard import Shard, select

GLOBAL_KINDS = ("cls1", "cls2", "concat", "mean_patch")


class BuildError(TipsV2Error, ValueError):
    """A build cannot run as asked (settings differ from the directory's, inputs vanished, ...)."""


@dataclass
class BuildOptions:
    """How to embed and index. ``kind`` None builds no global index; ``patches`` adds a patch index."""

    kind: str | None = "cls1"
    patches: bool = False
    batch_size: int = 32
    workers: int = 2
    chunk_size: int | None = None  # images per journaled chunk; None = 8 batches
    image_size: int | None = None
    index_type: str | None = None  # FAISS factory string for the global index; None = automatic
    patch_index_type: str | None = None
    memory_budget: int | None = None
    dtype: str = "float16"  # stored vectors
    pooling: int = 1  # patch pooling (p x p)
    pq: int | None = None  # patch PQ bytes; None = automatic
    template: str | None = None  # index (or build) dir whose trained quantizer the shards share
    max_pixels: int = DEFAULT_MAX_PIXELS
    autocast: bool = False
    restart: bool = False  # discard an interrupted build instead of resuming it
    progress: bool = True
    engine: EngineOptions = field(default_factory=EngineOptions)  # local, or Ray (index/engines/)
    sources: SourceOptions = field(default_factory=SourceOptions)  # how tar / parquet inputs are read

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in GLOBAL_KINDS:
            raise BuildError(f"unknown embedding kind {self.kind!r}; expected one of {', '.join(GLOBAL_KINDS)}")
        if self.kind is None and not self.patches:
            raise BuildError("nothing to build: choose a global kind and/or patches")
        if self.batch_size < 1 or (self.chunk_size is not None and self.chunk_size < 1):
            raise BuildError("batch size and chunk size must be >= 1")


@dataclass
class BuildReport:
    """What a run did; ``to_dict()`` is the ``--json`` output of ``tipsv2 index build``."""

    out: str
    model: dict[str, Any]
    kind: str | None
    patches: bool
    shard: str | None
    inputs: int  # images found in all inputs
    selected: int  # images this shard is responsible for
    ignored: int  # non-image files passed over while walking folders
    added: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    resumed_chunks: int = 0  # chunks found done from an interrupted run
    chunks: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    engine: str = "local"
    unreadable_sources: list[dict[str, str]] = field(default_factory=list)  # containers read only in part
    manual: dict[str, int] = field(default_factory=dict)  # {"kept", "left_out"}: hand-made changes kept
    notes: list[str] = field(default_factory=list)  # things the user should know (shown on stderr)
    generation: int = 0  # the directory's published generation after the run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _model_settings(model, model_ref: str | None) -> dict[str, Any]:
    from .manifest import config_hash

    return {"name": model.name, "config_hash": config_hash(model), "ref": model_ref, "dim": model.embed_dim,
            "weights_fingerprint": weights_fingerprint(model), "trained": bool(model.meta.get("trained", True))}


def _open_or_create(out: Path, model, options: BuildOptions, image_size: int, state=None):
    """The (global, patch) indexes to fill: the published ones (model checked), else created empty."""
    from . import GlobalIndex, PatchIndex

    def template(sub: str) -> str | None:
        # A build directory as template: each index uses its namesake's trained quantizer.
        if options.template is None:
            return None
        nested = Path(options.template) / sub
        return os.fspath(nested if nested.is_dir() else options.template)

    glob = patch = None
    if options.kind is not None:
        path = out / GLOBAL_DIR
        if state is not None and state.global_path is not None:
            glob = GlobalIndex.open(path, model=model, kind=options.kind, manifest=state.manifest_name(GLOBAL_DIR))
        else:
            glob = GlobalIndex.create(path, model=model, kind=options.kind, factory=options.index_type,
                                      memory_budget=options.memory_budget, dtype=options.dtype,
                                      template=template(GLOBAL_DIR))
    if options.patches:
        path = out / PATCH_DIR
        grid = (image_size // model.patch_size,) * 2
        if state is not None and state.patch_path is not None:
            patch = PatchIndex.open(path, model=model, manifest=state.manifest_name(PATCH_DIR))
        else:
            patch = PatchIndex.create(path, model=model, grid=grid, pooling=options.pooling, pq=options.pq,
                                      factory=options.patch_index_type, memory_budget=options.memory_budget,
                                      dtype=options.dtype, template=template(PATCH_DIR))
    return glob, patch


def _check_settings(out: Path, record: dict[str, Any], options: BuildOptions) -> None:
    """Refuse to mix kinds in one directory: its indexes must keep holding the same images."""
    if not record:
        return
    had = (record.get("kind"), bool(record.get("patches")))
    want = (options.kind, options.patches)
    if had != want:
        def label(kind, patches):
            return " + ".join([k for k in (kind, "patches" if patches else None) if k])

        raise BuildError(f"{out} holds a {label(*had)} index but this build asks for {label(*want)}; "
                         "use the same --kind/--patches or a new output directory")


def plan_build(paths: Sequence[str], shard: Shard | None, existing: dict[str, int], record: dict[str, Any],
               *, mode: str = "sync") -> Plan:
    """Decide ids and work: what to embed (new or previously skipped paths) and what to remove.

    A fresh build (or one over the very same input list) uses positions in the full sorted input as
    ids, so shards and single builds agree. Once the indexed set has diverged from one input list
    (an incremental update), new paths get fresh ids after every id used so far.
    ``mode`` "sync" mirrors the input (removes vanished paths); "add" only adds.
    """
    positions = select(len(paths), shard)
    info = {"fingerprint": fingerprint(paths), "count": len(paths), "shard": str(shard) if shard else None}
    old = record.get("inputs", {})
    same_inputs = old.get("fingerprint") == info["fingerprint"] and old.get("ids_are_positions", False)
    # Changes made by hand stay: images removed with `index remove` are not brought back, images
    # added with `index add` are not removed (``update.manual_changes``).
    manual = manual_changes(record) if mode == "sync" else {"added": [], "removed": []}
    excluded, extra = set(manual["removed"]), set(manual["added"])
    if mode == "sync" and (not existing or same_inputs):
        add = [(i, paths[i]) for i in positions if paths[i] not in existing and paths[i] not in excluded]
        next_id = max(len(paths), int(record.get("next_id", 0)))
        return Plan([i for i, _ in add], [p for _, p in add], [], next_id, {**info, "ids_are_positions": True})
    if shard is not None:
        raise BuildError(f"the inputs changed since shard {shard} was built: ids of a sharded build are positions "
                         "in the full input list, so rebuild every shard into new directories and merge again")
    selected = [paths[i] for i in positions]
    next_id = int(record.get("next_id", 0))
    if existing:
        next_id = max(next_id, max(existing.values()) + 1)
    new = [p for p in selected if p not in existing and p not in excluded]
    add_ids = list(range(next_id, next_id + len(new)))
    removed: list[int] = []
    if mode == "sync":
        keep = set(selected) | extra
        removed = sorted(i for p, i in existing.items() if p not in keep)
        if removed and len(removed) == len(existing) and not (set(existing) & keep):
            raise BuildError("none of the indexed images is in the input any more; refusing to empty the index "
                             "(is the input folder mounted?). Build into a new directory instead")
    if mode == "add":
        info = {**old, "ids_are_positions": False}
    else:
        info = {**info, "ids_are_positions": False}
    return Plan(add_ids, new, removed, next_id + len(new), info)


def _indexed_paths(index) -> dict[str, int]:
    if index is None or len(index) == 0:
        return {}
    ids = index.ids()
    return {r["path"]: int(r["id"]) for r in index.records(ids) if r is not None and r.get("path") is not None}


def _progress(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="img", desc="embedding", file=sys.stderr,
                disable=not enabled or total == 0, dynamic_ncols=True)


def build_index(model, inputs: Sequence[str | os.PathLike] | str | os.PathLike | CollectedInputs, out: str | os.PathLike,
                options: BuildOptions | None = None, *, shard: Shard | None = None, mode: str = "sync",
                model_ref: str | None = None, wait: float = 0.0) -> BuildReport:
    """Build (or update, or resume) the index directory ``out`` from images in ``inputs``.

    ``inputs``: folders (walked recursively), list files, globs or image files (or their ``collect_inputs``
    result). ``mode`` "sync" makes
    the index mirror the input (new files added, vanished ones removed); "add" only adds.
    ``model_ref`` is how to load ``model`` again (recorded so ``tipsv2 search`` finds it).
    ``wait``: seconds to wait for another writer of ``out`` (default: refuse at once,
    ``IndexLockedError``). Returns the report; skipped inputs are in ``report.skipped`` and
    ``out/skipped.jsonl``.
    """
    options = replace(options) if options is not None else BuildOptions()  # a resume may adjust the copy
    if mode not in ("sync", "add"):
        raise ValueError(f"mode must be 'sync' or 'add', not {mode!r}")
    out = Path(out)
    if (out / "manifest.json").is_file():
        raise BuildError(f"{out} is a single index directory, not a build directory; build into a new directory")
    if out.is_file():
        raise BuildError(f"{out} is a file; the output must be a directory")
    if out.is_dir() and not _is_build_dir(out) and any(e.name != LOCK_NAME for e in out.iterdir()):
        raise BuildError(f"{out} already holds other files and is not an index; build into a new or empty directory")
    start = time.perf_counter()
    collected = inputs if isinstance(inputs, CollectedInputs) else collect_sources(inputs, options.sources)
    if not collected.paths:
        raise InputError(f"found no image files in {', '.join(map(str, collected.sources))}")
    try:
        image_size = model.check_image_size(options.image_size)
    except ValueError as exc:
        raise BuildError(f"--image-size {options.image_size}: {exc}") from None
    settings = {"model": _model_settings(model, model_ref), "kind": options.kind, "patches": options.patches,
                "image_size": image_size, "dtype": options.dtype, "mode": mode, "shard": str(shard) if shard else None}
    if options.sources != SourceOptions():
        settings["sources"] = options.sources.to_dict()  # other columns would read other bytes
    engine = make_engine(options.engine, model, model_ref, progress=options.progress)  # fails before any work
    out.mkdir(parents=True, exist_ok=True)
    with WriterLock(out, command="index add" if mode == "add" else "index build", wait=wait), write_errors(out):
        # Everything is decided under the lock, from the published state: nothing another writer
        # did before we got the lock is lost.
        state = published_state(out)
        record = state.build if state is not None else {}
        _check_settings(out, record, options)
        work = WorkArea(out / WORK_DIR)
        glob, patch = _open_or_create(out, model, options, image_size, state)
        _check_factories(options, glob, patch, len(collected.paths))
        request = request_of(collected, mode)
        journal = None if options.restart else work.read_journal()
        if journal is not None:
            check_resume(out, journal, request)
        if journal is not None and _differs(journal["settings"], settings):
            raise BuildError(f"{out} holds an interrupted build with other settings "
                             f"({_differs(journal['settings'], settings)}); rerun it with the same settings "
                             "or pass --restart to discard it")
        resumed = journal is not None
        if journal is None:
            existing = _indexed_paths(glob if glob is not None else patch)
            plan = plan_build(collected.paths, shard, existing, record, mode=mode)
            chunk_size = options.chunk_size or 8 * options.batch_size
            journal = work.start({**settings, "batch_size": options.batch_size}, plan, chunk_size, request)
        plan = Plan.from_dict(journal["plan"])
        # A resumed build keeps the batch size it started with: batches change the float rounding.
        options.batch_size = int(journal["settings"].get("batch_size", options.batch_size))
        committer = InOrderCommitter(work, journal)
        todo = pending_chunks(work, journal, plan.add_ids, plan.add_paths, committer)
        embedded = sum(len(ids) for _, ids, _ in todo)
        bar = _progress(len(plan.add_ids), len(plan.add_ids) - embedded, options.progress)
        spec = ChunkSpec(image_size=image_size, kind=options.kind, patches=options.patches, patch_dtype=options.dtype,
                         batch_size=options.batch_size, workers=options.workers, max_pixels=options.max_pixels,
                         autocast=options.autocast)

        def finished(chunk: int, images: int) -> None:
            committer(chunk)
            bar.update(images)

        engine.run(ChunkJob(os.fspath(work.path), todo, spec, options.sources), finished)
        bar.close()
        report = apply_plan(out, work, journal, plan, glob, patch, collected, settings, record, shard, state)
    report.resumed_chunks = int(journal["chunks"]) - len(todo) if resumed else 0
    report.engine = engine.name
    report.seconds = round(time.perf_counter() - start, 3)
    report.images_per_second = round(embedded / report.seconds, 2) if report.seconds > 0 else 0.0
    return report


def _check_factories(options: BuildOptions, glob, patch, n: int) -> None:
    """Reject a bad ``--index-type`` before the embedding work, not when saving after it."""
    from .factory import describe_factory

    for factory, index, per_image in ((options.index_type, glob, 1), (options.patch_index_type, patch, None)):
        if factory is None or index is None:
            continue
        vectors = max(1, n * (per_image or int(np.prod(index.grid))))
        try:
            describe_factory(factory, index.dim, vectors)
        except ValueError as exc:
            raise BuildError(str(exc).splitlines()[0]) from None


def _is_build_dir(out: Path) -> bool:
    from .generation import GENERATION_FILE

    return any((out / name).exists() for name in (BUILD_FILE, GENERATION_FILE, WORK_DIR))


def _differs(old: dict[str, Any], new: dict[str, Any]) -> str:
    """A description of the first setting that differs (ignoring run-only ones), or ''."""
    for key in ("model", "kind", "patches", "image_size", "dtype", "mode", "shard", "sources"):
        a, b = old.get(key), new.get(key)
        if key == "model":
            a, b = (a or {}).get("config_hash"), (b or {}).get("config_hash")
            fa, fb = (old.get(key) or {}).get("weights_fingerprint"), (new.get(key) or {}).get("weights_fingerprint")
            if a == b and fa and fb and fa != fb:
                return f"model weights: {fa} vs {fb}"
        if a != b:
            return f"{key}: {a} vs {b}"
    return ""


__all__ = ["BuildError", "BuildOptions", "BuildReport", "GLOBAL_KINDS", "build_index", "plan_build"]
