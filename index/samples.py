"""The small set of sample images bundled with the package (used by ``tipsv2 demo``).

They are scenes of the synthetic shapes dataset, so they can be regenerated exactly with
``render_samples`` and come with their captions.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SAMPLE_SEED = 0
SAMPLE_SPLIT = "test"
SAMPLE_COUNT = 24
SAMPLE_SIZE = 112
CAPTIONS_FILE = "captions.json"


@dataclass(frozen=True)
class Sample:
    """One bundled image and its captions."""

    path: Path
    index: int
    alt_text: str
    short: str
    long: str
    objects: tuple[dict, ...] = ()  # {"shape", "color", "box": [x0, y0, x1, y1]} in drawing order


def samples_dir() -> Path:
    """The folder of bundled sample images inside the installed package."""
    from importlib.resources import files

    return Path(os.fspath(files("tipsv2_sdk") / "assets" / "samples"))


def _object_box(obj: dict, size: int) -> list[float]:
    """Pixel box (x0, y0, x1, y1) around a drawn object (its centre ± radius, inside the image)."""
    r = obj["radius"]
    coords = (obj["cx"] - r, obj["cy"] - r, obj["cx"] + r, obj["cy"] + r)
    return [round(min(max(c, 0.0), 1.0) * size, 1) for c in coords]


def render_samples(out_dir: str | os.PathLike, count: int = SAMPLE_COUNT, seed: int = SAMPLE_SEED,
                   size: int = SAMPLE_SIZE, split: str = SAMPLE_SPLIT) -> list[Path]:
    """Render the sample scenes as PNGs plus ``captions.json`` into ``out_dir``; returns the PNG paths."""
    from tipsv2_sdk.io import atomic_write, write_json
    from tipsv2_sdk.pretrain.data.shapes import render_scene

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for i in range(count):
        ex = render_scene(seed, split, i, size=size)
        slug = ex["captions"]["short"].replace(",", "").replace(" and ", " ").split()
        slug = "-".join(w for w in slug if w not in ("a", "an"))[:48]
        path = out / f"{i:02d}_{slug}.png"
        with atomic_write(path) as handle:
            ex["image"].save(handle, format="PNG", optimize=True)
        paths.append(path)
        objects = [{"shape": o["shape"], "color": o["color"], "box": _object_box(o, size)} for o in ex["objects"]]
        rows.append({"file": path.name, "index": i, "alt_text": ex["alt_text"], **ex["captions"], "objects": objects})
    write_json(out / CAPTIONS_FILE, {"seed": seed, "split": split, "size": size, "images": rows})
    return paths


def load_samples(folder: str | os.PathLike | None = None) -> list[Sample]:
    """The samples listed in ``captions.json`` of ``folder`` (default: the bundled ones)."""
    folder = Path(folder) if folder is not None else samples_dir()
    meta = json.loads((folder / CAPTIONS_FILE).read_text(encoding="utf-8"))
    return [Sample(folder / r["file"], r["index"], r["alt_text"], r["short"], r["long"], tuple(r.get("objects", ())))
            for r in meta["images"]]


__all__ = ["Sample", "load_samples", "render_samples", "samples_dir"]
