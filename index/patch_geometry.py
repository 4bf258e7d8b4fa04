"""Patch grid geometry: packed FAISS ids, patch pooling, pixel boxes to cells, heatmap upsampling.

FAISS ids of a patch index pack the image id and the patch position::

    faiss_id = image_id * 2**16 + row * grid_w + col        (image ids < 2**47, grids up to 65536 cells)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tipsv2_sdk.embeddings import l2_normalize
from .errors import BoxError


ID_SHIFT = 16
MAX_IMAGE_ID = 2 ** (63 - ID_SHIFT)


def pack_ids(image_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """FAISS ids of (image id, flat patch position) pairs."""
    return (np.asarray(image_ids, np.int64) << ID_SHIFT) | np.asarray(positions, np.int64)


def unpack_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image ids, flat patch positions) of packed FAISS ids."""
    ids = np.asarray(ids, np.int64)
    return ids >> ID_SHIFT, ids & ((1 << ID_SHIFT) - 1)


def as_pair(value: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    pair = tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{what} must be a positive int or a pair of them, not {value!r}")
    return pair  # type: ignore[return-value]


def pool_patches(patches: np.ndarray, pooling: int | Sequence[int]) -> np.ndarray:
    """Average (ph, pw) blocks of a (N, h, w, D) patch grid and re-normalise → (N, h/ph, w/pw, D)."""
    ph, pw = as_pair(pooling, "pooling")
    n, h, w, d = patches.shape
    if h % ph or w % pw:
        raise ValueError(f"a {h}x{w} patch grid cannot be pooled by {ph}x{pw}")
    x = np.asarray(patches, np.float32)
    if (ph, pw) != (1, 1):
        x = x.reshape(n, h // ph, ph, w // pw, pw, d).mean(axis=(2, 4))
    return l2_normalize(x)


def box_to_cells(
    box: Sequence[float], image_size: tuple[int, int], grid: tuple[int, int]
) -> tuple[int, int, int, int]:
    """Patch cells a pixel box covers: half-open (r0, r1, c0, c1).

    ``box`` is (x0, y0, x1, y1) in pixels of an image of ``image_size`` = (W, H). TIPS resizes
    the whole image to the model's square input (no crop), so cells scale with W and H.
    """
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise BoxError(f"a box is four numbers x0,y0,x1,y1, not {box!r}") from None
    width, height = image_size
    gh, gw = grid
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x0 >= x1 or y0 >= y1:
        raise BoxError(f"box {x0:g},{y0:g},{x1:g},{y1:g} is empty: it needs x0 < x1 and y0 < y1")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise BoxError(f"box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the {width}x{height} image")
    c0 = min(gw - 1, int(math.floor(x0 / width * gw)))
    r0 = min(gh - 1, int(math.floor(y0 / height * gh)))
    c1 = max(c0 + 1, min(gw, int(math.ceil(x1 / width * gw))))
    r1 = max(r0 + 1, min(gh, int(math.ceil(y1 / height * gh))))
    return r0, r1, c0, c1


def upsample_bilinear(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-d map to ``size`` = (H, W), pixel centres aligned (no corner alignment)."""
    h, w = grid.shape
    out_h, out_w = size

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(h, out_h)
    x0, x1, fx = axis(w, out_w)
    g = grid.astype(np.float32)
    top = g[y0][:, x0] * (1 - fx) + g[y0][:, x1] * fx
    bottom = g[y1][:, x0] * (1 - fx) + g[y1][:, x1] * fx
    return top * (1 - fy[:, None]) + bottom * fy[:, None]


__all__ = ["ID_SHIFT", "MAX_IMAGE_ID", "as_pair", "pack_ids", "unpack_ids", "pool_patches", "box_to_cells", "upsample_bilinear"]
