"""Images held in memory (tar members, parquet cells) as inputs of ``TipsV2.encode_images``.

A member image must decode to exactly the pixels the same file would give on disk, and fail
with the same reasons (empty, truncated, not an image, decompression bomb). ``open_member``
therefore only parses the header and applies the size guard; the full decode (EXIF rotation,
mode conversion) happens in ``images.load_pixels`` inside the encoder's decoding threads, the
same code that decodes files.
"""
from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
from typing import Any

from PIL import Image

from tipsv2_sdk.errors import ImageLoadError
from tipsv2_sdk.images import DEFAULT_MAX_PIXELS

_BYTES_IO = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def open_member(data: bytes | None, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A lazily decoded PIL image over ``data``; raises ``ImageLoadError`` naming ``name``.

    Only the header is read here, so this is cheap enough to call more than once per image.
    """
    if not data:
        raise ImageLoadError(name, "file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(name, f"decompression bomb guard: {exc}") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as exc:
        # PIL names the file object ("<_io.BytesIO object at 0x…>", different on every run): name the record.
        raise ImageLoadError(name, _BYTES_IO.sub(repr(name), str(exc)) or type(exc).__name__) from None
    if width * height > max_pixels:
        raise ImageLoadError(name, f"{width}x{height} pixels exceeds the limit of {max_pixels} (decompression bomb guard)")
    return img


class ChunkImages(Sequence):
    """The images of one chunk, indexable like the path list ``encode_images`` usually gets.

    ``items[i]`` is a file path (decoded from disk by the encoder, as for folders) or the bytes of
    an image held in a container; ``errors[i]`` is a reason known before decoding (a truncated tar
    member, a missing parquet cell), raised as ``ImageLoadError`` so the encoder skips and reports
    it like any unreadable file.
    """

    def __init__(self, records: Sequence[str], items: Sequence[Any], errors: Sequence[str | None],
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        self.records, self.items, self.errors = list(records), list(items), list(errors)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return ChunkImages(self.records[i], self.items[i], self.errors[i], self.max_pixels)
        if self.errors[i] is not None:
            raise ImageLoadError(self.records[i], self.errors[i])
        item = self.items[i]
        if isinstance(item, str):
            return item
        return open_member(item, self.records[i], self.max_pixels)


__all__ = ["ChunkImages", "open_member"]
