"""Use ``faiss-gpu`` automatically when it is installed and a GPU is visible; CPU otherwise.

The index on disk and the canonical copy in memory are always CPU indexes; a GPU clone is made
only for searching and dropped whenever the index changes. HNSW has no GPU version and stays on
the CPU.
"""
from __future__ import annotations

import os

from .faiss_io import faiss_module


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    faiss = faiss_module()
    if not hasattr(faiss, "StandardGpuResources") or not hasattr(faiss, "get_num_gpus"):
        return False
    try:
        return faiss.get_num_gpus() > 0
    except RuntimeError:
        return False


def wants_gpu(use_gpu: bool | None) -> bool:
    """Resolve ``use_gpu``: ``None`` = automatic (``TIPSV2_FAISS_GPU=0`` turns it off)."""
    if use_gpu is None:
        return os.environ.get("TIPSV2_FAISS_GPU", "1") != "0" and gpu_available()
    if use_gpu and not gpu_available():
        raise RuntimeError("use_gpu=True but faiss has no GPU support here (install the [gpu] extra on a CUDA machine)")
    return bool(use_gpu)


def gpu_supported(index) -> bool:
    """Whether ``index`` can be cloned to the GPU (no HNSW, no on-disk lists)."""
    from .faiss_io import is_on_disk

    faiss = faiss_module()
    text = type(faiss.downcast_index(index)).__name__
    inner = getattr(faiss.downcast_index(index), "index", None)
    inner_text = type(faiss.downcast_index(inner)).__name__ if inner is not None else ""
    return "HNSW" not in text and "HNSW" not in inner_text and not is_on_disk(index)


class GpuSearcher:
    """Holds one GPU clone of a CPU index (and its resources) for searching."""

    def __init__(self) -> None:
        self._resources = None
        self._clone = None

    def searchable(self, index, use_gpu: bool, params: dict | None = None):
        """The index to search with: a cached GPU clone when wanted and possible, else ``index``."""
        if not use_gpu or not gpu_supported(index):
            return index
        if self._clone is None:
            faiss = faiss_module()
            if self._resources is None:
                self._resources = faiss.StandardGpuResources()
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True  # halves GPU memory; scores are re-ranked on the CPU when needed
            self._clone = faiss.index_cpu_to_gpu(self._resources, 0, index, options)
        if params and params.get("nprobe") is not None:
            faiss_module().GpuParameterSpace().set_index_parameter(self._clone, "nprobe", int(params["nprobe"]))
        return self._clone

    def invalidate(self) -> None:
        self._clone = None


__all__ = ["gpu_available", "wants_gpu", "gpu_supported", "GpuSearcher"]
