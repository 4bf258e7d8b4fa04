"""Parquet tables with one image per row: image bytes, an image path, or a ``{bytes, path}`` struct
(the layout of a Hugging Face ``datasets`` Image column), plus an optional caption and metadata.

Listing reads only the key column. Reading a chunk reads the row groups that hold its rows and
only the columns asked for, so a table far larger than memory is fine.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .records import Sample, SourceError, SourceOptions

IMAGE_COLUMNS = ("image", "jpg", "png", "webp", "img", "image_bytes", "bytes", "image_path", "path", "filepath", "file")
_CACHE_SIZE = 16


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the [ray] / [dev] extras
        raise SourceError("reading parquet inputs needs pyarrow: pip install 'tipsv2-sdk[parquet]'") from None
    return pq


@dataclass
class TableListing:
    """The keys of one table, the columns that will be read, and where each row lies."""

    path: str
    keys: list[str]
    image_column: str
    caption_column: str | None
    meta_columns: tuple[str, ...]
    row_of_key: dict[str, int]
    group_starts: list[int]  # first row of each row group, plus the total


def _choose_columns(path: str, names: Sequence[str], options: SourceOptions) -> tuple[str, str | None, str | None]:
    def need(column: str, option: str) -> str:
        if column not in names:
            raise SourceError(f"{path} has no column {column!r} (--{option}); its columns: {', '.join(names)}")
        return column

    if options.image_column is not None:
        image = need(options.image_column, "image-column")
    else:
        image = next((c for c in IMAGE_COLUMNS if c in names), None)
        if image is None:
            raise SourceError(f"{path}: no image column found (tried {', '.join(IMAGE_COLUMNS)}); "
                              f"name it with --image-column; its columns: {', '.join(names)}")
    caption = need(options.caption_column, "caption-column") if options.caption_column else (
        "caption" if "caption" in names else None)
    key = need(options.key_column, "key-column") if options.key_column else ("key" if "key" in names else None)
    for column in options.meta_columns:
        need(column, "meta-column")
    return image, caption, key


def _scan(path: str, options: SourceOptions) -> TableListing:
    pq = _pyarrow()
    try:
        table_file = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise SourceError(f"{path} is not a readable parquet table: {exc}") from None
    names = table_file.schema_arrow.names
    image, caption, key_column = _choose_columns(path, names, options)
    meta = table_file.metadata
    starts = [0]
    for g in range(meta.num_row_groups):
        starts.append(starts[-1] + meta.row_group(g).num_rows)
    total = starts[-1]
    if key_column is None:
        width = max(9, len(str(max(0, total - 1))))
        keys = [str(r).zfill(width) for r in range(total)]  # zero-padded: sorted keys keep row order
    else:
        column = table_file.read(columns=[key_column]).column(0)
        if column.null_count:
            raise SourceError(f"{path}: column {key_column!r} has {column.null_count} empty keys; "
                              "choose another --key-column")
        keys = [str(k) for k in column.to_pylist()]
    row_of_key: dict[str, int] = {}
    for row, k in enumerate(keys):
        if row_of_key.setdefault(k, row) != row:
            raise SourceError(f"{path}: key {k!r} appears more than once in column {key_column!r}; "
                              "choose a column of unique keys with --key-column")
    return TableListing(path, keys, image, caption, tuple(options.meta_columns), row_of_key, starts)


_lock = threading.Lock()
_listings: OrderedDict[tuple, TableListing] = OrderedDict()


def list_table(path: str | os.PathLike, options: SourceOptions | None = None) -> TableListing:
    """The listing of one table, cached per process while the file and options are unchanged."""
    path, options = os.fspath(path), options or SourceOptions()
    stat = os.stat(path)
    cache_key = (path, stat.st_size, stat.st_mtime_ns, options)
    with _lock:
        if cache_key in _listings:
            _listings.move_to_end(cache_key)
            return _listings[cache_key]
    listing = _scan(path, options)
    with _lock:
        _listings[cache_key] = listing
        while len(_listings) > _CACHE_SIZE:
            _listings.popitem(last=False)
    return listing


def _image_of(value: Any, folder: str) -> tuple[bytes | None, str | None]:
    """A cell of the image column as (bytes, None) or (None, error); paths are read from disk."""
    if isinstance(value, dict):  # {bytes, path} struct
        value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
    if value is None:
        return None, "the image cell is empty"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if isinstance(value, str):
        path = value if os.path.isabs(value) else os.path.join(folder, value)
        try:
            with open(path, "rb") as handle:
                return handle.read(), None
        except FileNotFoundError:
            return None, f"no such file: {path}"
        except OSError as exc:
            return None, f"cannot read {path}: {exc}"
    return None, f"unsupported image cell of type {type(value).__name__}"


def read_samples(path: str, keys: Sequence[str], options: SourceOptions | None = None) -> list[Sample]:
    """Image bytes, caption and metadata columns of rows ``keys`` of table ``path``."""
    import bisect

    try:
        listing = list_table(path, options)
    except FileNotFoundError:
        return [Sample(None, error="no such file") for _ in keys]
    rows = [listing.row_of_key.get(k) for k in keys]
    groups = sorted({bisect.bisect_right(listing.group_starts, r) - 1 for r in rows if r is not None})
    columns = [listing.image_column] + ([listing.caption_column] if listing.caption_column else [])
    columns += [c for c in listing.meta_columns if c not in columns]
    cells: dict[int, dict[str, Any]] = {}
    if groups:
        table = _pyarrow().ParquetFile(path).read_row_groups(groups, columns=columns)
        starts, group_offset, acc = listing.group_starts, {}, 0
        for g in groups:  # where each row group begins in the concatenated table just read
            group_offset[g], acc = acc, acc + starts[g + 1] - starts[g]

        def local(r: int) -> int:
            g = bisect.bisect_right(starts, r) - 1
            return group_offset[g] + r - starts[g]

        wanted = sorted({r for r in rows if r is not None})
        local_rows = [local(r) for r in wanted]
        picked = table.take(local_rows).to_pylist()
        cells = dict(zip(wanted, picked))
    folder = os.path.dirname(path)
    out = []
    for key, row in zip(keys, rows):
        if row is None:
            out.append(Sample(None, error=f"no row with key {key!r} in the table"))
            continue
        cell = cells[row]
        data, error = _image_of(cell[listing.image_column], folder)
        meta: dict[str, Any] = {}
        if listing.caption_column and cell.get(listing.caption_column) is not None:
            meta["caption"] = str(cell[listing.caption_column])
        if listing.meta_columns:
            meta["metadata"] = {c: _jsonable(cell.get(c)) for c in listing.meta_columns}
        out.append(Sample(data, meta or None, error))
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # dates, decimals


__all__ = ["IMAGE_COLUMNS", "TableListing", "list_table", "read_samples"]
