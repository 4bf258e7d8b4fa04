"""Synthetic clustered unit vectors for the index tests (random data, no models).

Helpers are handed out through the ``vec`` fixture (tests run with ``--import-mode=importlib``,
so test modules cannot import each other).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def clustered(n: int, d: int, *, clusters: int = 40, seed: int = 0, spread: float = 0.6) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` random centres (like embeddings, unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    x = centres[rng.integers(clusters, size=n)] + spread * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def scenes(n_images: int, grid: tuple[int, int], d: int, *, seed: int = 0, per_group: int = 10) -> np.ndarray:
    """Patch grids (n, h, w, d) of synthetic scenes: images come in groups of ``per_group`` that
    draw their patches from a shared pool of 12 "objects", so related images share content and
    MaxSim rankings are meaningful."""
    rng = np.random.default_rng(seed)
    objects = rng.normal(size=(200, d))
    groups = rng.integers(200, size=(-(-n_images // per_group), 12))
    members = np.repeat(np.arange(len(groups)), per_group)[:n_images]
    p = grid[0] * grid[1]
    picks = np.take_along_axis(groups[members], rng.integers(12, size=(n_images, p)), 1)
    x = objects[picks] + 0.5 * rng.normal(size=(n_images, p, d))
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x.reshape(n_images, *grid, d).astype(np.float32)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int, ids: np.ndarray | None = None) -> np.ndarray:
    """Reference ids from FAISS ``IndexFlatIP``."""
    import faiss

    flat = faiss.IndexFlatIP(base.shape[1])
    flat.add(np.ascontiguousarray(base, dtype=np.float32))
    _, idx = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return idx if ids is None else np.asarray(ids)[idx]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k found (recall@k)."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="session")
def vec():
    """``vec.clustered``, ``vec.scenes``, ``vec.exact_topk``, ``vec.recall``."""
    return SimpleNamespace(clustered=clustered, scenes=scenes, exact_topk=exact_topk, recall=recall)


@pytest.fixture(autouse=True)
def single_thread():
    """FAISS on one thread: HNSW graphs become deterministic, and training does not thrash on
    a shared machine (torch's thread setting otherwise leaks into FAISS's OpenMP)."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
