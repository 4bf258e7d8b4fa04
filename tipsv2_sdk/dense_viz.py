"""Pictures of dense predictions (Pillow + numpy only): depth colour maps, normal maps, label overlays."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from .viz import colormap, palette, segmentation_overlay


def depth_range(depth: np.ndarray) -> tuple[float, float]:
    """``(nearest, farthest)`` finite depth of a map (``(0, 0)`` when it has no finite value)."""
    finite = np.asarray(depth, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def depth_image(depth: np.ndarray, near: float | None = None, far: float | None = None) -> Image.Image:
    """Colour a depth map (H, W) with the dark-to-bright perceptual ramp of ``viz.colormap``.

    Near is bright and far is dark, scaled between ``near`` and ``far`` (default: the map's own
    range, so each picture uses the whole ramp; pass fixed values to compare pictures).
    """
    d = np.asarray(depth, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth must be 2-D (H, W), not shape {d.shape}")
    lo, hi = depth_range(d)
    lo = lo if near is None else float(near)
    hi = hi if far is None else float(far)
    scaled = (hi - d) / (hi - lo) if hi > lo else np.zeros_like(d)
    return Image.fromarray(colormap(np.where(np.isfinite(d), scaled, 0.0)), mode="RGB")


def normals_image(normals: np.ndarray) -> Image.Image:
    """The usual normal-map colouring of unit vectors (H, W, 3): ``rgb = (n + 1) / 2``."""
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals must be (H, W, 3), not shape {n.shape}")
    rgb = np.clip((np.nan_to_num(n) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


def class_fractions(label_map: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    """The classes present in a label map, largest first: ``[{"id", "label", "fraction"}]``."""
    lm = np.asarray(label_map).ravel()
    counts = np.bincount(lm[lm >= 0], minlength=len(labels)) if lm.size else np.zeros(len(labels), np.int64)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [{"id": i, "label": labels[i], "fraction": float(counts[i]) / max(lm.size, 1)} for i in order]


def segmentation_image(image: Any, label_map: np.ndarray, labels: Sequence[str], *, alpha: float = 0.55,
                       legend: bool = True) -> Image.Image:
    """Class colours blended over ``image`` with a legend of the classes present (largest first).

    A class keeps the same colour in every picture (``viz.palette`` over all ``labels``), and the
    legend lists only the classes that occur, so a 150-class head gives a short legend.
    """
    present = [row["id"] for row in class_fractions(label_map, labels)]
    compact = np.full(len(labels), -1, dtype=np.int64)
    compact[present] = np.arange(len(present))
    lm = np.asarray(label_map)
    colors = palette(len(labels))[present]
    return segmentation_overlay(image, compact[lm], [labels[i] for i in present], alpha=alpha, colors=colors,
                                legend=legend)


__all__ = ["depth_range", "depth_image", "normals_image", "class_fractions", "segmentation_image"]
