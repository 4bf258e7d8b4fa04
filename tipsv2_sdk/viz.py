"""Pictures of what the encoder sees: PCA of patch features, segmentation overlays, similarity heatmaps.

Everything here needs only Pillow and numpy (no matplotlib): colours, legends and colour maps are
drawn with ``PIL.ImageDraw``. Functions return PIL images; the ``save_*`` functions write PNG files
atomically (a half-written file never replaces a good one).
"""
from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import ImageLoadError
from .images import DEFAULT_MAX_PIXELS, array_to_pil, describe, open_image, tensor_chw, to_rgb
from .io import atomic_write

# Hand-picked, mutually distinct colours for the first labels; more are generated (golden-ratio hues).
_BASE_COLORS = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)
# Anchor colours of the heatmap colour map, from low (dark purple) to high (pale yellow).
_HEAT_ANCHORS = np.array(
    [(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21), (250, 193, 39),
     (252, 255, 164)], dtype=np.float64,
)
UNASSIGNED_COLOR = (0, 0, 0)


def load_rgb(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Any accepted image input at its own resolution as an 8-bit RGB PIL image.

    Paths get their EXIF orientation applied; CHW float tensors in [0, 1] are quantised to 8 bits.
    Raises ``ImageLoadError`` naming the input when it cannot be used.
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return open_image(source, max_pixels=max_pixels)
    if isinstance(source, Image.Image):
        try:
            return to_rgb(ImageOps.exif_transpose(source))
        except (OSError, ValueError) as exc:
            raise ImageLoadError(name, str(exc)) from None
    if isinstance(source, np.ndarray):
        return array_to_pil(source, name)
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # torch.Tensor, CHW in [0, 1]
        hwc = tensor_chw(source, name)
        return Image.fromarray(np.clip(hwc.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    raise ImageLoadError(name, "unsupported input type; pass a path, a PIL image, a uint8 HWC array or a CHW tensor")


# ---------------------------------------------------------------------------------------- colours
def palette(n: int) -> np.ndarray:
    """``n`` distinct RGB colours, (n, 3) uint8; the same ``n`` always gives the same colours."""
    colors = list(_BASE_COLORS[:n])
    golden = 0.618033988749895
    i = 0
    while len(colors) < n:
        hue = (0.11 + i * golden) % 1.0
        sat, val = (0.75, 0.95) if i % 2 == 0 else (0.55, 0.75)
        colors.append(tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue, sat, val)))
        i += 1
    return np.array(colors, dtype=np.uint8).reshape(n, 3)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (any shape) to RGB uint8 (..., 3) with a dark-to-bright perceptual ramp."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    pos = v * (len(_HEAT_ANCHORS) - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(_HEAT_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    rgb = _HEAT_ANCHORS[lo] * (1.0 - frac) + _HEAT_ANCHORS[lo + 1] * frac
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- PCA
def pca_rgb(patches: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Project patch features onto their first 3 principal components, as RGB uint8.

    ``patches`` is (h, w, D), or (N, h, w, D) to fit one PCA over several images (so colours are
    comparable between them). Each component is min-max scaled between the given percentiles
    (robust to a few outlier patches) and clipped. A component's sign is fixed so that its largest
    loading is positive, which makes the colours deterministic.
    """
    arr = np.asarray(patches, dtype=np.float64)
    if arr.ndim not in (3, 4):
        raise ValueError(f"patches must be (h, w, D) or (N, h, w, D), not shape {arr.shape}")
    lead, dim = arr.shape[:-1], arr.shape[-1]
    flat = arr.reshape(-1, dim)
    if flat.shape[0] == 0:
        return np.zeros((*lead, 3), np.uint8)
    centred = flat - flat.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:3]
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    proj = centred @ comps.T  # (n, k), k <= 3
    if proj.shape[1] < 3:
        proj = np.concatenate([proj, np.zeros((proj.shape[0], 3 - proj.shape[1]))], axis=1)
    lo = np.percentile(proj, percentiles[0], axis=0)
    hi = np.percentile(proj, percentiles[1], axis=0)
    scale = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    rgb = np.clip((proj - lo) / scale, 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8).reshape(*lead, 3)


def pca_image(patches: np.ndarray, size: tuple[int, int] | None = None) -> Image.Image:
    """``pca_rgb`` of one (h, w, D) grid as a PIL image, enlarged to ``size`` = (width, height) with
    nearest-neighbour sampling so each patch stays a crisp square."""
    img = Image.fromarray(pca_rgb(patches), mode="RGB")
    return img if size is None else img.resize(tuple(size), Image.NEAREST)


# ---------------------------------------------------------------------------------------- drawing
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_width(draw: ImageDraw.ImageDraw, text: str, font) -> int:
    box = draw.textbbox((0, 0), text, font=font)
    return int(box[2] - box[0])


def side_by_side(images: Sequence[Image.Image], gap: int = 4, background=(255, 255, 255)) -> Image.Image:
    """Paste images left to right on one canvas (top-aligned)."""
    width = sum(im.width for im in images) + gap * max(len(images) - 1, 0)
    height = max((im.height for im in images), default=1)
    canvas = Image.new("RGB", (max(width, 1), height), background)
    x = 0
    for im in images:
        canvas.paste(im.convert("RGB"), (x, 0))
        x += im.width + gap
    return canvas


def legend_panel(entries: Sequence[tuple[str, tuple[int, int, int]]], height: int, font_size: int = 14) -> Image.Image:
    """A white panel listing a colour swatch and a name per entry, at least ``height`` pixels tall."""
    font = _font(font_size)
    line = font_size + 6
    pad = 6
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((_text_width(probe, name, font) for name, _ in entries), default=0)
    width = pad + font_size + pad + text_w + pad
    panel = Image.new("RGB", (width, max(height, pad * 2 + line * len(entries))), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    for i, (name, color) in enumerate(entries):
        y = pad + i * line
        draw.rectangle([pad, y + 2, pad + font_size, y + 2 + font_size], fill=tuple(int(c) for c in color),
                       outline=(0, 0, 0))
        draw.text((pad * 2 + font_size, y + 1), name, fill=(0, 0, 0), font=font)
    return panel


def segmentation_overlay(
    image: Any,
    label_map: np.ndarray,
    labels: Sequence[str],
    *,
    alpha: float = 0.55,
    colors: np.ndarray | None = None,
    legend: bool = True,
    show_fractions: bool = True,
    font_size: int = 14,
) -> Image.Image:
    """Blend one colour per label over the image, with a legend panel on the right.

    ``label_map`` is (H, W) of indices into ``labels``, at the image's resolution or any other (it is
    resized with nearest sampling); -1 marks unassigned pixels, which keep the (dimmed) image.
    """
    base = load_rgb(image)
    lm = np.asarray(label_map)
    if lm.ndim != 2:
        raise ValueError(f"label_map must be 2-D (H, W), not shape {lm.shape}")
    if lm.size and (lm.max() >= len(labels) or lm.min() < -1):
        raise ValueError(f"label_map has values outside [-1, {len(labels) - 1}] for {len(labels)} labels")
    if lm.shape != (base.height, base.width):
        lm = np.asarray(Image.fromarray(lm.astype(np.int32), mode="I").resize(base.size, Image.NEAREST))
    cols = palette(len(labels)) if colors is None else np.asarray(colors, dtype=np.uint8).reshape(len(labels), 3)
    lut = np.concatenate([cols, np.array([UNASSIGNED_COLOR], np.uint8)])  # index -1 -> last row
    color_img = lut[lm].astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32)
    a = np.where(lm[..., None] >= 0, float(alpha), 0.4)
    out = Image.fromarray(np.clip(pixels * (1 - a) + color_img * a + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if not legend:
        return out
    counts = np.bincount(lm.ravel() + 1, minlength=len(labels) + 1)
    total = max(int(lm.size), 1)
    entries = []
    for i, name in enumerate(labels):
        text = f"{name} ({100.0 * counts[i + 1] / total:.1f}%)" if show_fractions else name
        entries.append((text, tuple(cols[i])))
    if counts[0]:
        entries.append((f"unassigned ({100.0 * counts[0] / total:.1f}%)" if show_fractions else "unassigned",
                        UNASSIGNED_COLOR))
    return side_by_side([out, legend_panel(entries, out.height, font_size)], gap=0)


def heatmap_overlay(
    image: Any,
    similarity: np.ndarray,
    *,
    alpha: float = 0.6,
    vmin: float | None = None,
    vmax: float | None = None,
    caption: str | None = None,
    font_size: int = 14,
) -> Image.Image:
    """Colour a text-to-patch similarity map (h, w) over the image.

    The map is scaled to [0, 1] between ``vmin`` and ``vmax`` (default: its own min and max),
    enlarged bilinearly to the image size and blended in; ``caption`` (e.g. the query text) is
    written in a band above the picture together with the value range.
    """
    base = load_rgb(image)
    sim = np.asarray(similarity, dtype=np.float32)
    if sim.ndim != 2:
        raise ValueError(f"similarity must be 2-D (h, w), not shape {sim.shape}")
    lo = float(np.min(sim)) if vmin is None else float(vmin)
    hi = float(np.max(sim)) if vmax is None else float(vmax)
    scaled = (sim - lo) / (hi - lo) if hi > lo else np.zeros_like(sim)
    big = np.asarray(Image.fromarray(scaled.astype(np.float32), mode="F").resize(base.size, Image.BILINEAR))
    heat = colormap(big).astype(np.float32)
    pixels = np.asarray(base, dtype=np.float32)
    out = Image.fromarray(np.clip(pixels * (1 - alpha) + heat * alpha + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    if caption is None:
        return out
    font = _font(font_size)
    band = font_size + 10
    text = f"{caption}  [{lo:.3f} .. {hi:.3f}]"
    text_w = _text_width(ImageDraw.Draw(Image.new("RGB", (1, 1))), text, font) + 8
    canvas = Image.new("RGB", (max(out.width, text_w), out.height + band), (255, 255, 255))
    canvas.paste(out, (0, band))
    ImageDraw.Draw(canvas).text((4, 4), text, fill=(0, 0, 0), font=font)
    return canvas


# ---------------------------------------------------------------------------------------- saving
def save_png(img: Image.Image, path: str | os.PathLike) -> str:
    """Write ``img`` as a PNG file atomically; returns the path as a string."""
    with atomic_write(path, "wb") as handle:
        img.save(handle, format="PNG")
    return os.fspath(path)


def save_pca(path: str | os.PathLike, patches: np.ndarray, image: Any | None = None,
             size: tuple[int, int] | None = None) -> str:
    """PNG of the PCA colours of one (h, w, D) grid, at ``size`` (default: the image's size, or 16 px per
    patch without an image); with ``image``, the picture and its PCA side by side."""
    grid = np.asarray(patches)
    if image is not None:
        base = load_rgb(image)
        pca = pca_image(grid, size or base.size)
        return save_png(side_by_side([base.resize(pca.size, Image.BILINEAR), pca]), path)
    h, w = grid.shape[:2]
    return save_png(pca_image(grid, size or (w * 16, h * 16)), path)


def save_segmentation(path: str | os.PathLike, image: Any, label_map: np.ndarray, labels: Sequence[str],
                      **kwargs: Any) -> str:
    """PNG of ``segmentation_overlay`` (keyword arguments are passed on)."""
    return save_png(segmentation_overlay(image, label_map, labels, **kwargs), path)


def save_heatmap(path: str | os.PathLike, image: Any, similarity: np.ndarray, **kwargs: Any) -> str:
    """PNG of ``heatmap_overlay`` (keyword arguments are passed on)."""
    return save_png(heatmap_overlay(image, similarity, **kwargs), path)


__all__ = [
    "load_rgb", "palette", "colormap", "pca_rgb", "pca_image", "side_by_side", "legend_panel",
    "segmentation_overlay", "heatmap_overlay", "save_png", "save_pca", "save_segmentation", "save_heatmap",
]
