"""An image folder described by a captions JSONL file.

Each line of the JSONL file is one example::

    {"image": "cats/001.jpg", "alt_text": "my cat", "captions": {"short": "a cat", "long": "a grey cat ..."}}

``image`` is relative to ``root`` (default: the JSONL file's directory) or absolute. ``captions``
may be missing or empty: the alt-text then stands in for every caption source. Lines that are not
valid JSON or lack ``image``/``alt_text`` are skipped and counted at load time; images that cannot
be decoded are reported by ``__getitem__`` as ``ImageLoadError`` so the batch builder can skip and
count them. Nothing here is ever fatal for a single bad example.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tipsv2_sdk.errors import ImageLoadError, TipsV2Error


@dataclass
class FolderRecord:
    """One usable line of the JSONL file."""

    image: Path
    alt_text: str
    captions: dict[str, str] = field(default_factory=dict)


class ImageCaptionFolder:
    """Map-style dataset of ``{"image": PIL.Image, "alt_text": str, "captions": dict}`` examples."""

    def __init__(self, captions: str | os.PathLike, root: str | os.PathLike | None = None,
                 max_pixels: int = 64_000_000):
        self.captions_file = Path(captions)
        if not self.captions_file.is_file():
            raise TipsV2Error(f"captions file not found: {self.captions_file}")
        self.root = Path(root) if root is not None else self.captions_file.parent
        self.max_pixels = max_pixels
        self.records: list[FolderRecord] = []
        self.skipped: list[tuple[int, str]] = []  # (line number, reason) of unusable lines
        for number, line in enumerate(self.captions_file.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record, reason = self._parse(line)
            if record is None:
                self.skipped.append((number, reason))
            else:
                self.records.append(record)
        if not self.records:
            raise TipsV2Error(f"{self.captions_file} has no usable examples ({len(self.skipped)} lines skipped)")

    def _parse(self, line: str) -> tuple[FolderRecord | None, str]:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return None, f"invalid JSON: {exc.msg}"
        if not isinstance(obj, dict):
            return None, "not a JSON object"
        image, alt = obj.get("image"), obj.get("alt_text")
        if not isinstance(image, str) or not image:
            return None, "missing 'image'"
        if not isinstance(alt, str):
            return None, "missing 'alt_text'"
        caps = obj.get("captions") or {}
        if not isinstance(caps, dict):
            return None, "'captions' is not an object"
        caps = {str(k): v for k, v in caps.items() if isinstance(v, str) and v}
        path = Path(image)
        return FolderRecord(path if path.is_absolute() else self.root / path, alt, caps), ""

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        """Decode one example; raises ``ImageLoadError`` (naming the file) if the image is unusable."""
        record = self.records[index]
        try:
            with Image.open(record.image) as img:
                if img.width * img.height > self.max_pixels:
                    raise ImageLoadError(str(record.image), f"{img.width}x{img.height} exceeds max_pixels")
                img.load()
                rgb = img.convert("RGB")
        except ImageLoadError:
            raise
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageLoadError(str(record.image), str(exc) or type(exc).__name__) from None
        return {"image": rgb, "alt_text": record.alt_text, "captions": dict(record.captions), "index": index}

    def caption_corpus(self, limit: int | None = None) -> list[str]:
        """Alt-texts and captions of the first ``limit`` records (for tokenizer training)."""
        lines: list[str] = []
        for record in self.records[:limit]:
            lines.append(record.alt_text)
            lines.extend(record.captions.values())
        return [line for line in lines if line.strip()]


__all__ = ["ImageCaptionFolder", "FolderRecord"]
