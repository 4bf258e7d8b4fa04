"""Small FAISS helpers: atomic index files, in-memory copies of on-disk lists, search parameters."""
from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Any

import numpy as np

from tipsv2_sdk.io import atomic_write


def faiss_module():
    """Import faiss lazily (it is heavy and optional for code that only reads manifests)."""
    import faiss

    return faiss


def write_index_atomic(index, path: str | os.PathLike) -> None:
    """Write a FAISS index to a temporary name, fsync, then rename over ``path``.

    FAISS streams through a Python writer, so a full disk surfaces as the ``OSError`` (ENOSPC)
    of the failing write, and the partial temporary file is removed.
    """
    faiss = faiss_module()
    with atomic_write(path, "wb") as handle:
        writer = faiss.PyCallbackIOWriter(handle.write)
        try:
            faiss.write_index(index, writer)
        finally:
            del writer


@contextlib.contextmanager
def stdout_to_stderr():
    """Send C-level prints to stderr (FAISS's on-disk lists print progress on stdout).

    Keeps stdout clean for machine-readable output (``--json``).
    """
    import ctypes
    import sys

    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def read_index(path: str | os.PathLike, on_disk: bool = False, mmap: bool = False):
    """Read an index file; lists stored in an ``.ivfdata`` file are looked up next to it.

    On-disk lists are always looked up in the index file's own directory (whatever name the file
    records) and mapped read-only, so a read-only index directory can be searched and a damaged
    file cannot point FAISS elsewhere; check them with ``validation.check_faiss_index`` before
    searching. ``mmap`` maps the inverted lists of an IVF file instead of reading them.
    """
    faiss = faiss_module()
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
    if mmap and not on_disk:
        flags |= faiss.IO_FLAG_MMAP
    if not on_disk:
        return faiss.read_index(str(path), flags)
    with stdout_to_stderr():  # FAISS reports the on-disk file name on stdout
        return faiss.read_index(str(path), flags)


def serialize(index) -> bytes:
    return faiss_module().serialize_index(index).tobytes()


def deserialize(data: bytes):
    return faiss_module().deserialize_index(np.frombuffer(data, dtype=np.uint8))


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def bytes_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def ivf_of(index):
    """The IVF index inside ``index`` (through pre-transforms / id maps), or ``None``."""
    faiss = faiss_module()
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def is_on_disk(index) -> bool:
    ivf = ivf_of(index)
    if ivf is None:
        return False
    return isinstance(faiss_module().downcast_InvertedLists(ivf.invlists), faiss_module().OnDiskInvertedLists)


def lists_to_memory(index) -> None:
    """Copy on-disk inverted lists into RAM so the index can be changed and saved as one file."""
    faiss = faiss_module()
    ivf = ivf_of(index)
    if ivf is None or not is_on_disk(index):
        return
    src = ivf.invlists
    mem = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    for lst in range(ivf.nlist):
        size = src.list_size(lst)
        if size:
            mem.add_entries(lst, size, src.get_ids(lst), src.get_codes(lst))
    ivf.replace_invlists(mem, True)
    mem.this.disown()


def set_search_params(index, params: dict[str, Any]) -> None:
    """Apply ``nprobe`` / ``efSearch`` where the index has them (through any wrappers)."""
    faiss = faiss_module()
    space = faiss.ParameterSpace()
    for name in ("nprobe", "efSearch"):
        value = params.get(name)
        if value is None:
            continue
        with contextlib.suppress(RuntimeError):  # the parameter does not apply to this index type
            space.set_index_parameter(index, name, int(value))
            if name == "nprobe":
                ivf = ivf_of(index)
                quantizer = faiss.downcast_index(ivf.quantizer) if ivf is not None else None
                if quantizer is not None and hasattr(quantizer, "hnsw"):
                    # An HNSW coarse quantizer must return at least nprobe lists.
                    quantizer.hnsw.efSearch = max(quantizer.hnsw.efSearch, 2 * int(value))


__all__ = [
    "write_index_atomic",
    "read_index",
    "serialize",
    "deserialize",
    "ivf_of",
    "is_on_disk",
    "lists_to_memory",
    "set_search_params",
]
