"""WebDataset tar shards as img2dataset writes them, read with a streaming tarfile reader.

A sample is the group of members sharing a key: ``000120034.jpg`` (or ``.png``, ``.webp``, ...),
an optional ``000120034.txt`` caption and ``000120034.json`` metadata. The key is the member name
up to the first dot of its base name (WebDataset's rule), folders included.

Listing a shard reads only the 512-byte member headers (each data block is skipped with a seek),
so listing is cheap however large the images. Reading a sample seeks straight to its members'
data. Damage is reported, never fatal: a shard that is not a tar, or whose headers break off
part-way, keeps the samples listed before the damage and records a problem for the shard; a
member cut off by a truncated file is reported as that image's skip reason.
"""
from __future__ import annotations

import json
import os
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from tipsv2_sdk.images import IMAGE_SUFFIXES

from .records import Sample

# Image members in order of preference when a sample has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp") + tuple(
    s[1:] for s in IMAGE_SUFFIXES if s[1:] not in ("jpg", "jpeg", "png", "webp"))
CAPTION_EXTENSION = "txt"
JSON_EXTENSION = "json"
_CACHE_SIZE = 64  # listed shards kept per process (a chunk touches one or two)


@dataclass(frozen=True)
class Member:
    """Where a member's data lies in the tar file."""

    offset: int
    size: int


@dataclass
class ShardListing:
    """The samples of one shard (key → its members by extension) and what could not be used."""

    path: str
    samples: dict[str, dict[str, Member]] = field(default_factory=dict)
    ignored: int = 0  # samples without an image member
    problem: str | None = None  # damage that hid part of the shard
    size: int = 0

    def image_member(self, key: str) -> tuple[str, Member] | None:
        members = self.samples.get(key, {})
        for ext in IMAGE_EXTENSIONS:
            if ext in members:
                return ext, members[ext]
        return None

    def keys(self) -> list[str]:
        """Keys of the samples that hold an image."""
        return [k for k in self.samples if self.image_member(k) is not None]


def split_member_name(name: str) -> tuple[str, str]:
    """``"dir/000123.seg.png"`` → ``("dir/000123", "seg.png")`` (WebDataset's key rule)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def _scan(path: str) -> ShardListing:
    size = os.path.getsize(path)
    listing = ShardListing(path=path, size=size)
    try:
        archive = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        listing.problem = f"not a readable tar archive: {exc}"
        return listing
    end = 0
    with archive:
        while True:
            try:
                info = archive.next()
            except (tarfile.TarError, OSError) as exc:
                listing.problem = f"tar headers unreadable after byte {end}: {exc}; the samples before it are used"
                break
            if info is None:
                break
            end = info.offset_data + info.size
            if not info.isfile():
                continue
            key, ext = split_member_name(info.name)
            listing.samples.setdefault(key, {})[ext] = Member(info.offset_data, info.size)
        # tarfile stops quietly at a header it cannot parse; bytes other than the zero padding of
        # the end-of-archive marker after the last member mean samples were hidden by damage.
        if listing.problem is None and _has_data_after(path, archive.offset, size):
            listing.problem = (f"tar headers unreadable after byte {archive.offset} of {size}; "
                               "the samples before it are used")
    listing.ignored = sum(1 for k in listing.samples if listing.image_member(k) is None)
    return listing


def _has_data_after(path: str, offset: int, size: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(offset)
        while True:
            block = handle.read(1 << 20)
            if not block:
                return False
            if block.strip(b"\0"):
                return True


_lock = threading.Lock()
_listings: OrderedDict[tuple[str, int, int], ShardListing] = OrderedDict()


def list_shard(path: str | os.PathLike) -> ShardListing:
    """The listing of one shard, cached per process while the file is unchanged (size, mtime)."""
    path = os.fspath(path)
    stat = os.stat(path)
    cache_key = (path, stat.st_size, stat.st_mtime_ns)
    with _lock:
        if cache_key in _listings:
            _listings.move_to_end(cache_key)
            return _listings[cache_key]
    listing = _scan(path)
    with _lock:
        _listings[cache_key] = listing
        while len(_listings) > _CACHE_SIZE:
            _listings.popitem(last=False)
    return listing


def _read(handle, member: Member) -> bytes:
    handle.seek(member.offset)
    data = handle.read(member.size)
    if len(data) != member.size:
        raise EOFError(f"truncated tar member: {len(data)} of {member.size} bytes present")
    return data


def read_samples(path: str, keys: Sequence[str]) -> list[Sample]:
    """The image bytes, caption and JSON metadata of samples ``keys`` of shard ``path``."""
    try:
        listing = list_shard(path)
        handle = open(path, "rb")
    except FileNotFoundError:
        return [Sample(None, error="no such file") for _ in keys]
    except OSError as exc:
        return [Sample(None, error=f"cannot read shard: {exc}") for _ in keys]
    out = []
    with handle:
        order = sorted(range(len(keys)), key=lambda j: _first_offset(listing, keys[j]))  # one forward pass
        by_position: dict[int, Sample] = {}
        for j in order:
            by_position[j] = _read_sample(handle, listing, keys[j])
        out = [by_position[j] for j in range(len(keys))]
    return out


def _first_offset(listing: ShardListing, key: str) -> int:
    members = listing.samples.get(key)
    return min((m.offset for m in members.values()), default=0) if members else 0


def _read_sample(handle, listing: ShardListing, key: str) -> Sample:
    found = listing.image_member(key)
    if found is None:
        return Sample(None, error="no image member with this key in the shard")
    members = listing.samples[key]
    try:
        data = _read(handle, found[1])
    except (OSError, EOFError) as exc:
        return Sample(None, error=str(exc))
    meta: dict = {}
    if CAPTION_EXTENSION in members:
        try:
            meta["caption"] = _read(handle, members[CAPTION_EXTENSION]).decode("utf-8", "replace").strip()
        except (OSError, EOFError) as exc:
            meta["caption_error"] = str(exc)
    if JSON_EXTENSION in members:
        try:
            meta["metadata"] = json.loads(_read(handle, members[JSON_EXTENSION]).decode("utf-8", "replace"))
        except (OSError, EOFError, ValueError) as exc:
            meta["metadata_error"] = f"{type(exc).__name__}: {exc}"  # the image is still good
    return Sample(data, meta or None)


__all__ = ["IMAGE_EXTENSIONS", "Member", "ShardListing", "list_shard", "read_samples", "split_member_name"]
