"""Every kind of input an index is built from, one module per kind.

* files (``files.py``): folders, globs, list files and single images (``index/inputs.py``);
* WebDataset tar shards (``webdataset.py``), also as brace patterns (``braces.py``);
* parquet tables with an image-bytes or image-path column (``parquet.py``).

``collect_sources`` lists them into one sorted list of record paths (an image's id is its position
in that list); ``read_chunk`` reads the images and metadata of a slice of that list, ready for
``TipsV2.encode_images``. Both engines (local and Ray) call these same two functions.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..inputs import CollectedInputs, InputError
from . import files, parquet, webdataset
from .decode import ChunkImages
from .records import CONTAINER_SUFFIXES, Sample, SourceError, SourceOptions, member_record, split_record


@dataclass
class SourceInputs(CollectedInputs):
    """Collected inputs plus the containers that could be read only in part (``{"path", "reason"}``)."""

    problems: list[dict[str, str]] = field(default_factory=list)


def container_kind(path: str) -> str | None:
    """``"webdataset"`` / ``"parquet"`` for a container file name, else None."""
    lower = path.lower()
    for suffix, kind in CONTAINER_SUFFIXES.items():
        if lower.endswith(suffix):
            return kind
    return None


def _list_container(path: str, kind: str, options: SourceOptions, out: SourceInputs) -> list[str]:
    if kind == "webdataset":
        listing = webdataset.list_shard(path)
        out.ignored += listing.ignored
        if listing.problem:
            out.problems.append({"path": path, "reason": listing.problem})
        return [member_record(path, k) for k in listing.keys()]
    listing = parquet.list_table(path, options)
    return [member_record(path, k) for k in listing.keys]


def collect_sources(sources: Sequence[str | os.PathLike] | str | os.PathLike,
                    options: SourceOptions | None = None) -> SourceInputs:
    """Sorted, de-duplicated record paths of all inputs: files plus container samples.

    Raises ``InputError`` naming a source that does not exist or matches nothing, and
    ``SourceError`` for a table whose columns do not fit ``options``.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InputError("no input given: pass an image folder, a list file, a glob, tar shards or a parquet table")
    options = options or SourceOptions()
    out = SourceInputs(paths=[], sources=[os.fspath(s) for s in sources])
    records: list[str] = []
    plain: list[str] = []
    for source in sources:
        for path, kind in files.expand(os.path.expanduser(os.fspath(source))):
            if kind is None:
                plain.append(path)
            elif kind == files.IGNORED:
                out.ignored += 1
            else:
                records.extend(_list_container(path, kind, options, out))
    if plain:
        found = files.collect(plain)
        records.extend(found.paths)
        out.ignored += found.ignored
    out.paths = sorted(set(records))
    return out


def read_samples(records: Sequence[str], options: SourceOptions | None = None) -> list[Sample]:
    """What each record holds: a file path (read by the decoder) or container bytes + metadata."""
    options = options or SourceOptions()
    out: list[Sample | None] = [None] * len(records)
    groups: dict[tuple[str, str], list[int]] = {}
    for j, record in enumerate(records):
        split = split_record(record)
        if split is None:
            out[j] = Sample(record)
        else:
            groups.setdefault(split[:2], []).append(j)
    for (kind, container), positions in groups.items():
        keys = [split_record(records[j])[2] for j in positions]
        if kind == "webdataset":
            samples = webdataset.read_samples(container, keys)
        else:
            samples = parquet.read_samples(container, keys, options)
        for j, sample in zip(positions, samples):
            out[j] = sample
    return out  # type: ignore[return-value]


@dataclass
class ChunkInputs:
    """The read records of one chunk: the image sequence for the encoder and each record's metadata.

    Plain lists of strings, bytes and dicts, so it travels between Ray tasks as it is.
    """

    records: list[str]
    items: list[Any]  # path (str), image bytes, or None when ``errors[i]`` says why
    errors: list[str | None]
    metas: list[dict[str, Any] | None]

    def to_bytes(self) -> bytes:
        """One binary blob (a JSON header, then the image bytes), for moving a chunk between processes."""
        blobs, kinds = [], []
        for item in self.items:
            if isinstance(item, str):
                kinds.append("path")
                blobs.append(item.encode("utf-8", "surrogateescape"))
            else:
                kinds.append(None if item is None else "bytes")
                blobs.append(b"" if item is None else bytes(item))
        header = json.dumps({"records": self.records, "errors": self.errors, "metas": self.metas, "kinds": kinds,
                             "sizes": [len(b) for b in blobs]}).encode("utf-8")
        return len(header).to_bytes(8, "little") + header + b"".join(blobs)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "ChunkInputs":
        length = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8 : 8 + length].decode("utf-8"))
        items, offset = [], 8 + length
        for kind, size in zip(header["kinds"], header["sizes"]):
            raw = bytes(blob[offset : offset + size])
            offset += size
            items.append(raw.decode("utf-8", "surrogateescape") if kind == "path" else (raw if kind else None))
        return cls(header["records"], items, header["errors"], header["metas"])

    def images(self, max_pixels: int) -> Sequence[Any]:
        """What ``encode_images`` gets: the path list itself when every record is a file."""
        if all(isinstance(item, str) for item in self.items) and not any(self.errors):
            return list(self.items)
        return ChunkImages(self.records, self.items, self.errors, max_pixels)


def read_chunk(records: Sequence[str], options: SourceOptions | None = None) -> ChunkInputs:
    """Read the records of one chunk (container members with one pass per container)."""
    samples = read_samples(records, options)
    return ChunkInputs(list(records), [s.data for s in samples], [s.error for s in samples], [s.meta for s in samples])


def open_record(record: str, options: SourceOptions | None = None, max_pixels: int | None = None):
    """Decode one record (a file path or a container member) to an RGB PIL image, EXIF applied.

    For thumbnails and pixel boxes of search results; raises ``ImageLoadError`` naming the record.
    """
    from PIL import ImageOps

    from tipsv2_sdk.errors import ImageLoadError
    from tipsv2_sdk.images import DEFAULT_MAX_PIXELS, open_image, to_rgb

    from .decode import open_member

    limit = max_pixels or DEFAULT_MAX_PIXELS
    if split_record(record) is None:
        return open_image(record, max_pixels=limit)
    sample = read_samples([record], options)[0]
    if sample.error is not None:
        raise ImageLoadError(record, sample.error)
    try:
        return to_rgb(ImageOps.exif_transpose(open_member(sample.data, record, limit)))
    except (OSError, ValueError) as exc:
        raise ImageLoadError(record, str(exc)) from None


__all__ = ["ChunkInputs", "SourceError", "SourceInputs", "SourceOptions", "collect_sources", "container_kind",
           "member_record", "open_record", "read_chunk", "read_samples", "split_record"]
