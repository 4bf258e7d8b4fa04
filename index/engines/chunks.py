"""The embedding and record functions every engine runs, chunk by chunk.

A chunk is a fixed slice of a build's plan (ids + record paths). ``embed_chunk`` reads its records
(``sources.read_chunk``), encodes them (``encode_chunk``, one model call per chunk with fixed
batches, a crash isolated to its file) and turns the result into the arrays stored for the chunk
(``chunk_arrays``). The local engine calls it in-process; the Ray engine calls ``read_chunk`` in
Ray Data tasks and ``encode_chunk`` + ``chunk_arrays`` in its actors. Same functions, same
batches, so both engines store the same bytes.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tipsv2_sdk.images import DEFAULT_MAX_PIXELS

from ..sources import ChunkInputs, SourceOptions, read_chunk

META_KEY = "meta"  # chunk array with one JSON line per stored row (present when any row has metadata)


@dataclass(frozen=True)
class ChunkSpec:
    """How one chunk is encoded and what is stored for it (JSON-able: it travels to Ray actors).

    ``kind``: the global embedding stored (``cls1``, ``cls2``, ``concat``, ``mean_patch``) or None;
    ``patches``: also store the (h, w, D) patch grid, as ``patch_dtype``;
    ``encode_kwargs``: further keyword arguments of ``encode_images`` (e.g. precision options).
    """

    image_size: int
    kind: str | None = "cls1"
    patches: bool = False
    patch_dtype: str = "float16"
    batch_size: int = 32
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    autocast: bool = False
    encode_kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ChunkSpec":
        return cls(**data)


def encode_chunk(model, inputs: ChunkInputs, spec: ChunkSpec):
    """Encode one chunk, skipping bad images; an unexpected decoder crash is isolated to its image.

    Returns ``(parts, failed)``: ``parts`` pairs each ``ImageEmbeddings`` with the chunk positions of
    its inputs, ``failed`` lists ``(position, reason)`` of images that crashed the encoder.
    """
    kwargs = dict(batch_size=spec.batch_size, image_size=spec.image_size, progress=False, on_error="skip",
                  with_patches=spec.patches or spec.kind == "mean_patch", workers=spec.workers,
                  max_pixels=spec.max_pixels, autocast=spec.autocast, **spec.encode_kwargs)
    images = inputs.images(spec.max_pixels)
    try:
        return [(np.arange(len(images)), model.encode_images(images, **kwargs))], []
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - retried image by image below; re-raised if not image-specific
        first = exc
    parts, failed = [], []
    for j in range(len(images)):
        try:
            parts.append((np.asarray([j]), model.encode_images(images[j : j + 1], **kwargs)))
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - one image's crash must not end a long build
            failed.append((j, f"{type(exc).__name__}: {exc}"))
    if len(failed) == len(images):
        raise first  # every image fails: not an image problem (e.g. out of device memory)
    return parts, failed


def encode_meta(metas: Sequence[dict[str, Any] | None]) -> np.ndarray:
    """Record metadata as a uint8 array of JSON lines (stored in ``.npz`` chunks without pickle)."""
    text = "".join(json.dumps(m, ensure_ascii=False, sort_keys=True) + "\n" for m in metas)
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode_meta(arrays: dict[str, np.ndarray]) -> list[dict[str, Any] | None]:
    """The metadata of each stored row of a chunk (``None`` everywhere when it has none)."""
    n = len(arrays["ids"])
    if META_KEY not in arrays:
        return [None] * n
    lines = bytes(arrays[META_KEY]).decode("utf-8").splitlines()
    if len(lines) != n:
        raise ValueError(f"chunk metadata has {len(lines)} lines for {n} rows")
    return [json.loads(line) for line in lines]


def chunk_arrays(encoded, chunk_ids: np.ndarray, inputs: ChunkInputs, spec: ChunkSpec):
    """Turn the encoder output of one chunk into the arrays stored for it and its skipped rows."""
    parts, failed = encoded
    records = inputs.records
    skipped = [{"id": int(chunk_ids[j]), "path": records[j], "reason": reason} for j, reason in failed]
    rows, glob, pats = [], [], []
    for positions, emb in parts:
        skipped += [{"id": int(chunk_ids[positions[s.index]]), "path": records[positions[s.index]], "reason": s.reason}
                    for s in emb.skipped]
        if not len(emb):
            continue
        rows.append(positions[emb.indices])
        if spec.kind:
            glob.append(emb.select(spec.kind).astype(np.float32))
        if spec.patches:
            pats.append(emb.patches.astype(spec.patch_dtype))
    rows_arr = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
    arrays = {"ids": np.asarray(chunk_ids, dtype=np.int64)[rows_arr]}
    if spec.kind:
        arrays["global"] = np.concatenate(glob) if glob else np.zeros((0, 0), np.float32)
    if spec.patches:
        arrays["patches"] = np.concatenate(pats) if pats else np.zeros((0, 0, 0, 0), spec.patch_dtype)
    metas = [inputs.metas[j] for j in rows_arr.tolist()]
    if any(m is not None for m in metas):
        arrays[META_KEY] = encode_meta(metas)
    return arrays, sorted(skipped, key=lambda r: r["id"])


def embed_inputs(model, inputs: ChunkInputs, ids: Sequence[int], spec: ChunkSpec):
    """Encode read inputs into ``(arrays, skipped)`` for one chunk."""
    chunk_ids = np.asarray(ids, dtype=np.int64)
    return chunk_arrays(encode_chunk(model, inputs, spec), chunk_ids, inputs, spec)


def embed_chunk(model, records: Sequence[str], ids: Sequence[int], spec: ChunkSpec,
                sources: SourceOptions | None = None):
    """Read and encode one chunk: ``(arrays, skipped)`` as written to the work area."""
    return embed_inputs(model, read_chunk(records, sources), ids, spec)


@dataclass
class ChunkJob:
    """The chunks an engine has to embed into ``work_dir`` (a ``journal.WorkArea`` folder)."""

    work_dir: str
    chunks: list[tuple[int, list[int], list[str]]]  # (chunk number, ids, record paths) still to do
    spec: ChunkSpec
    sources: SourceOptions = field(default_factory=SourceOptions)

    @property
    def images(self) -> int:
        return sum(len(ids) for _, ids, _ in self.chunks)


OnDone = Callable[[int, int], None]  # (chunk number, images in it), called in the driver process


class InOrderCommitter:
    """Commit finished chunks to the journal as a contiguous prefix, whatever order they finish in.

    The journal counts chunks ``0 .. done-1``; a chunk finished out of order waits in ``finished``
    (its files are already written and are picked up again by ``pending_chunks`` after a crash).
    """

    def __init__(self, work, journal: dict[str, Any]):
        self.work, self.journal = work, journal
        self.finished: set[int] = set()

    def __call__(self, chunk: int) -> None:
        self.finished.add(chunk)
        done = int(self.journal["done"])
        while done in self.finished:
            self.work.commit_chunk(self.journal, done)
            self.finished.discard(done)
            done = int(self.journal["done"])


def chunk_complete(work, chunk: int) -> bool:
    """True when both files of ``chunk`` exist and load (each was written atomically)."""
    if not (work.chunk_file(chunk).is_file() and work.skipped_file(chunk).is_file()):
        return False
    try:
        work.read_chunk(chunk)
    except (OSError, ValueError, KeyError):
        return False
    return True


def pending_chunks(work, journal: dict[str, Any], add_ids: Sequence[int], add_paths: Sequence[str],
                   committer: InOrderCommitter) -> list[tuple[int, list[int], list[str]]]:
    """The chunks still to embed. Chunks past ``done`` whose files an interrupted run finished
    (engines that run chunks in parallel finish them out of order) are adopted, not redone."""
    size, total = int(journal["chunk_size"]), int(journal["chunks"])
    todo = []
    for c in range(int(journal["done"]), total):
        if chunk_complete(work, c):  # written atomically by a run that stopped before committing it
            committer(c)
            continue
        lo, hi = c * size, min((c + 1) * size, len(add_ids))
        todo.append((c, [int(i) for i in add_ids[lo:hi]], list(add_paths[lo:hi])))
    return todo


__all__ = ["ChunkJob", "ChunkSpec", "InOrderCommitter", "META_KEY", "OnDone", "chunk_arrays", "chunk_complete",
           "decode_meta", "embed_chunk", "embed_inputs", "encode_chunk", "encode_meta", "pending_chunks"]
