"""Checks on everything read from an index directory before it is trusted, mapped or handed to FAISS.

An index directory may be damaged (truncated copy, full disk, bit rot) or written by someone
hostile. Nothing read from it may make us read outside the directory, allocate what a header
claims, touch memory a truncated file does not back (SIGBUS), or end in a traceback:

* every file name from a manifest is a plain name inside the directory (``member``); a symlink is
  followed only if its target stays inside the directory;
* every file's size (and, below ``DIGEST_MAX_BYTES``, its SHA-256) is compared with what the
  manifest recorded when it was written (``check_file``);
* ``.npy`` headers are parsed and checked against the expected dtype and shape, and the data
  length against the file size, before anything is loaded or memory-mapped (``load_npy``);
* FAISS on-disk inverted lists are opened read-only and their extents checked against the
  ``.ivfdata`` file before the first search (``check_on_disk_lists``);
* manifests are checked field by field (``check_manifest_fields``).

Every failure is an ``IndexFormatError`` naming the directory, the file and what is wrong
(``MissingFileError`` when a file is simply not there).
"""
from __future__ import annotations

import hashlib
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexFormatError, MissingFileError

DIGEST_MAX_BYTES = 256 * 2**20  # larger files (vector segments, big FAISS files) are checked by size
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
FILE_RES = {
    "index": re.compile(r"^index-[A-Za-z0-9_-]{1,64}\.faiss$"),
    "ivfdata": re.compile(r"^index-[A-Za-z0-9_-]{1,64}\.ivfdata$"),
    "trained": re.compile(r"^trained-[A-Za-z0-9_-]{1,64}\.faiss$"),
    "dead": re.compile(r"^dead-[A-Za-z0-9_-]{1,64}\.npy$"),
}
MAX_DIM = 1 << 16
MAX_ROWS = 1 << 40


def _fail(where: str | os.PathLike, message: str) -> IndexFormatError:
    return IndexFormatError(f"index {where}: {message}")


