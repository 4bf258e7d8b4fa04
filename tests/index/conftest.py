"""Synthetic clustered unit vectors for the index tests (random data, no models).

Helpers are handed out through the ``vec`` fixture (tests run with ``--import-mode=importlib``,
so test modules cannot import each other).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


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


class StopAfter:
    """The model, except that encoding raises after ``calls`` encoded chunks (as a killed process would)."""

    def __init__(self, model, calls: int):
        self._model, self.left, self.calls = model, calls, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def encode_images(self, *args, **kwargs):
        if self.left <= 0:
            raise KeyboardInterrupt("simulated interruption")
        self.left -= 1
        self.calls += 1
        return self._model.encode_images(*args, **kwargs)


@pytest.fixture(scope="session")
def stop_after():
    """``stop_after(model, calls)``: a model whose encoding is interrupted after ``calls`` chunks."""
    return StopAfter


@pytest.fixture
def lock_holder():
    """``lock_holder(directory)``: another process that holds the directory's writer lock (as
    ``index add``) until it is killed; returns once the lock is held. Killed at teardown at the latest."""
    started: list[subprocess.Popen] = []

    def start(directory) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
            import sys, time
            from tipsv2_sdk.index.lock import WriterLock
            WriterLock(sys.argv[1], command="index add").acquire()
            print("held", flush=True)
            time.sleep(120)
        """), str(directory)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        started.append(holder)
        assert holder.stdout.readline().strip() == "held"
        return holder

    yield start
    for holder in started:
        holder.kill()
        holder.wait()
        holder.stdout.close()
