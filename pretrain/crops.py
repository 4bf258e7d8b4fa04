"""Multi-crop augmentation: one global crop and ``M`` local crops per image (PIL + numpy only).

TIPSv2 uses random resized crops and horizontal flips only (no colour jitter, blur or
solarisation): stage 1 global 224 px + 6 local 98 px, stage 2 global 448 px + local 140 px.
All randomness comes from the ``numpy.random.Generator`` passed in, so crops are reproducible.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

RESAMPLE = Image.Resampling.BICUBIC


def random_resized_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
                       rng: np.random.Generator, attempts: int = 10) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a crop covering ``scale`` of the area with aspect ``ratio`` (w/h).

    Tries ``attempts`` random boxes; falls back to the largest centred box with a valid aspect.
    """
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = int(rng.integers(0, width - w + 1))
            top = int(rng.integers(0, height - h + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, max(w, 1), max(h, 1)


def to_array(image: Image.Image) -> np.ndarray:
    """PIL RGB image -> float32 (3, H, W) in [0, 1] (TIPS uses no mean/std normalisation)."""
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


class MultiCrop:
    """Callable producing ``(global (3,G,G), local (M,3,L,L))`` float32 arrays in [0, 1]."""

    def __init__(self, global_size: int = 224, local_size: int = 98, n_local: int = 6,
                 global_scale: tuple[float, float] = (0.4, 1.0), local_scale: tuple[float, float] = (0.05, 0.4),
                 flip: bool = True, ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        if n_local < 0:
            raise ValueError(f"n_local must be >= 0, got {n_local}")
        for name, (lo, hi) in (("global_scale", global_scale), ("local_scale", local_scale)):
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"{name} must satisfy 0 < min <= max <= 1, got {(lo, hi)}")
        self.global_size, self.local_size, self.n_local = global_size, local_size, n_local
        self.global_scale, self.local_scale = tuple(global_scale), tuple(local_scale)
        self.flip, self.ratio = flip, tuple(ratio)

    def crop(self, image: Image.Image, size: int, scale: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
        """One random resized crop of ``image`` to ``size`` x ``size`` (optionally flipped)."""
        left, top, w, h = random_resized_box(image.width, image.height, scale, self.ratio, rng)
        out = image.resize((size, size), RESAMPLE, box=(left, top, left + w, top + h))
        if self.flip and rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_array(out)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image = image if image.mode == "RGB" else image.convert("RGB")
        global_crop = self.crop(image, self.global_size, self.global_scale, rng)
        local = [self.crop(image, self.local_size, self.local_scale, rng) for _ in range(self.n_local)]
        local_crops = np.stack(local) if local else np.zeros((0, 3, self.local_size, self.local_size), np.float32)
        return global_crop, local_crops
