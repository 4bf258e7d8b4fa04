"""Write images as img2dataset does: WebDataset tar shards and parquet tables.

img2dataset names shard ``s`` ``{s:05d}.tar`` and sample ``i`` of it ``{s:05d}{i:04d}`` (nine
digits), with members ``KEY.jpg`` (or ``.png`` / ``.webp``), ``KEY.txt`` (the caption) and
``KEY.json`` (url, key, status, sizes, sha256, caption), plus ``{s:05d}.parquet`` and
``{s:05d}_stats.json`` beside each tar. These writers produce the same layout from images in
memory, for tests, examples and benchmarks that must not download anything.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def image_bytes(image: np.ndarray, fmt: str = "jpg") -> bytes:
    """A uint8 HWC array encoded as JPEG / PNG / WebP."""
    from PIL import Image

    buffer = io.BytesIO()
    pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format=pil_format, **({"quality": 95} if pil_format == "JPEG" else {}))
    return buffer.getvalue()


def sample_key(shard: int, index: int) -> str:
    """img2dataset's key: five digits of shard number, four of position in the shard."""
    return f"{shard:05d}{index:04d}"


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    archive.addfile(info, io.BytesIO(data))


def write_webdataset(folder: str | os.PathLike, images: Sequence[bytes], captions: Sequence[str | None] | None = None,
                     *, per_shard: int = 10, fmt: str = "jpg", urls: Sequence[str] | None = None) -> list[Path]:
    """Write encoded ``images`` (bytes) as img2dataset shards into ``folder``; returns the tar paths.

    Each sample gets ``.{fmt}``, a ``.txt`` caption when one is given, and a ``.json`` record.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    captions = list(captions) if captions is not None else [None] * len(images)
    shards = []
    for shard, start in enumerate(range(0, len(images), per_shard)):
        path = folder / f"{shard:05d}.tar"
        rows: list[dict[str, Any]] = []
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
            for i, data in enumerate(images[start : start + per_shard]):
                key, n = sample_key(shard, i), start + i
                caption = captions[n]
                url = urls[n] if urls is not None else f"https://example.com/{n}.{fmt}"
                record = {"url": url, "key": key, "status": "success", "error_message": None,
                          "caption": caption, "sha256": hashlib.sha256(data).hexdigest()}
                _add(archive, f"{key}.{fmt}", data)
                if caption is not None:
                    _add(archive, f"{key}.txt", caption.encode("utf-8"))
                _add(archive, f"{key}.json", json.dumps(record).encode("utf-8"))
                rows.append({k: v for k, v in record.items()})
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"count": len(rows), "successes": len(rows)}))
        shards.append(path)
    return shards


def write_parquet(path: str | os.PathLike, images: Sequence[bytes | str | None], captions: Sequence[str | None] | None = None,
                  *, keys: Sequence[str] | None = None, image_column: str = "jpg", row_group_size: int | None = None,
                  extra: dict[str, Sequence[Any]] | None = None) -> Path:
    """Write one row per image: bytes (or a path string) in ``image_column``, ``caption``, ``key``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns: dict[str, Any] = {}
    if keys is not None:
        columns["key"] = pa.array(list(keys), pa.string())
    is_path = any(isinstance(x, str) for x in images)
    columns[image_column] = pa.array(list(images), pa.string() if is_path else pa.binary())
    if captions is not None:
        columns["caption"] = pa.array(list(captions), pa.string())
    for name, values in (extra or {}).items():
        columns[name] = pa.array(list(values))
    path = Path(path)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


__all__ = ["image_bytes", "sample_key", "write_parquet", "write_webdataset"]
