"""Record paths of images inside containers, and the options that say how to read containers.

An image inside a WebDataset tar shard or a parquet table is named ``CONTAINER#KEY``
(``/data/shards/00012.tar#000120034``): that string is its record path in the index, in
``skipped.jsonl`` and in search results, exactly like a file's path. It sorts next to the other
samples of its shard, so the ids of one shard are contiguous.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from tipsv2_sdk.errors import TipsV2Error

SEPARATOR = "#"
CONTAINER_SUFFIXES = {".tar": "webdataset", ".parquet": "parquet"}
_RECORD = re.compile(r"\.(tar|parquet)#")


class SourceError(TipsV2Error, ValueError):
    """A container cannot be used as asked (unknown column, duplicate keys, ...)."""


@dataclass(frozen=True)
class SourceOptions:
    """How containers are read; recorded with a build so a resumed run reads the same bytes.

    ``image_column``: parquet column with image bytes, image paths (relative to the table's folder)
    or a ``{bytes, path}`` struct; ``None`` picks the first of ``IMAGE_COLUMNS`` present.
    ``caption_column``: parquet column with the caption (``None``: ``caption`` if present).
    ``key_column``: parquet column of unique sample keys (``None``: ``key`` if present, else the row number).
    ``meta_columns``: more parquet columns copied into each record's ``metadata``.
    """

    image_column: str | None = None
    caption_column: str | None = None
    key_column: str | None = None
    meta_columns: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["meta_columns"] = list(self.meta_columns)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "SourceOptions":
        data = dict(data or {})
        data["meta_columns"] = tuple(data.get("meta_columns") or ())
        return cls(**data)


def member_record(container: str, key: str) -> str:
    """The record path of sample ``key`` in ``container`` (an absolute path)."""
    return f"{container}{SEPARATOR}{key}"


def split_record(record: str) -> tuple[str, str, str] | None:
    """``(kind, container, key)`` for a container record, ``None`` for a plain file path."""
    match = _RECORD.search(record)
    if match is None:
        return None
    container = record[: match.end() - 1]
    return CONTAINER_SUFFIXES["." + match.group(1)], container, record[match.end():]


@dataclass
class Sample:
    """One record as read from its source: image ``data`` (or a file path), metadata, or why not."""

    data: bytes | str | None
    meta: dict[str, Any] | None = None
    error: str | None = None


__all__ = ["CONTAINER_SUFFIXES", "SEPARATOR", "Sample", "SourceError", "SourceOptions", "member_record", "split_record"]
