"""Decode and convert images without torchvision: PIL + numpy only.

Every input kind the SDK accepts (paths, PIL images, HWC/HW arrays, CHW float tensors in [0, 1])
becomes a float32 CHW array in [0, 1] at the requested square size. TIPS uses no mean/std
normalisation, so [0, 1] pixels are the model input.
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps

from .errors import ImageLoadError

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, Any]  # Any: torch.Tensor (CHW, [0, 1])

# PIL's own default. An image above this many pixels is refused as a decompression bomb instead of
# only warned about, because one such file can take the whole machine's memory in a long job.
DEFAULT_MAX_PIXELS = 89_478_485

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def describe(source: Any) -> str:
    """A short printable name for an image input (its path, or its type and shape)."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    shape = getattr(source, "shape", None) or getattr(source, "size", None)
    return f"<{type(source).__name__} {tuple(shape) if shape is not None else ''}>"


def open_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image file, applying its EXIF orientation; return RGB.

    Raises ``ImageLoadError`` naming the file for anything that is not a complete, decodable image
    of at most ``max_pixels`` pixels (missing, zero-byte, truncated, not an image, too large).
    """
    name = os.fspath(path)
    try:
        if os.path.getsize(name) == 0:
            raise ImageLoadError(name, "file is empty")
        with warnings.catch_warnings():
            # PIL's own warning is silenced so that the size check below decides; the warning filter
            # is process-wide (not per thread), so the reason must not depend on it either.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(name) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageLoadError(name, _bomb_reason(w * h, max_pixels))
                img.load()  # decode now: truncated files fail here, not later in a worker
                img = ImageOps.exif_transpose(img)
                return to_rgb(img)
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(name, "no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # PIL refuses past twice its limit before the size is known to us: same reason, same words.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageLoadError(name, _bomb_reason(int(found.group(1)) if found else None, max_pixels)) from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        raise ImageLoadError(name, str(exc) or type(exc).__name__) from None


def _bomb_reason(pixels: int | None, limit: int) -> str:
    """The skip reason of an oversized image: a function of its pixel count only, whichever check caught it."""
    size = f"{pixels} pixels" if pixels is not None else "the image"
    return f"{size} exceeds the limit of {limit} pixels (decompression bomb guard)"


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Transparency is composited over white (what image viewers show); 16/32-bit and float images are
    rescaled to 8 bits from their full range; CMYK, palette, grey and LAB go through PIL's converters.
    """
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if img.mode != "I" or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 1.0 if arr.max(initial=0) <= 1.0 else 255.0
        arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def array_to_pil(arr: np.ndarray, name: str) -> Image.Image:
    """A uint8 (H, W), (H, W, 1|3|4) array as an RGB PIL image; ``name`` identifies it in errors."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageLoadError(name, f"array of shape {arr.shape} is not HW, HWC with 1/3/4 channels")
    if arr.dtype != np.uint8:
        raise ImageLoadError(name, f"arrays must be uint8 HWC (got {arr.dtype}); pass float images as CHW tensors in [0, 1]")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    mode = "RGBA" if arr.shape[2] == 4 else "RGB"
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr), mode=mode))


def _resize_float_chw(chw: np.ndarray, size: int) -> np.ndarray:
    # PIL's "F" mode uses the same antialiased bilinear filter as the uint8 path, without quantising.
    planes = [np.asarray(Image.fromarray(c, mode="F").resize((size, size), Image.BILINEAR)) for c in chw]
    return np.stack(planes).astype(np.float32)


def pil_to_pixels(img: Image.Image, size: int) -> np.ndarray:
    """RGB PIL image → float32 (3, size, size) in [0, 1]; not resampled if already that size."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return (arr.transpose(2, 0, 1).astype(np.float32)) * np.float32(1.0 / 255.0)


def load_pixels(source: ImageInput, size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any accepted image input → float32 (3, size, size) in [0, 1].

    Raises ``ImageLoadError`` naming the input when it cannot be used.
    """
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        return pil_to_pixels(open_image(Path(source), max_pixels=max_pixels), size)
    if isinstance(source, Image.Image):
        try:
            img = to_rgb(ImageOps.exif_transpose(source))
        except (OSError, ValueError) as exc:
            raise ImageLoadError(name, str(exc)) from None
        return pil_to_pixels(img, size)
    if isinstance(source, np.ndarray):
        return pil_to_pixels(array_to_pil(source, name), size)
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # torch.Tensor, without importing torch here
        chw = tensor_chw(source, name)
        if chw.shape[1:] == (size, size):
            return np.ascontiguousarray(chw, dtype=np.float32)
        return np.clip(_resize_float_chw(chw, size), 0.0, 1.0)
    raise ImageLoadError(name, "unsupported input type; pass a path, a PIL image, a uint8 HWC array or a CHW tensor")


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has a known image suffix (content is checked only when decoding)."""
    return os.fspath(path).lower().endswith(IMAGE_SUFFIXES)


def tensor_chw(source: Any, name: str) -> np.ndarray:
    """A torch CHW tensor in [0, 1] (1 or 3 channels) as a float32 (3, H, W) array; refuses anything else."""
    chw = source.detach().cpu().float().numpy()
    if chw.ndim != 3 or chw.shape[0] not in (1, 3) or chw.shape[1] < 1 or chw.shape[2] < 1:
        raise ImageLoadError(name, f"tensor of shape {tuple(chw.shape)} is not CHW with 1 or 3 channels")
    if chw.min() < -1e-3 or chw.max() > 1.0 + 1e-3:
        raise ImageLoadError(name, "tensor values must lie in [0, 1] (TIPS uses no mean/std normalisation)")
    return np.repeat(chw, 3, axis=0) if chw.shape[0] == 1 else chw
