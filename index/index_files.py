"""Saving an index directory: the files of the next generation, their size/checksum table, the
commit (``manifest.json``) or staging (``manifest-<gen>.json``), and removal of superseded files.

A mixin of ``BaseIndex``: it uses the index's store, manifest and FAISS state.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .faiss_io import bytes_hash, is_on_disk, write_bytes_atomic, write_index_atomic
from .manifest import manifest_file, now_iso
from .validation import describe_file

# Files an index writes (any generation); only these are ever deleted from its directory.
_OWN_FILES = re.compile(r"^\.?(index-.+\.(faiss|ivfdata)|trained-.+\.faiss|(vectors|ids|dead)-.+\.npy|records-.+\.jsonl)")


class IndexFiles:
    """``save``, ``stage`` and ``compact`` for ``BaseIndex``."""

    def save(self, *, compact: bool = False) -> Path:
        """Write the index atomically: new files first, then ``manifest.json``, then old files are deleted.

        ``compact`` drops tombstoned rows from the stored vectors now (done anyway past 25%).
        This is the commit of a bare index directory; the indexes of a build directory are
        written with ``stage`` and published together (``generation.publish``).
        """
        self._write_files(compact)
        self.manifest.save(self.path)  # the commit point
        self._cleanup()
        return self.path

    def stage(self, *, compact: bool = False) -> str:
        """Write the next generation of this index without publishing it; returns its manifest's name.

        New files get new names and the generation's manifest is written as the immutable
        ``manifest-<gen>.json``; ``manifest.json`` and every older file are left as they are, so
        readers of the published generation are not disturbed.
        """
        self._write_files(compact)
        name = manifest_file(self.manifest.files["gen"])
        self.manifest.save(self.path, name)
        return name

    def _write_files(self, compact: bool) -> None:
        """Write every new file of the next generation and update the in-memory manifest to name them."""
        if len(self.store) and (self._index is None or self._stale or self._outgrown()):
            self.build()
        elif not len(self.store) and self._index is not None and self._index.ntotal:
            self._index.reset()
        self.path.mkdir(parents=True, exist_ok=True)
        m = self.manifest
        gen = int(m.files.get("gen", 0)) + 1
        files: dict[str, Any] = {"gen": gen, **self.store.save(self.path, gen, compact=compact)}
        files["index"], files["ivfdata"] = m.files.get("index"), m.files.get("ivfdata")
        if self._index is None:
            files["index"] = files["ivfdata"] = None
        elif self._index_changed or not files["index"]:
            # An on-disk IVF index file only refers to its .ivfdata lists (found next to it on read).
            files["index"] = f"index-{gen:06d}.faiss"
            files["ivfdata"] = self._ivfdata if is_on_disk(self._index) else None
            write_index_atomic(self._index, self.path / files["index"])
        files["trained"] = m.files.get("trained")
        if self._trained is None:
            files["trained"] = None
        elif self._trained_changed or not files["trained"]:
            files["trained"] = f"trained-{bytes_hash(self._trained)}.faiss"
            write_bytes_atomic(self.path / files["trained"], self._trained)
        files["sizes"], files["digests"] = self._file_table(files)
        m.files = files
        m.count = len(self.store)
        m.num_vectors = int(self._index.ntotal) if self._index is not None else 0
        m.updated = now_iso()
        self._index_changed = self._trained_changed = False

    def _file_table(self, files: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
        """Size and checksum of every file the new manifest names (files are immutable: old entries are kept)."""
        old_sizes = self.manifest.files.get("sizes") or {}
        old_digests = self.manifest.files.get("digests") or {}
        names = self.store.file_names() | {files[k] for k in ("index", "ivfdata", "trained", "dead") if files.get(k)}
        sizes: dict[str, int] = {}
        digests: dict[str, str] = {}
        for name in sorted(names):
            if name in old_sizes:
                sizes[name] = old_sizes[name]
                if old_digests.get(name):
                    digests[name] = old_digests[name]
                continue
            size, digest = describe_file(self.path / name)
            sizes[name] = size
            # Vector data is memory-mapped, not parsed: its size and .npy header are checked on open,
            # and hashing it would read every byte a mapping exists to avoid reading.
            if digest and not name.startswith("vectors-") and not name.endswith(".ivfdata"):
                digests[name] = digest
        return sizes, digests

    def _cleanup(self) -> None:
        keep = self.store.file_names() | {
            v for k, v in self.manifest.files.items() if k in ("index", "ivfdata", "trained", "dead") and v
        }
        for entry in self.path.iterdir():
            if entry.is_file() and _OWN_FILES.match(entry.name) and entry.name not in keep:
                entry.unlink(missing_ok=True)

    def compact(self) -> Path:
        """Drop tombstoned rows from the stored vectors and save."""
        return self.save(compact=True)
