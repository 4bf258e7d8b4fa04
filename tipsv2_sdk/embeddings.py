"""Containers for encoder outputs."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SkippedImage:
    """An input that was not encoded, with the reason."""

    index: int  # position in the input list
    source: str  # path, or a short description of an in-memory image
    reason: str

    def to_dict(self) -> dict:
        return {"index": self.index, "source": self.source, "reason": self.reason}


@dataclass
class ImageEmbeddings:
    """Image embeddings, all float32 and L2-normalised.

    ``cls1``: (N, D), the CLS token aligned with web alt-text (use it for text→image retrieval).
    ``cls2``: (N, D), the second CLS token aligned with synthetic captions.
    ``patches``: (N, h, w, D), one unit vector per patch; (N, 0, 0, D) when not requested.
    ``indices``: for each row, its position in the input list (inputs that failed are skipped).
    """

    cls1: np.ndarray
    cls2: np.ndarray
    patches: np.ndarray
    grid: tuple[int, int]
    indices: np.ndarray
    sources: list[str] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.cls1.shape[0])

    @property
    def dim(self) -> int:
        return int(self.cls1.shape[1])

    def concat(self) -> np.ndarray:
        """[cls1, cls2] side by side, re-normalised: (N, 2D)."""
        both = np.concatenate([self.cls1, self.cls2], axis=1)
        return l2_normalize(both)

    def select(self, kind: str) -> np.ndarray:
        """The global vectors of one kind: ``cls1``, ``cls2``, ``concat`` or ``mean_patch``."""
        if kind == "cls1":
            return self.cls1
        if kind == "cls2":
            return self.cls2
        if kind == "concat":
            return self.concat()
        if kind == "mean_patch":
            if self.patches.shape[1] == 0:
                raise ValueError("mean_patch needs patch embeddings; encode with with_patches=True")
            return l2_normalize(self.patches.reshape(len(self), -1, self.dim).mean(axis=1))
        raise ValueError(f"unknown embedding kind {kind!r}; expected cls1, cls2, concat or mean_patch")


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Divide by the L2 norm along ``axis`` (zero vectors stay zero)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32, copy=False)
