"""Frozen patch features for the linear probes, extracted once into memory-mapped files.

A probe trains for several epochs over the same frozen features, so they are computed once per
training image (``TipsV2.encode_images``: square resize to ``image_size``, unit-length patch
embeddings) and kept as float16 in a ``.npy`` memory map under a temporary folder (inside
``cache_dir`` when given), not in RAM: ADE20K's 20k training images at 448 px with a 1024-wide
model are about 40 GB. The folder is removed when the ``FeatureStore`` closes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .report import progress_bar, skipped_entry

if TYPE_CHECKING:
    from ..model import TipsV2


class FeatureStore:
    """A temporary folder of memory-mapped arrays; use as a context manager."""

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="tipsv2-probe-", dir=cache_dir))

    def array(self, name: str, shape: tuple[int, ...], dtype) -> np.memmap:
        return np.lib.format.open_memmap(self.path / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resize_nearest(array: np.ndarray, size: int) -> np.ndarray:
    """An (H, W) label or depth map resized to ``size`` x ``size`` with nearest-neighbour sampling
    (no new label values, no blending of valid depth with the 0 = missing marker)."""
    if array.shape == (size, size):
        return array
    rows = (np.arange(size) + 0.5) * array.shape[0] / size
    cols = (np.arange(size) + 0.5) * array.shape[1] / size
    return array[np.minimum(rows.astype(int), array.shape[0] - 1)][:, np.minimum(cols.astype(int), array.shape[1] - 1)]


def extract_training_set(model: TipsV2, store: FeatureStore, images: Sequence[Path], load_target: Callable[[int], np.ndarray],
                         *, image_size: int, target_size: int, target_dtype, batch_size: int, progress: bool,
                         autocast: bool = False) -> tuple[np.memmap, np.memmap, list[dict[str, str]]]:
    """Features (N, h, w, D) float16 and targets (N, target_size, target_size) of the usable images.

    ``load_target(i)`` returns image ``i``'s target at full resolution (raising ``ValueError`` /
    ``TipsV2Error`` when it is unusable); it is resized here. Unusable images are skipped and listed.
    """
    from ..errors import TipsV2Error

    grid = image_size // model.patch_size
    n = len(images)
    feats = store.array("features", (n, grid, grid, model.embed_dim), np.float16)
    targets = store.array("targets", (n, target_size, target_size), target_dtype)
    skipped: list[dict[str, str]] = []
    written = 0
    chunk = max(batch_size * 4, 32)
    bar = progress_bar(n, "img", progress, desc="train features")
    for start in range(0, n, chunk):
        ok_targets, ok_images = [], []
        for i in range(start, min(start + chunk, n)):
            try:
                ok_targets.append(resize_nearest(load_target(i), target_size))
                ok_images.append(images[i])
            except (TipsV2Error, ValueError) as exc:
                skipped.append(skipped_entry(images[i], str(exc)))
        emb = model.encode_images(ok_images, batch_size=batch_size, image_size=image_size, progress=False,
                                  on_error="skip", autocast=autocast)
        skipped.extend(skipped_entry(s.source, s.reason) for s in emb.skipped)
        m = len(emb.indices)
        feats[written : written + m] = emb.patches.astype(np.float16)
        targets[written : written + m] = np.stack([ok_targets[j] for j in emb.indices]) if m else 0
        written += m
        bar.update(min(start + chunk, n) - start)
    bar.close()
    feats.flush()
    targets.flush()
    return feats[:written], targets[:written], skipped


def image_batches(model: TipsV2, images: Sequence[Path], *, image_size: int, batch_size: int, autocast: bool = False):
    """Yield ``(index, pil_size, patches)`` per decodable image, ``(index, None, error)`` otherwise.

    ``patches`` is (h, w, D) float32; ``pil_size`` the original (height, width), which the
    evaluation resizes its prediction to.
    """
    from ..errors import ImageLoadError
    from ..images import open_image

    for start in range(0, len(images), batch_size):
        decoded, sizes, errors = [], [], {}
        for i in range(start, min(start + batch_size, len(images))):
            try:
                img = open_image(images[i])
            except ImageLoadError as exc:
                errors[i] = exc.reason
                continue
            decoded.append((i, img))
            sizes.append((img.height, img.width))
        if decoded:
            emb = model.encode_images([img for _, img in decoded], batch_size=batch_size, image_size=image_size,
                                      progress=False, autocast=autocast)
        for i in range(start, min(start + batch_size, len(images))):
            if i in errors:
                yield i, None, errors[i]
        for k, (i, _) in enumerate(decoded):
            yield i, sizes[k], emb.patches[k]


__all__ = ["FeatureStore", "resize_nearest", "extract_training_set", "image_batches"]
