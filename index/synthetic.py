"""Synthetic collections shaped like image embeddings, for recall tests and benchmarks.

Nothing is downloaded or learned: every vector comes from a seed, generated in fixed blocks of
items, so a collection of any size can be streamed to disk in chunks (``write_npy``) and any slice
of it regenerated exactly (``make(start, stop)`` is the same whether asked in one call or many).

Vectors live in a space like a ViT's: a decaying spectrum (the i-th direction scaled by i^-½) under
a random rotation, plus a component shared by every vector (unrelated embeddings have a positive
cosine, about 0.2, as real ones do).

Patch collections, ``(n, h, w, D)`` unit vectors:

* ``scenes``: images in groups of 30 share a pool of 24 objects; each shows 8 of them in blocks of
  patches. Rankings are graded (the original benchmark data).
* ``background``: most patches (about 80%) are background shared by *every* image (sky, wall and
  floor bands, with a per-image tint), near-identical across the collection; the rest are a few
  objects from a group pool. Token search for a background patch floods with hits from
  everywhere, and MaxSim rankings are decided by the small foreground.
* ``near_duplicates``: a few large clusters; every image of a cluster is a window at a random
  offset onto the cluster's one large scene, so images overlap more or less and many are
  near-identical. Token search finds the same patch in hundreds of images.

Global collections, ``(n, D)`` unit vectors:

* ``clustered``: points around ~n/50 centres (the original benchmark data);
* ``common``: the same with a large shared component, so all vectors are alike (cosines ~0.7)
  and the differences that rank neighbours are small next to the quantisation error;
* ``near_duplicates``: few large clusters made of tight groups of near-identical vectors.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATCH_KINDS = ("scenes", "background", "near_duplicates")
GLOBAL_KINDS = ("clustered", "common", "near_duplicates")
BLOCK = 64  # items generated per seeded block (keeps ``make`` independent of how it is sliced)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Space:
    """A ``d``-dimensional embedding space: anisotropic directions and a shared mean component."""

    def __init__(self, d: int, seed: int, shared: float = 0.5):
        rng = np.random.default_rng([seed, 1])
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        self.d = d
        self.rotation = q.astype(np.float32)
        scale = (np.arange(d) + 1.0) ** -0.5
        self.scale = (scale / np.sqrt(np.mean(scale**2))).astype(np.float32)  # E|x|^2 = d
        self.mean = _unit(rng.normal(size=d))
        self.shared = shared
        self.seed = seed

    def concepts(self, n: int, salt: int) -> np.ndarray:
        """``n`` unit "concept" vectors (objects, backgrounds, cluster centres) for table ``salt``."""
        g = np.random.default_rng([self.seed, 2, salt]).normal(size=(n, self.d)).astype(np.float32)
        x = _unit((g * self.scale) @ self.rotation)
        return _unit(x + self.shared * self.mean)

    def noise(self, rng: np.random.Generator, shape: tuple[int, ...], norm: float) -> np.ndarray:
        """Isotropic noise of about ``norm`` length per vector."""
        return rng.normal(scale=norm / np.sqrt(self.d), size=(*shape, self.d)).astype(np.float32)


@dataclass
class Collection:
    """A deterministic synthetic collection: ``make(start, stop)`` returns items ``start..stop-1``."""

    kind: str
    n: int
    shape: tuple[int, ...]  # shape of one item: (h, w, D) or (D,)
    block_fn: Callable[[int], np.ndarray]  # block number -> BLOCK items (float32)

    def make(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        stop = self.n if stop is None else min(stop, self.n)
        if not 0 <= start <= stop:
            raise ValueError(f"bad slice {start}:{stop} of a collection of {self.n}")
        out = np.empty((stop - start, *self.shape), np.float32)
        first, last = start // BLOCK, -(-stop // BLOCK)
        for b in range(first, last):
            items = self.block_fn(b)
            lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
            out[lo - start : hi - start] = items[lo - b * BLOCK : hi - b * BLOCK]
        return out

    def write_npy(self, path: str | os.PathLike, dtype: str = "float16", chunk: int = 1024) -> np.ndarray:
        """Stream the collection to a ``.npy`` file in chunks (bounded memory); returns a read-only memmap."""
        path = Path(path)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(self.n, *self.shape))
        for start in range(0, self.n, chunk):
            out[start : start + chunk] = self.make(start, start + chunk)
        out.flush()
        del out
        return np.load(path, mmap_mode="r", allow_pickle=False)


# ------------------------------------------------------------------------------------------ patches
def patch_collection(kind: str, n: int, grid: tuple[int, int] | int, d: int, seed: int = 0) -> Collection:
    """A synthetic patch collection of ``n`` images with an (h, w) ``grid`` of ``d``-dim patches."""
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    space = Space(d, seed)
    if kind == "scenes":
        fn = _scenes(space, n, h, w, seed)
    elif kind == "background":
        fn = _background(space, n, h, w, seed)
    elif kind == "near_duplicates":
        fn = _near_duplicates(space, n, h, w, seed)
    else:
        raise ValueError(f"patch collection kind must be one of {', '.join(PATCH_KINDS)}, not {kind!r}")
    return Collection(kind, n, (h, w, d), fn)


def _scenes(space: Space, n: int, h: int, w: int, seed: int, per_group: int = 30, pool: int = 24, shown: int = 8):
    groups = -(-n // per_group)
    objects = space.concepts(groups * pool, salt=10)
    block = max(1, min(h, w) // 4)
    bh, bw = -(-h // block), -(-w // block)

    def make(b: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 11, b])
        out = np.empty((BLOCK, h, w, space.d), np.float32)
        for j in range(BLOCK):
            group = ((b * BLOCK + j) // per_group) % groups
            picks = group * pool + rng.choice(pool, size=shown, replace=False)
            layout = picks[rng.integers(shown, size=(bh, bw))].repeat(block, 0).repeat(block, 1)[:h, :w]
            out[j] = _unit(objects[layout] + space.noise(rng, (h, w), 0.6))
        return out

    return make


def _background(space: Space, n: int, h: int, w: int, seed: int, per_group: int = 40, pool: int = 8):
    groups = -(-n // per_group)
    backgrounds = space.concepts(3, salt=20)  # sky, wall, floor: in every image
    objects = space.concepts(groups * pool, salt=21)
    side_lo, side_hi = max(1, h // 6), max(2, (2 * h) // 7 + 1)

    def make(b: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 22, b])
        out = np.empty((BLOCK, h, w, space.d), np.float32)
        rows = np.arange(h)[:, None]
        for j in range(BLOCK):
            group = ((b * BLOCK + j) // per_group) % groups
            tint = space.noise(rng, (), 0.35)  # per-image lighting shared by its background
            cut1, cut2 = np.sort(rng.integers(1, h, size=2))
            band = np.where(rows < cut1, 0, np.where(rows < cut2, 1, 2)).repeat(w, 1)
            x = _unit(backgrounds[band] + tint) + space.noise(rng, (h, w), 0.3)
            for o in rng.choice(pool, size=int(rng.integers(2, 5)), replace=False):
                sh, sw = rng.integers(side_lo, side_hi, size=2)
                r0, c0 = rng.integers(0, h - sh + 1), rng.integers(0, w - sw + 1)
                x[r0 : r0 + sh, c0 : c0 + sw] = objects[group * pool + o] + space.noise(rng, (sh, sw), 0.5)
            out[j] = _unit(x)
        return out

    return make


def _near_duplicates(space: Space, n: int, h: int, w: int, seed: int, clusters: int = 4):
    block = max(1, min(h, w) // 8)  # scene content changes every ``block`` patches
    sh, sw = 2 * h, 2 * w  # each cluster's scene is twice the image in each direction
    gh, gw = -(-sh // block), -(-sw // block)
    content = space.concepts(clusters * gh * gw, salt=30).reshape(clusters, gh, gw, space.d)

    def make(b: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 31, b])
        out = np.empty((BLOCK, h, w, space.d), np.float32)
        r, c = np.arange(h)[:, None], np.arange(w)[None, :]
        for j in range(BLOCK):
            cluster = (b * BLOCK + j) % clusters
            oy, ox = rng.integers(0, sh - h + 1), rng.integers(0, sw - w + 1)
            cells = content[cluster][(oy + r) // block, (ox + c) // block]
            out[j] = _unit(cells + space.noise(rng, (), 0.2) + space.noise(rng, (h, w), 0.4))
        return out

    return make


# ------------------------------------------------------------------------------------------ global
def global_collection(kind: str, n: int, d: int, seed: int = 0) -> Collection:
    """A synthetic collection of ``n`` global (one per image) ``d``-dim unit vectors."""
    space = Space(d, seed, shared=0.0)
    if kind == "clustered":
        centres = max(64, n // 50)
        fn = _global_clusters(space, n, seed, centres, spread=0.7, shared=0.0)
    elif kind == "common":
        fn = _global_clusters(space, n, seed, max(64, n // 50), spread=0.7, shared=1.6)
    elif kind == "near_duplicates":
        fn = _global_near_duplicates(space, n, seed)
    else:
        raise ValueError(f"global collection kind must be one of {', '.join(GLOBAL_KINDS)}, not {kind!r}")
    return Collection(kind, n, (d,), fn)


def _global_clusters(space: Space, n: int, seed: int, centres: int, spread: float, shared: float):
    table = np.random.default_rng([seed, 40]).normal(size=(centres, space.d)).astype(np.float32)
    mean = space.mean * np.sqrt(space.d)  # same length as a centre

    def make(b: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 41, b])
        z = table[rng.integers(centres, size=BLOCK)] + spread * rng.normal(size=(BLOCK, space.d)).astype(np.float32)
        return _unit((z * space.scale) @ space.rotation + shared * mean)

    return make


def _global_near_duplicates(space: Space, n: int, seed: int, clusters: int = 16, group: int = 8):
    big = space.concepts(clusters, salt=50)

    def make(b: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 51, b])
        # a group of ``group`` consecutive items are near-identical copies of one image
        items = b * BLOCK + np.arange(BLOCK)
        gids = items // group
        g_rng = [np.random.default_rng([seed, 52, int(g)]) for g in np.unique(gids)]
        heads = {int(g): (int(r.integers(clusters)), space.noise(r, (), 0.9)) for g, r in zip(np.unique(gids), g_rng)}
        out = np.empty((BLOCK, space.d), np.float32)
        for j, g in enumerate(gids.tolist()):
            cluster, offset = heads[g]
            out[j] = big[cluster] + offset
        return _unit(out + space.noise(rng, (BLOCK,), 0.12))

    return make


__all__ = ["Collection", "Space", "patch_collection", "global_collection", "PATCH_KINDS", "GLOBAL_KINDS"]
