"""Request images: size-limited bytes, decompression-bomb guard, written to a private temp file."""
from __future__ import annotations

import base64
import binascii
import io
import os
import tempfile
from contextlib import contextmanager
from typing import Iterator

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # encoded size of one uploaded image
MAX_PIXELS = 40_000_000  # decoded size; anything larger is refused before decoding


class RequestImageError(ValueError):
    """An image in a request that cannot be used (answered as HTTP 400)."""


def decode_base64(data: str) -> bytes:
    """The bytes of a base64 image (a ``data:`` URL prefix is accepted)."""
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    if len(data) > MAX_IMAGE_BYTES * 4 // 3 + 8:
        raise RequestImageError(f"image too large: more than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise RequestImageError(f"image is not valid base64: {exc}") from None


def check_image(raw: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image after checking its size; ``RequestImageError`` otherwise."""
    from PIL import Image

    if len(raw) > MAX_IMAGE_BYTES:
        raise RequestImageError(f"image too large: {len(raw)} bytes (limit {MAX_IMAGE_BYTES})")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            width, height = img.size  # header only: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise RequestImageError(f"image of {width}x{height} pixels exceeds the {MAX_PIXELS}-pixel limit")
            img.load()
    except RequestImageError:
        raise
    except Exception as exc:  # PIL raises many types for broken files
        raise RequestImageError(f"not a readable image: {type(exc).__name__}") from None
    return width, height


@contextmanager
def image_file(raw: bytes) -> Iterator[str]:
    """A temporary file holding the checked image (the searcher reads paths); removed afterwards."""
    check_image(raw)
    fd, name = tempfile.mkstemp(prefix="tipsv2-query-", suffix=".img")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        yield name
    finally:
        os.unlink(name)


def fetch_url(url: str, *, timeout: float = 5.0) -> bytes:
    """Download an image URL (only when the server allows it): http(s) only, size and time bounded."""
    import urllib.request
    from urllib.parse import urlparse

    if urlparse(url).scheme not in ("http", "https"):
        raise RequestImageError("image_url: only http and https URLs are fetched")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            raw = resp.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise RequestImageError(f"image_url could not be fetched: {exc}") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise RequestImageError(f"image_url too large: more than {MAX_IMAGE_BYTES} bytes")
    return raw