# ---------------------------------------------------------------------------------------------- names
def member(directory: str | os.PathLike, name: Any, what: str) -> Path:
    """``directory / name`` for a plain file name that stays inside ``directory``; else ``IndexFormatError``."""
    directory = Path(directory)
    if not isinstance(name, str) or not NAME_RE.match(name) or name in (".", ".."):
        raise _fail(directory, f"{what} {name!r} is not a plain file name inside the index directory")
    path = directory / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise MissingFileError(f"index {directory}: {what} {name} is missing") from None
    except OSError as exc:
        raise _fail(directory, f"cannot read {what} {name}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode):
        real = os.path.realpath(path)
        root = os.path.realpath(directory)
        if os.path.commonpath([real, root]) != root:
            raise _fail(directory, f"{what} {name} is a symlink that leads outside the index directory")
        try:
            info = os.stat(path)
        except OSError:
            raise MissingFileError(f"index {directory}: {what} {name} is a dangling symlink") from None
    if not stat.S_ISREG(info.st_mode):
        raise _fail(directory, f"{what} {name} is not a regular file")
    return path


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_file(path: str | os.PathLike) -> tuple[int, str | None]:
    """(size, digest or None above ``DIGEST_MAX_BYTES``) of a file just written, for its manifest."""
    size = os.path.getsize(path)
    return size, (file_digest(path) if size <= DIGEST_MAX_BYTES else None)


def check_file(directory: str | os.PathLike, name: Any, what: str, files: dict[str, Any] | None = None) -> Path:
    """``member`` plus the size and digest the manifest ``files`` table recorded for ``name`` (if any)."""
    path = member(directory, name, what)
    sizes = (files or {}).get("sizes") or {}
    digests = (files or {}).get("digests") or {}
    size = os.path.getsize(path)
    if name in sizes and sizes[name] != size:
        raise _fail(directory, f"{what} {name} has {size} bytes, the manifest recorded {sizes[name]} "
                               "(truncated or replaced)")
    if digests.get(name) and size <= DIGEST_MAX_BYTES and file_digest(path) != digests[name]:
        raise _fail(directory, f"{what} {name} does not match its recorded checksum (damaged or replaced)")
    return path


# ---------------------------------------------------------------------------------------------- .npy
def npy_header(path: Path, what: str, directory: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a ``.npy`` file, refusing headers the file cannot back."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as handle:
            version = fmt.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(handle, max_header_size=10000)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(handle, max_header_size=10000)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = handle.tell()
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise _fail(directory, f"{what} {path.name} is not a valid .npy file: {exc}") from None
    if fortran or dtype.hasobject or any((not isinstance(s, int)) or s < 0 for s in shape):
        raise _fail(directory, f"{what} {path.name} has an unusable header (shape {shape}, dtype {dtype})")
    expected = offset + math.prod(shape) * dtype.itemsize
    actual = os.path.getsize(path)
    if actual != expected:
        raise _fail(directory, f"{what} {path.name} claims shape {shape} ({expected} bytes) but has {actual} bytes")
    return tuple(shape), dtype, offset


def load_npy(directory: str | os.PathLike, name: Any, what: str, *, dtype: str | np.dtype,
             shape: tuple[int | None, ...], mmap: bool = False, files: dict[str, Any] | None = None) -> np.ndarray:
    """A checked ``.npy`` member: its dtype and shape (``None`` = any length) must be the expected ones."""
    path = check_file(directory, name, what, files)
    found_shape, found_dtype, _ = npy_header(path, what, directory)
    if found_dtype != np.dtype(dtype):
        raise _fail(directory, f"{what} {name} holds {found_dtype}, expected {np.dtype(dtype)}")
    if len(found_shape) != len(shape) or any(e is not None and e != f for e, f in zip(shape, found_shape)):
        want = tuple("n" if e is None else e for e in shape)
        raise _fail(directory, f"{what} {name} has shape {found_shape}, expected {want}")
    try:
        if mmap and math.prod(found_shape):
            return np.load(path, mmap_mode="r", allow_pickle=False)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise _fail(directory, f"cannot read {what} {name}: {exc}") from None


# ---------------------------------------------------------------------------------------------- FAISS
def check_faiss_index(index, directory: str | os.PathLike, name: str, *, dim: int, ivfdata: str | None) -> None:
    """A FAISS index just read from ``name``: right width, and on-disk lists exactly where the manifest says."""
    from .faiss_io import faiss_module, ivf_of

    if int(index.d) != int(dim):
        raise _fail(directory, f"{name} holds {index.d}-d vectors, the manifest says {dim}")
    faiss = faiss_module()
    ivf = ivf_of(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    on_disk = isinstance(lists, faiss.OnDiskInvertedLists)
    if on_disk != bool(ivfdata):
        raise _fail(directory, f"{name} {'keeps' if on_disk else 'does not keep'} its inverted lists on disk, "
                               f"but the manifest {'names' if ivfdata else 'names no'} .ivfdata file")
    if on_disk:
        check_on_disk_lists(lists, directory, ivfdata)


def check_on_disk_lists(lists, directory: str | os.PathLike, name: str) -> None:
    """Every inverted list of a memory-mapped ``.ivfdata`` lies inside the file (else SIGBUS on search)."""
    if os.path.basename(str(lists.filename)) != name:
        raise _fail(directory, f"the FAISS index reads its lists from {os.path.basename(str(lists.filename))!r}, "
                               f"the manifest names {name!r}")
    size = os.path.getsize(member(directory, name, "inverted lists"))
    total = int(lists.totsize)
    if total > size:
        raise _fail(directory, f"inverted lists {name} are truncated: {size} bytes, the index needs {total}")
    entry = int(lists.code_size) + 8  # codes then int64 ids, per entry
    for i in range(int(lists.nlist)):
        one = lists.lists.at(i)
        if one.size > one.capacity or one.offset + one.capacity * entry > total:
            raise _fail(directory, f"inverted list {i} of {name} points outside the file")


# ---------------------------------------------------------------------------------------------- manifests
def _is_int(value: Any, lo: int = 0, hi: int = 1 << 62) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def check_manifest_fields(data: dict[str, Any], source: str) -> None:
    """Type and range checks of a ``manifest.json`` document (``IndexFormatError`` naming the field)."""
    def bad(field: str, why: str) -> IndexFormatError:
        return IndexFormatError(f"{source}: {field} {why}")

    if not _is_int(data.get("dim"), 1, MAX_DIM):
        raise bad("dim", f"must be an integer in 1..{MAX_DIM}, not {data.get('dim')!r}")
    for field in ("count", "num_vectors", "next_id", "built_count"):
        if field in data and not _is_int(data[field]):
            raise bad(field, f"must be a non-negative integer, not {data[field]!r}")
    for field in ("model_name", "config_hash", "weights_fingerprint", "factory", "created", "updated"):
        if data.get(field) is not None and not isinstance(data[field], str):
            raise bad(field, f"must be a string, not {type(data[field]).__name__}")
    if data.get("memory_budget") is not None and not _is_int(data["memory_budget"]):
        raise bad("memory_budget", "must be a non-negative integer")
    for field in ("choice", "search_params"):
        if field in data and not isinstance(data[field], dict):
            raise bad(field, "must be an object")
    for key, value in (data.get("search_params") or {}).items():
        if value is not None and not _is_int(value, 1, 1 << 20):
            raise bad(f"search_params.{key}", f"must be a positive integer, not {value!r}")
    if data.get("type") == "patch":
        _check_patch(data.get("patch"), bad)
    _check_files(data.get("files", {}), bad)


def _check_patch(patch: Any, bad) -> None:
    if not isinstance(patch, dict):
        raise bad("patch", "must be an object for a patch index")
    for key in ("grid", "source_grid", "pooling"):
        pair = patch.get(key)
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(v, 1, 1 << 16) for v in pair)):
            raise bad(f"patch.{key}", f"must be two positive integers, not {pair!r}")
    if patch["grid"][0] * patch["grid"][1] > 1 << 16:
        raise bad("patch.grid", "has more cells than an id can address")
    if patch.get("pq") is not None and not _is_int(patch["pq"], 1, 1 << 12):
        raise bad("patch.pq", f"must be a positive integer, not {patch['pq']!r}")


def _check_files(files: Any, bad) -> None:
    if not isinstance(files, dict):
        raise bad("files", "must be an object")
    if "gen" in files and not _is_int(files["gen"]):
        raise bad("files.gen", "must be a non-negative integer")
    segments = files.get("segments", [])
    if not isinstance(segments, list):
        raise bad("files.segments", f"must be a list, not {type(segments).__name__}")
    seen = set()
    for k, seg in enumerate(segments):
        if not isinstance(seg, dict) or not isinstance(seg.get("name"), str) or not SEGMENT_RE.match(seg["name"]):
            raise bad(f"files.segments[{k}]", f"is not a segment entry with a plain name: {seg!r}"[:200])
        if not _is_int(seg.get("rows"), 0, MAX_ROWS):
            raise bad(f"files.segments[{k}].rows", f"must be a non-negative integer, not {seg.get('rows')!r}")
        if seg["name"] in seen:
            raise bad("files.segments", f"names segment {seg['name']} twice")
        seen.add(seg["name"])
    for key, pattern in FILE_RES.items():
        value = files.get(key)
        if value is not None and (not isinstance(value, str) or not pattern.match(value)):
            raise bad(f"files.{key}", f"{value!r} is not a valid file name"[:200])
    for key in ("sizes", "digests"):
        table = files.get(key, {})
        if not isinstance(table, dict):
            raise bad(f"files.{key}", "must be an object")
        for name, value in table.items():
            ok = _is_int(value) if key == "sizes" else (value is None or isinstance(value, str))
            if not ok:
                raise bad(f"files.{key}.{name}"[:120], f"has an invalid value {value!r}"[:120])


__all__ = [
    "DIGEST_MAX_BYTES",
    "check_faiss_index",
    "check_file",
    "check_manifest_fields",
    "check_on_disk_lists",
    "describe_file",
    "file_digest",
    "load_npy",
    "member",
    "npy_header",
]
