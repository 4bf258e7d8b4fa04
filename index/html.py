"""A self-contained HTML page of search results: thumbnails as data URIs, scores, patch heatmaps.

The page is one file with no external requests, so it can be mailed or opened offline. It renders
the same document that ``tipsv2 search --json`` prints (see docs/index.md), plus optional
``heatmap`` grids on region hits.
"""
from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

THUMB = 192
# Anchor colours of the heatmap scale (dark blue → cyan → yellow → red), interpolated linearly.
_HEAT_STOPS = np.array([[0.0, 20, 20, 120], [0.35, 0, 170, 220], [0.7, 250, 220, 40], [1.0, 220, 30, 30]])

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px}.meta{color:#666;font-size:13px;margin-bottom:18px}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:6px 10px;border-radius:4px;display:inline-block}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 16px;margin-bottom:18px}
h2{font-size:16px;margin:0 0 10px;display:flex;align-items:center;gap:12px}
h2 img{border:1px solid #ccc;border-radius:3px}
.grid{display:flex;flex-wrap:wrap;gap:12px}
.card{width:%dpx;font-size:12px}.card img{display:block;border-radius:3px;border:1px solid #ccc}
.score{font-weight:600}.path{color:#666;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.missing{width:%dpx;height:%dpx;display:flex;align-items:center;justify-content:center;background:#eee;color:#999}
""" % (THUMB, THUMB, THUMB)


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with the page's colour scale."""
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    rgb = [np.interp(v, _HEAT_STOPS[:, 0], _HEAT_STOPS[:, c]) for c in (1, 2, 3)]
    return np.stack(rgb, axis=-1).astype(np.uint8)


def overlay_heatmap(img: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """Blend a (h, w) grid of patch scores, upsampled bilinearly and min-max scaled, over ``img``."""
    grid = np.asarray(heatmap, dtype=np.float32)
    lo, hi = float(grid.min()), float(grid.max())
    scaled = (grid - lo) / (hi - lo) if hi > lo else np.zeros_like(grid)
    # Upsample with the grid cells centred on their patches, as the model saw them.
    up = np.asarray(Image.fromarray(scaled, mode="F").resize(img.size, Image.BILINEAR))
    colors = Image.fromarray(heat_colors(up), mode="RGB")
    return Image.blend(img.convert("RGB"), colors, alpha)


def patch_box(size: tuple[int, int], grid: tuple[int, int], row: int, col: int) -> tuple[float, float, float, float]:
    """The pixel box ``(x0, y0, x1, y1)`` that patch (row, col) of a ``grid`` covers in an image of ``size``.

    The model resizes the whole image to a square without cropping, so patches stretch with it.
    """
    width, height = size
    rows, cols = grid
    return (col * width / cols, row * height / rows, (col + 1) * width / cols, (row + 1) * height / rows)


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _open_thumbnail(path: str | None, size: int) -> tuple[Image.Image, tuple[int, int]] | None:
    """The image scaled to fit ``size``×``size`` and its original size, or None if it cannot be read."""
    from tipsv2_sdk.errors import ImageLoadError
    from .sources import open_record

    if not path:
        return None
    try:
        img = open_record(path)  # a file, or a tar / parquet sample
    except ImageLoadError:
        return None
    original = img.size
    # Fit the box both ways: small images are enlarged too, so heatmaps and patch boxes stay legible.
    scale = size / max(original)
    img = img.resize((max(1, round(original[0] * scale)), max(1, round(original[1] * scale))), Image.BICUBIC)
    return img, original


def _draw_box(img: Image.Image, box: Sequence[float], original: tuple[int, int], color=(255, 40, 40)) -> None:
    sx, sy = img.size[0] / original[0], img.size[1] / original[1]
    x0, y0, x1, y1 = box
    ImageDraw.Draw(img).rectangle([x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1], outline=color, width=2)


def render_hit_image(hit: dict[str, Any], size: int = THUMB) -> str | None:
    """The data URI of one hit's thumbnail, with its heatmap and region box when it has them."""
    opened = _open_thumbnail(hit.get("path"), size)
    if opened is None:
        return None
    img, original = opened
    if hit.get("heatmap") is not None:
        img = overlay_heatmap(img, np.asarray(hit["heatmap"]))
    region = hit.get("region")
    if region and region.get("box") is not None:
        _draw_box(img, region["box"], original)
    return _data_uri(img)


def _query_header(query: dict[str, Any]) -> str:
    parts = []
    opened = _open_thumbnail(query.get("image"), 96)
    if opened is not None:
        img, original = opened
        if query.get("box") is not None:
            _draw_box(img, query["box"], original)
        parts.append(f'<img src="{_data_uri(img)}" alt="query image">')
    label = query.get("text") or os.path.basename(query.get("image") or "")
    what = {"text": "text", "image": "image", "box": "image region"}.get(query.get("type", ""), "")
    mode = query.get("mode", "images")
    parts.append(f"<span>{html.escape(what)} → {html.escape(mode)}: <q>{html.escape(label)}</q></span>")
    return "<h2>" + "".join(parts) + "</h2>"


def _hit_card(hit: dict[str, Any]) -> str:
    uri = render_hit_image(hit)
    picture = (f'<img src="{uri}" alt="result {hit.get("rank")}">' if uri
               else f'<div class="missing">{html.escape("image not readable")}</div>')
    region = hit.get("region")
    where = f" · patch ({region['row']}, {region['col']})" if region else ""
    path = hit.get("path") or ""
    text = (hit.get("meta") or {}).get("caption")  # tar / parquet samples carry their caption
    caption = f'<div class="path" title="{html.escape(text)}">{html.escape(text)}</div>' if text else ""
    return (f'<div class="card">{picture}<div><span class="score">#{hit.get("rank")} '
            f'{float(hit.get("score", 0.0)):.4f}</span> · id {hit.get("id")}{where}</div>'
            f'<div class="path" title="{html.escape(path)}">{html.escape(os.path.basename(path))}</div>{caption}</div>')


def render_html(report: dict[str, Any], title: str = "TIPSv2 search results") -> str:
    """The page for a search report (the ``--json`` document) as a string."""
    meta = [f"index <code>{html.escape(str(report.get('index', '')))}</code>",
            f"model <code>{html.escape(str(report.get('model', '')))}</code>"]
    if report.get("kind"):
        meta.append(f"embedding <code>{html.escape(str(report['kind']))}</code>")
    body = [f"<h1>{html.escape(title)}</h1>", '<div class="meta">' + " · ".join(meta) + "</div>"]
    if report.get("trained") is False:
        body.append('<p class="warn">RANDOM WEIGHTS: this model is not trained, so the rankings are '
                    "meaningless; the page only shows the pipeline working.</p>")
    for query in report.get("queries", []):
        cards = "".join(_hit_card(hit) for hit in query.get("results", []))
        body.append(f"<section>{_query_header(query)}<div class=\"grid\">{cards or 'no results'}</div></section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")


def write_html(path: str | os.PathLike, report: dict[str, Any], title: str = "TIPSv2 search results") -> str:
    """Write the page atomically to ``path``; returns the path written."""
    from tipsv2_sdk.io import atomic_write

    with atomic_write(path, "wb") as handle:
        handle.write(render_html(report, title=title).encode("utf-8"))
    return os.fspath(path)


__all__ = ["heat_colors", "overlay_heatmap", "patch_box", "render_hit_image", "render_html", "write_html"]
