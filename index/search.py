"""Answer text, image and image-region queries against a built index directory.

This is what ``tipsv2 search`` and ``tipsv2 demo`` run. Results are plain dicts in the documented
``--json`` schema (docs/index.md), which the HTML page renders too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .collection import Collection
from .errors import BoxError, IndexMismatchError, IndexNotFoundError, QueryError


@dataclass
class Query:
    """One question: a text, or an image (optionally a box on it); ``regions`` asks "where"."""

    text: str | None = None
    image: str | None = None
    box: tuple[float, float, float, float] | None = None
    regions: bool = False
    maxsim: bool = False  # image → images by late interaction over patches even when a global index exists

    @property
    def type(self) -> str:
        return "text" if self.text is not None else ("box" if self.box is not None else "image")


def parse_box(value: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` (pixels of the query image) → four floats; raises ``BoxError`` otherwise."""
    parts = [p.strip() for p in value.replace(" ", ",").split(",") if p.strip()]
    try:
        box = tuple(float(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise BoxError(f"--box {value!r}: expected four numbers x0,y0,x1,y1 in pixels of the query image")
    x0, y0, x1, y1 = box
    if not (x0 < x1 and y0 < y1) or min(box) < 0:
        raise BoxError(f"--box {value!r}: need 0 <= x0 < x1 and 0 <= y0 < y1")
    return box  # type: ignore[return-value]


def image_size(path: str | os.PathLike, sources=None) -> tuple[int, int] | None:
    """(width, height) as the model sees the file (EXIF rotation applied), or None if unreadable.

    ``path`` may be a tar / parquet record (``shard.tar#key``); ``sources`` says how tables are read.
    """
    from PIL import Image

    from .sources import open_record, split_record

    if split_record(os.fspath(path)) is not None:
        from tipsv2_sdk.errors import ImageLoadError

        try:
            return open_record(os.fspath(path), sources).size
        except ImageLoadError:
            return None

    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        return None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class Searcher:
    """The opened indexes of one consistent generation of a directory plus the model that embeds queries.

    ``Searcher(locate(path), model)`` opens the directory's current generation
    (``snapshot.open_snapshot``); ``Searcher(snapshot, model)`` searches an already opened one.
    ``warnings`` says what a user should know (e.g. an interrupted ``index add`` waiting).
    """

    def __init__(self, collection, model, *, use_gpu: bool | None = None, nprobe: int | None = None):
        from .snapshot import Snapshot, open_snapshot

        snap = collection if isinstance(collection, Snapshot) else open_snapshot(collection.path, model=model,
                                                                                  use_gpu=use_gpu)
        self.snapshot = snap
        self.collection: Collection = snap.collection
        self.generation = snap.generation
        self.warnings = list(snap.warnings)
        self.model = model
        self.glob = snap.global_index
        self.patch = snap.patch_index
        self.image_size = int(self.collection.build.get("image_size") or model.image_size)
        self.nprobe = nprobe  # IVF lists to visit; None = the index's own setting
        from .sources import SourceOptions

        self.sources = SourceOptions.from_dict(self.collection.build.get("source_options"))  # how tables were read

    # ---------------------------------------------------------------- helpers
    def _need_patch(self, what: str):
        if self.patch is None:
            raise IndexNotFoundError(f"{what} needs a patch index, and {self.collection.path} has none; "
                                     "build it with `tipsv2 index build --patches`")
        return self.patch

    def _encode_image(self, path: str, patches: bool):
        return self.model.encode_images([path], image_size=self.image_size, progress=False, with_patches=patches)

    def _text_vector(self, text: str) -> np.ndarray:
        if self.model.tokenizer is None:
            from tipsv2_sdk.errors import TipsV2Error

            raise TipsV2Error(f"model {self.model.name!r} has no tokenizer, so it cannot embed text queries")
        return self.model.encode_texts([text])[0]

    def _hits(self, ids: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
        keep = [(int(i), float(s)) for i, s in zip(ids, scores) if i >= 0 and np.isfinite(s)]
        index = self.glob if self.glob is not None else self.patch
        records = index.records([i for i, _ in keep]) if keep else []
        return [{"rank": n + 1, "id": i, "path": (r or {}).get("path"), "score": round(s, 6), **_meta(r)}
                for n, ((i, s), r) in enumerate(zip(keep, records))]

    def _region(self, hit: dict[str, Any], row: int, col: int) -> dict[str, Any]:
        from .html import patch_box

        size = image_size(hit["path"], self.sources) if hit.get("path") else None
        box = [round(v, 2) for v in patch_box(size, tuple(self.patch.grid), row, col)] if size else None
        return {"row": int(row), "col": int(col), "box": box}

    def _heatmaps(self, hits: list[dict[str, Any]], vector: np.ndarray | None) -> None:
        if self.patch is None or vector is None:
            return
        for hit in hits:
            if hit.get("path") and self.patch.contains(hit["path"]):
                hit["heatmap"] = np.round(np.asarray(self.patch.heatmap(vector, hit["id"]), np.float32), 4).tolist()

    # ---------------------------------------------------------------- queries
    def run(self, query: Query, k: int = 10, *, heatmaps: bool = False) -> dict[str, Any]:
        """Answer one query; returns its entry of the report's ``queries`` list."""
        entry: dict[str, Any] = {"type": query.type, "text": query.text, "image": query.image,
                                 "box": list(query.box) if query.box else None,
                                 "mode": "regions" if query.regions else "images"}
        vector: np.ndarray | None = None  # the single vector a heatmap is drawn for
        if query.text is not None and not query.text.strip():
            raise QueryError("empty text query: give some words to search for")
        if query.text is not None:
            vector = self._text_vector(query.text)
            if query.regions:
                hits = self._region_hits(self._need_patch("--regions").search_regions(vector[None], k, nprobe=self.nprobe)[0])
                entry["method"] = "patch regions"
            elif self.glob is not None:
                res = self.glob.search(vector[None], k, nprobe=self.nprobe)
                hits, entry["method"] = self._hits(res.ids[0], res.scores[0]), f"global {self.glob.kind}"
            else:
                res = self.patch.search_images(vector[None], k, nprobe=self.nprobe)
                hits, entry["method"] = self._hits(res.ids[0], res.scores[0]), "best patch"
        else:
            hits, vector, entry["method"] = self._image_query(query, k)
        if heatmaps:
            self._heatmaps(hits, vector)
        entry["results"] = hits
        return entry

    def _image_query(self, query: Query, k: int):
        path = os.fspath(query.image)
        if query.box is None and not query.regions and not query.maxsim and self.glob is not None:
            emb = self._encode_image(path, patches=False)
            res = self.glob.search(emb.select(self.glob.kind), k, nprobe=self.nprobe)
            return self._hits(res.ids[0], res.scores[0]), None, f"global {self.glob.kind}"
        patch = self._need_patch("--box, --regions and --maxsim" if self.glob is not None else "this query")
        emb = self._encode_image(path, patches=True)
        grid_patches = emb.patches[0]
        if query.box is None and not query.regions:
            res = patch.search_maxsim(grid_patches, k, nprobe=self.nprobe)
            return self._hits(res.ids[0], res.scores[0]), None, "maxsim"
        size = image_size(path)
        box = query.box if query.box is not None else (0.0, 0.0, float(size[0]), float(size[1]))
        vector = self._box_vector(grid_patches, box, size)
        if query.regions:
            hits = patch.search_box_regions(grid_patches, box, size, k, nprobe=self.nprobe)
            return self._region_hits(hits), vector, "box regions"
        res = patch.search_box_images(grid_patches, box, size, k, nprobe=self.nprobe)
        return self._hits(res.ids[0], res.scores[0]), vector, "box maxsim"

    def _box_vector(self, grid_patches: np.ndarray, box, size) -> np.ndarray:
        from . import box_to_cells
        from tipsv2_sdk.embeddings import l2_normalize

        r0, r1, c0, c1 = box_to_cells(box, size, grid_patches.shape[:2])
        return l2_normalize(grid_patches[r0:r1, c0:c1].reshape(-1, grid_patches.shape[-1]).mean(axis=0))

    def _region_hits(self, regions) -> list[dict[str, Any]]:
        hits = []
        records = self.patch.records([int(r.image_id) for r in regions]) if regions else []
        for n, (r, rec) in enumerate(zip(regions, records)):
            hit = {"rank": n + 1, "id": int(r.image_id), "path": r.path, "score": round(float(r.score), 6), **_meta(rec)}
            hit["region"] = self._region(hit, r.row, r.col)
            hits.append(hit)
        return hits

    def report(self, entries: list[dict[str, Any]], k: int) -> dict[str, Any]:
        """The whole ``--json`` document for a list of answered queries."""
        return {
            "index": str(self.collection.path),
            "model": self.model.name,
            "trained": bool(self.model.meta.get("trained", True)),
            "kind": self.glob.kind if self.glob is not None else None,
            "patches": self.patch is not None,
            "k": k,
            "queries": entries,
        }


def _meta(record: dict[str, Any] | None) -> dict[str, Any]:
    """``{"meta": {...}}`` for a record with metadata (captions / JSON of tar and parquet samples), else ``{}``."""
    meta = (record or {}).get("meta")
    return {"meta": meta} if meta else {}


def resolve_model_ref(collection: Collection, explicit: str | None) -> str:
    """Which model to load for queries: ``--model``, else the one the build recorded."""
    if explicit:
        return explicit
    if collection.model_ref:
        ref = collection.model_ref
        if os.path.isabs(ref) and not Path(ref).exists():
            # Never fall back to a registered model of the same name: it may hold other weights.
            raise IndexMismatchError(f"{collection.path} was built with the model folder {ref}, which no longer "
                                     "exists (moved or deleted?); pass --model with its new location")
        return ref
    from .manifest import read_manifest

    path = collection.global_path or collection.patch_path
    name = read_manifest(path).model_name
    if not name:
        raise IndexNotFoundError(f"{collection.path} does not record its model; pass --model")
    return name


__all__ = ["Query", "Searcher", "image_size", "parse_box", "resolve_model_ref"]
