"""``tipsv2 embed`` for images: inputs → chunks (either engine) → one ``.npy`` plus ``.ids.json``.

The chunks are the same as a build's (fixed slices of the sorted record list, each encoded with
fixed batches), written to a work folder beside the output and journaled, so an interrupted run
resumes where it stopped. The output is assembled from the chunks in two streaming passes (row
counts, then vectors), so it never has to fit in memory; the work folder is removed afterwards.
Row ``i`` of the array is ``items[i]``; ids are positions in the sorted record list.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tipsv2_sdk.io import atomic_write, write_json

from ..journal import Plan, WorkArea
from ..sources import SourceOptions
from . import EngineOptions, make_engine
from .chunks import ChunkJob, ChunkSpec, InOrderCommitter, decode_meta, pending_chunks

IMAGE_KINDS = ("cls1", "cls2", "concat", "mean_patch", "patches")


def ids_path_for(out: str | os.PathLike) -> Path:
    """``vecs.npy`` → ``vecs.ids.json``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".npy") + ".ids.json")


def work_dir_for(out: str | os.PathLike) -> Path:
    """The hidden work folder of an unfinished ``embed`` into ``out``."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


def _spec(model, kind: str, batch_size: int, workers: int, image_size: int) -> ChunkSpec:
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(IMAGE_KINDS)}")
    if kind == "patches":
        return ChunkSpec(image_size=image_size, kind=None, patches=True, patch_dtype="float32", batch_size=batch_size,
                         workers=workers)
    return ChunkSpec(image_size=image_size, kind=kind, batch_size=batch_size, workers=workers)


def _row_shape(model, kind: str, image_size: int) -> tuple[int, ...]:
    if kind == "patches":
        grid = image_size // model.patch_size
        return (grid, grid, model.embed_dim)
    return (model.embed_dim * (2 if kind == "concat" else 1),)


def embed_records(model, records: Sequence[str], out: str | os.PathLike, *, kind: str = "cls1",
                  dtype: str = "float32", batch_size: int = 32, workers: int = 2, image_size: int | None = None,
                  chunk_size: int | None = None, engine: EngineOptions | None = None, model_ref: str | None = None,
                  sources: SourceOptions | None = None, progress: bool = False) -> dict[str, Any]:
    """Embed ``records`` (sorted record paths) into ``out`` (.npy) and its ``.ids.json``.

    Returns the ids document (``model``, ``kind``, ``dim``, ``shape``, ``dtype``, ``items``, ``skipped``).
    """
    from ..lock import WriterLock

    size = model.check_image_size(image_size)
    spec = _spec(model, kind, batch_size, workers, size)
    sources = sources or SourceOptions()
    runner = make_engine(engine, model, model_ref, progress=progress)
    out = Path(out)
    work = WorkArea(work_dir_for(out))
    settings = {"model": {"name": model.name, "config_hash": _config_hash(model)}, "spec": spec.to_dict(),
                "sources": sources.to_dict(), "dtype": dtype}
    work.path.mkdir(parents=True, exist_ok=True)
    with WriterLock(work.path, command="embed"):
        journal = work.read_journal()
        plan = Plan(list(range(len(records))), list(records), [], len(records), {})
        if journal is None or journal["settings"] != settings or journal["plan"]["add_paths"] != list(records):
            journal = work.start(settings, plan, chunk_size or 8 * batch_size)
        committer = InOrderCommitter(work, journal)
        todo = pending_chunks(work, journal, plan.add_ids, plan.add_paths, committer)
        bar = _bar(len(records), len(records) - sum(len(i) for _, i, _ in todo), progress)

        def finished(chunk: int, images: int) -> None:
            committer(chunk)
            bar.update(images)

        runner.run(ChunkJob(os.fspath(work.path), todo, spec, sources), finished)
        bar.close()
        doc = _assemble(work, int(journal["chunks"]), out, model, kind, dtype, _row_shape(model, kind, size), records)
    work.remove()
    return doc


def _assemble(work: WorkArea, chunks: int, out: Path, model, kind: str, dtype: str, row_shape: tuple[int, ...],
              records: Sequence[str]) -> dict[str, Any]:
    key = "patches" if kind == "patches" else "global"
    items: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for c in range(chunks):  # pass 1: ids, metadata and skipped rows (small)
        arrays, rows = work.read_chunk(c)
        skipped += rows
        for i, meta in zip(arrays["ids"].tolist(), decode_meta(arrays)):
            items.append({"id": int(i), "path": records[i], **({"meta": meta} if meta is not None else {})})
    shape = (len(items), *row_shape)
    with atomic_write(out, "wb") as handle:  # pass 2: vectors, one chunk in memory at a time
        np.lib.format.write_array_header_1_0(handle, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                      "shape": shape})
        for c in range(chunks):
            arrays, _ = work.read_chunk(c)
            if len(arrays["ids"]):
                handle.write(np.ascontiguousarray(arrays[key], dtype=dtype).tobytes())
    doc = {"model": model.name, "kind": kind, "dim": int(row_shape[-1]), "shape": list(shape), "dtype": dtype,
           "items": items, "skipped": sorted(skipped, key=lambda r: r["id"])}
    write_json(ids_path_for(out), doc)
    return doc


def _config_hash(model) -> str:
    from ..manifest import config_hash

    return config_hash(model)


def _bar(total: int, done: int, enabled: bool):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, unit="img", desc="embedding", file=sys.stderr,
                disable=not enabled or total == 0, dynamic_ncols=True)


__all__ = ["IMAGE_KINDS", "embed_records", "ids_path_for", "work_dir_for"]
