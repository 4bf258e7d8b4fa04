"""Combine index shards built on separate machines into one index.

Shards must come from the same model and settings and hold disjoint ids; a sharded build gets
that by deriving ids from the position of each input in the global, sorted input list, so every
split of the input gives the same ids.

Two strategies:

* ``"invlists"``: every shard is an IVF index trained from the same template (identical
  ``trained-*.faiss``). Their inverted lists are concatenated, in RAM or into one ``.ivfdata``
  file (``on_disk=True``, FAISS ``OnDiskInvertedLists``); nothing is re-encoded.
* ``"rebuild"``: the stored vectors are combined and the FAISS index is built again, exactly as
  an index built in one go would be (ascending-id add order, id-determined training sample).
  Flat and HNSW indexes are always merged this way.

``"auto"`` uses inverted lists when the shards allow it, and rebuilds otherwise. Either way the
merged index answers as one built in one go from the same vectors, ids and settings.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np


from .base import BaseIndex
from .errors import DuplicateIdError, IndexMismatchError
from .faiss_io import deserialize, faiss_module, ivf_of, fsync_file, read_index, stdout_to_stderr
from .global_index import GlobalIndex
from .manifest import IndexManifest, read_manifest
from .patch_index import PatchIndex
from .store import VectorStore

_SAME_FIELDS = ("type", "kind", "dim", "model_name", "config_hash", "dtype", "metric", "normalization")


def open_index(path: str | os.PathLike, **kwargs) -> GlobalIndex | PatchIndex:
    """Open a global or patch index, whichever ``path`` holds."""
    manifest = read_manifest(path)
    cls = PatchIndex if manifest.type == "patch" else GlobalIndex
    return cls.open(path, **kwargs)


def _check_compatible(shards: Sequence[Path], manifests: Sequence[IndexManifest]) -> None:
    first = manifests[0]
    for path, m in zip(shards[1:], manifests[1:]):
        for name in _SAME_FIELDS:
            if getattr(m, name) != getattr(first, name):
                raise IndexMismatchError(
                    f"shard {path} has {name}={getattr(m, name)!r} but shard {shards[0]} has {getattr(first, name)!r}"
                )
        if first.type == "patch":
            for key in ("grid", "source_grid", "pooling", "pq"):
                if m.patch.get(key) != first.patch.get(key):
                    raise IndexMismatchError(
                        f"shard {path} has patch {key}={m.patch.get(key)!r} but shard {shards[0]} has {first.patch.get(key)!r}"
                    )


def _first_repeat(keys: np.ndarray, owners: np.ndarray) -> tuple[int, int] | None:
    """Positions (into ``keys``) of the first key held by two different shards, or None."""
    order = np.argsort(keys, kind="stable")
    same = np.flatnonzero((keys[order][1:] == keys[order][:-1]) & (owners[order][1:] != owners[order][:-1]))
    return (int(order[same[0]]), int(order[same[0] + 1])) if len(same) else None


def _check_disjoint(shards: Sequence[Path], opened: Sequence[BaseIndex]) -> None:
    """No id and no path in two shards. Sorted arrays (8 bytes a row for ids, 8 for path hashes), not
    per-row dictionaries, so checking 10^7 rows stays within a few hundred MB."""
    import hashlib

    rows = [index.store.live_rows() for index in opened]
    owners = np.concatenate([np.full(len(r), k, np.int32) for k, r in enumerate(rows)] or [np.zeros(0, np.int32)])
    ids = np.concatenate([index.store.ids() for index in opened] or [np.zeros(0, np.int64)])
    repeat = _first_repeat(ids, owners)
    if repeat is not None:
        a, b = repeat
        raise DuplicateIdError(f"id {ids[a]} is in both shard {shards[owners[a]]} and shard {shards[owners[b]]}")
    paths = [index.store.record(int(r))["path"] for index, rr in zip(opened, rows) for r in rr]
    hashes = np.fromiter((int.from_bytes(hashlib.blake2b(p.encode("utf-8", "surrogateescape"), digest_size=8).digest(),
                                         "little", signed=True) if p is not None else i
                          for i, p in enumerate(paths)), np.int64, len(paths))
    named = np.array([p is not None for p in paths], bool)
    repeat = _first_repeat(np.where(named, hashes, -1 - np.arange(len(paths))), owners)
    while repeat is not None:  # equal hashes: compare the paths themselves (a 64-bit collision is no duplicate)
        a, b = repeat
        if paths[a] == paths[b]:
            raise DuplicateIdError(f"path {paths[a]!r} is in both shard {shards[owners[a]]} and shard {shards[owners[b]]}")
        hashes[b] = hashes[b] ^ 0x5BD1E995  # move the colliding one aside and look again
        repeat = _first_repeat(np.where(named, hashes, -1 - np.arange(len(paths))), owners)


def _can_merge_lists(manifests: Sequence[IndexManifest], ivf: Sequence[bool]) -> bool:
    trained = {m.files.get("trained") for m in manifests}
    if len(trained) != 1 or None in trained or any(m.factory_auto for m in manifests):
        return False
    return all(ivf)


def merge_indexes(
    out_dir: str | os.PathLike,
    shard_dirs: Sequence[str | os.PathLike],
    *,
    strategy: str = "auto",
    on_disk: bool = False,
    factory: str | None = None,
    overwrite: bool = False,
    commit: bool = True,
) -> GlobalIndex | PatchIndex:
    """Merge saved shard indexes into a new index at ``out_dir`` and save it.

    Args:
        strategy: ``"auto"``, ``"invlists"`` (IVF shards sharing one template) or ``"rebuild"``.
        on_disk: with inverted lists, write them to one memory-mapped ``.ivfdata`` file.
        factory: for ``"rebuild"``, the FAISS factory of the result (default: the shards' common
            explicit factory, else the automatic choice for the merged size).
        overwrite: replace an index already at ``out_dir``.
        commit: save it as a bare index (``manifest.json``); ``False`` only stages it (``BaseIndex.stage``)
            for the caller to publish together with the other indexes of a build directory.
    """
    if strategy not in ("auto", "invlists", "rebuild"):
        raise ValueError(f"strategy must be 'auto', 'invlists' or 'rebuild', not {strategy!r}")
    shards = [Path(p) for p in shard_dirs]
    if not shards:
        raise ValueError("merge_indexes needs at least one shard")
    out = Path(out_dir)
    if any(s.resolve() == out.resolve() for s in shards):
        raise ValueError(f"the output {out} is also one of the shards")
    manifests = [read_manifest(s) for s in shards]
    _check_compatible(shards, manifests)
    opened, ivf = [], []
    for shard in shards:
        index = open_index(shard)
        ivf.append(index._index is not None and not index._stale and ivf_of(index._index) is not None)
        if on_disk and strategy != "rebuild" and ivf[-1]:
            # An on-disk merge maps each shard's lists while merging (``_merge_lists``): holding every
            # shard's FAISS index in RAM at once would make its memory grow with the total size.
            index._index = None
        opened.append(index)
    _check_disjoint(shards, opened)
    lists = _can_merge_lists(manifests, ivf)
    if strategy == "invlists" and not lists:
        raise IndexMismatchError("inverted lists can only be merged for IVF shards built from one template (create(..., template=...))")
    use_lists = lists and strategy != "rebuild"

    first = manifests[0]
    common = {m.factory for m in manifests}
    if factory is None and len(common) == 1 and not any(m.factory_auto for m in manifests):
        factory = first.factory
    merged = _empty_like(out, first, factory if not use_lists else None, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    gen = int(merged.manifest.files.get("gen", 0)) + 1
    segments = []
    for k, index in enumerate(opened):
        segments += index.store.copy_live_to(out, f"{gen:06d}-m{k:04d}")
    merged.store = VectorStore.load(out, {"segments": segments}, merged.store.row_shape, first.dtype)
    merged.manifest.next_id = max([m.next_id for m in manifests] + [int(merged.store.ids().max(initial=-1)) + 1])
    merged.manifest.files["gen"] = gen  # the segments above belong to this generation
    if use_lists:
        _merge_lists(merged, shards, manifests, opened, out, gen + 1, on_disk)
    else:
        merged.build(factory)
    if commit:
        merged.save()
    else:
        merged.stage()
    return merged


def _empty_like(out: Path, m: IndexManifest, factory: str | None, overwrite: bool) -> GlobalIndex | PatchIndex:
    common = dict(model_name=m.model_name, config_hash=m.config_hash, dim=m.dim, dtype=m.dtype,
                  factory=factory, memory_budget=m.memory_budget, overwrite=overwrite)
    if m.type == "patch":
        p = m.patch
        return PatchIndex.create(out, grid=tuple(p["source_grid"]), pooling=tuple(p["pooling"]), pq=p.get("pq"), **common)
    return GlobalIndex.create(out, kind=m.kind, **common)


def _merge_lists(merged, shards, manifests, opened, out: Path, gen: int, on_disk: bool) -> None:
    """Concatenate the shards' inverted lists into an empty copy of their shared trained index."""
    faiss = faiss_module()
    first = manifests[0]
    trained = (shards[0] / first.files["trained"]).read_bytes()
    index = deserialize(trained)
    target = ivf_of(index)
    if on_disk:
        name = f"index-{gen:06d}.ivfdata"
        sources = []
        for shard, m in zip(shards, manifests):
            # Memory-mapped reads: the shards' lists never have to fit in RAM together.
            on_disk_shard = bool(m.files.get("ivfdata"))
            shard_index = read_index(shard / m.files["index"], on_disk=on_disk_shard, mmap=not on_disk_shard)
            sources.append((shard_index, ivf_of(shard_index).invlists))  # keep the index alive
        with stdout_to_stderr():
            invlists = faiss.OnDiskInvertedLists(target.nlist, target.code_size, str(out / name))
        vector = faiss.InvertedListsPtrVector()
        for _, lists in sources:
            vector.push_back(lists)
        with stdout_to_stderr():
            ntotal = invlists.merge_from_multiple(vector.data(), vector.size(), False)
        target.replace_invlists(invlists, True)
        invlists.this.disown()
        fsync_file(out / name)  # durable before the manifest that refers to it is committed
        merged._ivfdata = name
    else:
        for shard_index in (ix._index for ix in opened):
            target.merge_from(ivf_of(shard_index), 0)
        ntotal = target.ntotal
    index.ntotal = target.ntotal = ntotal
    merged._index = index
    merged._stale = False
    merged._index_changed = True
    merged._trained = trained
    merged._trained_changed = True
    merged.manifest.factory = first.factory
    merged.manifest.factory_auto = False
    merged.manifest.choice = dict(first.choice)
    merged.manifest.search_params = dict(first.search_params)
    merged.manifest.built_count = len(merged.store)
    n = len(merged.store) * merged.vectors_per_row
    per_vector = merged.manifest.choice.get("bytes_per_vector")
    if per_vector:
        merged.manifest.choice["memory_bytes"] = int(per_vector * n)
    merged._tune()  # same sample and depths as a single build of the same collection


__all__ = ["merge_indexes", "open_index"]
