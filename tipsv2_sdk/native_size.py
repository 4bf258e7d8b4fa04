"""Encoding images at their own aspect ratio, batched by size so that no batch is padded.

``TipsV2.encode_images`` resizes every image to one square, so its batches never need padding.
``encode_images_native`` keeps each image's aspect ratio instead: an image becomes a
``(h, w)`` grid of patches with the longer side at most ``max_side`` pixels (never upscaled),
both sides rounded to multiples of the patch size. A batch can only hold images of one size, so
images are grouped by their target size — sorted by size, largest first, input order kept inside
a size — and each group is cut into batches. Mixed inputs then run in as few, as full batches as
the sizes allow, instead of one image at a time or padded to the largest.

Decoding and resizing run in worker threads one window ahead of the model (PIL releases the
GIL); a window is ``window`` images, so memory stays bounded on long lists and grouping happens
within a window. Results come back in input order.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .embeddings import SkippedImage
from .errors import ImageLoadError
from .images import DEFAULT_MAX_PIXELS, ImageInput, describe, tensor_chw

if TYPE_CHECKING:
    from .model import TipsV2


@dataclass
class NativeEmbeddings:
    """L2-normalised float32 embeddings of images encoded at their own aspect ratio.

    ``cls1`` / ``cls2``: (N, D). ``patches``: one (h_i, w_i, D) array per image (its own grid);
    empty (0, 0, D) arrays when not requested. ``grids``: each image's patch grid (h_i, w_i), also without patches.
    ``indices``: each row's position in the input list; failed inputs are in ``skipped``.
    """

    cls1: np.ndarray
    cls2: np.ndarray
    patches: list[np.ndarray]
    grids: list[tuple[int, int]]
    indices: np.ndarray
    sources: list[str] = field(default_factory=list)
    skipped: list[SkippedImage] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.cls1.shape[0])


def native_size(height: int, width: int, patch: int, max_side: int) -> tuple[int, int]:
    """The (height, width) an image is encoded at: aspect kept, longer side <= ``max_side``, patch multiples.

    Images are scaled down to fit, never up; each side is rounded to the nearest multiple of
    ``patch`` (at least one patch).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} is empty")
    if max_side < patch:
        raise ValueError(f"max_side={max_side} is smaller than the patch size {patch}")
    scale = min(1.0, max_side / max(height, width))
    side = lambda n: min(max(patch, round(n * scale / patch) * patch), max_side // patch * patch)  # noqa: E731
    return side(height), side(width)


def size_batches(sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Positions of ``sizes`` in batches of one size each: sizes largest first, input order within a size.

    Every batch but the last of each size is full; no batch mixes sizes, so none is padded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, hw in enumerate(sizes):
        groups.setdefault(tuple(hw), []).append(i)
    batches = []
    for hw in sorted(groups, key=lambda s: (-s[0] * s[1], s)):
        members = groups[hw]
        batches.extend(members[start:start + batch_size] for start in range(0, len(members), batch_size))
    return batches


def _to_pil(source: ImageInput, max_pixels: int) -> Image.Image | np.ndarray:
    """A decoded RGB PIL image, or a float CHW array in [0, 1] for tensor inputs (kept unquantised)."""
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # torch.Tensor, CHW in [0, 1]
        return tensor_chw(source, describe(source))
    from .viz import load_rgb

    return load_rgb(source, max_pixels=max_pixels)


def load_native(source: ImageInput, patch: int, max_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any accepted image input -> float32 (3, h, w) in [0, 1] at its ``native_size`` (bilinear, antialiased)."""
    img = _to_pil(source, max_pixels)
    if isinstance(img, np.ndarray):
        h, w = native_size(img.shape[1], img.shape[2], patch, max_side)
        if (h, w) == img.shape[1:]:
            return np.ascontiguousarray(img, dtype=np.float32)
        planes = [np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.BILINEAR)) for c in img]
        return np.clip(np.stack(planes), 0.0, 1.0).astype(np.float32)
    h, w = native_size(img.height, img.width, patch, max_side)
    if img.size != (w, h):
        img = img.resize((w, h), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32) * np.float32(1.0 / 255.0)


def _windows(images: Sequence[ImageInput], window: int, decode, workers: int) -> Iterator[list]:
    """Decoded windows of ``images`` in order; with workers, the next window decodes while this one computes."""
    spans = [range(s, min(s + window, len(images))) for s in range(0, len(images), window)]
    if workers < 1:
        for span in spans:
            yield [decode(i) for i in span]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ahead: list[list[Future]] = [[pool.submit(decode, i) for i in span] for span in spans[:1]]
        for k in range(len(spans)):
            if k + 1 < len(spans):
                ahead.append([pool.submit(decode, i) for i in spans[k + 1]])
            yield [f.result() for f in ahead.pop(0)]


def encode_native(model: TipsV2, images: Sequence[ImageInput], batch_size: int = 16, max_side: int | None = None,
                  progress: bool = True, *, on_error: str = "raise", with_patches: bool = True, workers: int = 2,
                  window: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, precision: str | None = None,
                  compile: bool | None = None, threads: int | None = None) -> NativeEmbeddings:
    """Encode images at their own aspect ratio, batched by size (see the module docstring).

    ``max_side``: the longest side in pixels (``None``: the model's image size). ``window``:
    images decoded and grouped together (``None``: 8 batches). Other arguments as in
    ``TipsV2.encode_images``.
    """
    import torch

    from . import fast
    from .model import _progress, _unit, image_list

    images = image_list(images, on_error, batch_size)
    max_side = model.image_size if max_side is None else int(max_side)
    window = 8 * batch_size if window is None else int(window)
    if window < 1:
        raise ValueError(f"window must be >= 1, not {window}")
    patch, d = model.patch_size, model.embed_dim
    mode, threads = fast.resolve(model, precision, compile, threads)
    forward = fast.vision_runner(model, mode)

    def decode(i: int):
        try:
            return i, load_native(images[i], patch, max_side, max_pixels), None
        except ImageLoadError as exc:
            if on_error == "raise":
                raise
            return i, None, SkippedImage(i, exc.source, exc.reason)

    rows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]] = {}
    skipped: list[SkippedImage] = []
    bar = _progress(len(images), "images", progress)
    with torch.inference_mode():
        for decoded in _windows(images, window, decode, workers):
            skipped.extend(err for _, _, err in decoded if err is not None)
            ok = [(i, px) for i, px, err in decoded if err is None]
            for members in size_batches([px.shape[1:] for _, px in ok], batch_size):
                pixels = torch.from_numpy(np.stack([ok[m][1] for m in members]))
                with fast.num_threads(threads):
                    tokens = forward(pixels)
                cls1, cls2 = _unit(tokens.cls1), _unit(tokens.cls2)
                grid = _unit(tokens.patches) if with_patches else np.zeros((len(members), 0, 0, d), np.float32)
                hw = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
                for j, m in enumerate(members):
                    rows[ok[m][0]] = (cls1[j], cls2[j], grid[j], hw)
            bar.update(len(decoded))
    bar.close()
    order = sorted(rows)
    return NativeEmbeddings(
        cls1=np.stack([rows[i][0] for i in order]) if order else np.zeros((0, d), np.float32),
        cls2=np.stack([rows[i][1] for i in order]) if order else np.zeros((0, d), np.float32),
        patches=[rows[i][2] for i in order],
        grids=[rows[i][3] for i in order],
        indices=np.asarray(order, dtype=np.int64),
        sources=[describe(images[i]) for i in order],
        skipped=sorted(skipped, key=lambda s: s.index),
    )


__all__ = ["NativeEmbeddings", "encode_native", "load_native", "native_size", "size_batches"]
