"""A procedurally generated multi-granularity image-caption dataset ("shapes").

Each example is a small scene of 1-3 coloured shapes on a textured background with:

* ``mask``: per-pixel class ids (0 = background, then ``SHAPES`` in order), for zero-shot
  segmentation by shape;
* ``color_mask``: per-pixel colour ids (0 = background, then ``COLORS`` in order), for zero-shot
  segmentation by colour (``COLOR_CLASS_NAMES``);
* ``alt_text``: a short, noisy, web-alt-text-like caption ("red circle", "pic of star");
* ``captions["short"]``: a PaliGemma-like caption naming every object ("a red circle and a blue square");
* ``captions["long"]``: a Gemini-like caption adding sizes, positions and the background
  ("a small red circle in the top left and a large blue square at the bottom right, on a striped
  green background");
* ``label``: the class id of the largest object (for k-NN classification of CLS features).

Everything is a pure function of ``(seed, split, index)``, so the dataset is deterministic, can be
infinite, and train/validation never overlap (the split is part of the random key).
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "diamond", "ring", "hexagon")
CLASS_NAMES = ("background",) + SHAPES
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
BACKGROUND_COLORS = {"gray": (128, 128, 128), "beige": (225, 210, 180), "teal": (40, 120, 120),
                     "navy": (30, 35, 80), "pink": (235, 170, 190)}
COLOR_CLASS_NAMES = ("background",) + tuple(COLORS)
TEXTURES = ("plain", "striped", "dotted", "checkered", "gradient")
SPLITS = {"train": 0, "val": 1, "test": 2}
_ALT_FILLERS = ("photo of", "pic of", "image:", "my", "cool", "stock", "")


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object (position and size in pixels)."""

    shape: str
    color: str
    cx: float
    cy: float
    radius: float
    angle: float

    @property
    def size_word(self) -> str:
        return "large" if self.radius >= 0.2 else "small"


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(n: int, radius: float, offset: float = 0.0) -> list[tuple[float, float]]:
        return [(cx + radius * math.cos(angle + offset + 2 * math.pi * k / n),
                 cy + radius * math.sin(angle + offset + 2 * math.pi * k / n)) for k in range(n)]

    if shape == "square":
        return ring(4, r * 1.2, math.pi / 4)
    if shape == "triangle":
        return ring(3, r * 1.25, -math.pi / 2)
    if shape == "diamond":
        return [(cx, cy - r * 1.25), (cx + r * 0.8, cy), (cx, cy + r * 1.25), (cx - r * 0.8, cy)]
    if shape == "hexagon":
        return ring(6, r * 1.1)
    if shape == "star":
        outer, inner = ring(5, r * 1.3, -math.pi / 2), ring(5, r * 0.55, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        a, b = r * 1.15, r * 0.4
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise ValueError(f"no polygon for shape {shape!r}")


def _draw(draw: ImageDraw.ImageDraw, obj: ShapeObject, size: int, fill) -> None:
    cx, cy, r = obj.cx * size, obj.cy * size, obj.radius * size
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=max(2, int(r * 0.45)))
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r, obj.angle), fill=fill)


def _background(rng: np.random.Generator, size: int, texture: str, base: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    other = np.clip(np.asarray(base, np.float32) * 0.6 + 40, 0, 255)
    yy, xx = np.mgrid[0:size, 0:size]
    period = int(rng.integers(6, 14))
    if texture == "striped":
        sel = ((xx + yy * int(rng.integers(0, 2))) // period) % 2 == 0
        img[sel] = other
    elif texture == "dotted":
        sel = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 4) ** 2
        img[sel] = other
    elif texture == "checkered":
        img[((xx // period) + (yy // period)) % 2 == 0] = other
    elif texture == "gradient":
        t = (xx / max(size - 1, 1))[..., None]
        img = img * (1 - t) + other * t
    noise = rng.normal(0, 4, size=img.shape)  # mild sensor noise so no two backgrounds are identical
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _where(obj: ShapeObject) -> str:
    vert = "top" if obj.cy < 0.36 else "bottom" if obj.cy > 0.64 else "middle"
    horiz = "left" if obj.cx < 0.36 else "right" if obj.cx > 0.64 else "center"
    if vert == "middle" and horiz == "center":
        return "in the center"
    if vert == "middle":
        return f"on the {horiz}"
    if horiz == "center":
        return f"at the {vert}"
    return f"in the {vert} {horiz}"


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def make_captions(objects: list[ShapeObject], texture: str, bg_color: str, main: ShapeObject,
                  rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """Return (alt_text, {"short": ..., "long": ...}) for a scene."""
    # Alt-text: names the main object only, drops its colour sometimes and adds web-style filler.
    name = main.shape if rng.random() < 0.25 else f"{main.color} {main.shape}"
    filler = _ALT_FILLERS[int(rng.integers(len(_ALT_FILLERS)))]
    alt = f"{filler} {name}".strip()
    short = _join([_a(f"{o.color} {o.shape}") for o in objects])
    long_parts = [f"{_a(o.size_word)} {o.color} {o.shape} {_where(o)}" for o in objects]
    background = _a(f"{texture} {bg_color} background")
    long = f"{_join(long_parts)}, on {background}"
    return alt, {"short": short, "long": long}


def render_scene(seed: int, split: str, index: int, size: int = 112, max_objects: int = 3) -> dict:
    """Render one example; a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    bg_name = list(BACKGROUND_COLORS)[int(rng.integers(len(BACKGROUND_COLORS)))]
    canvas = Image.fromarray(_background(rng, size, texture, BACKGROUND_COLORS[bg_name]))
    mask_img, color_img = Image.new("L", (size, size), 0), Image.new("L", (size, size), 0)
    draw, mask_draw, color_draw = ImageDraw.Draw(canvas), ImageDraw.Draw(mask_img), ImageDraw.Draw(color_img)
    n = int(rng.integers(1, max_objects + 1))
    objects: list[ShapeObject] = []
    for _ in range(n):
        radius = float(rng.uniform(0.1, 0.26))
        obj = ShapeObject(
            shape=SHAPES[int(rng.integers(len(SHAPES)))],
            color=list(COLORS)[int(rng.integers(len(COLORS)))],
            cx=float(rng.uniform(radius, 1 - radius)),
            cy=float(rng.uniform(radius, 1 - radius)),
            radius=radius,
            angle=float(rng.uniform(0, 2 * math.pi)),
        )
        objects.append(obj)
        _draw(draw, obj, size, COLORS[obj.color])
        _draw(mask_draw, obj, size, CLASS_NAMES.index(obj.shape))
        _draw(color_draw, obj, size, COLOR_CLASS_NAMES.index(obj.color))
    mask = np.asarray(mask_img, dtype=np.int64)
    # The "main" object is the one with the most visible pixels (later objects occlude earlier ones).
    areas = [int((mask == CLASS_NAMES.index(o.shape)).sum()) for o in objects]
    main = objects[int(np.argmax(areas))]
    alt, captions = make_captions(objects, texture, bg_name, main, rng)
    return {
        "image": canvas,
        "mask": mask,
        "color_mask": np.asarray(color_img, dtype=np.int64),
        "alt_text": alt,
        "captions": captions,
        "label": CLASS_NAMES.index(main.shape),
        "objects": [o.__dict__.copy() for o in objects],
        "index": index,
    }


class ShapesDataset:
    """Map-style (``length`` given) or infinite (``length=None``, iterate) synthetic dataset."""

    class_names = CLASS_NAMES

    def __init__(self, split: str = "train", size: int = 112, seed: int = 0, length: int | None = 10_000,
                 max_objects: int = 3):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if size < 14:
            raise ValueError(f"size={size} is too small; use at least one 14-pixel patch")
        self.split, self.size, self.seed, self.length, self.max_objects = split, size, seed, length, max_objects

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError(f"an infinite {type(self).__name__} (length=None) has no len(); iterate it instead")
        return self.length

    def __getitem__(self, index: int) -> dict:
        if self.length is not None and not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} examples")
        return self.render(self.seed, self.split, int(index), self.size, self.max_objects)

    @staticmethod
    def render(seed: int, split: str, index: int, size: int, max_objects: int) -> dict:
        """One example; subclasses draw other scenes with the same indexing and splits."""
        return render_scene(seed, split, index, size, max_objects)

    def __iter__(self) -> Iterator[dict]:
        index = 0
        while self.length is None or index < self.length:
            yield self[index]
            index += 1


def caption_corpus(n: int = 5000, seed: int = 0, size: int = 56) -> list[str]:
    """Every caption kind of ``n`` training scenes plus the class names, for tokenizer training."""
    lines = list(CLASS_NAMES) + [f"a photo of a {c}." for c in CLASS_NAMES]
    for i in range(n):
        ex = render_scene(seed, "train", i, size=size)
        lines += [ex["alt_text"], ex["captions"]["short"], ex["captions"]["long"]]
    return lines


def save_samples(out_dir, count: int = 12, seed: int = 0, size: int = 112, split: str = "test") -> list:
    """Render ``count`` examples as PNG files (for demos); returns their paths."""
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        ex = render_scene(seed, split, i, size=size)
        slug = ex["captions"]["short"].replace("a ", "").replace(" and ", "_").replace(" ", "-")
        path = out / f"{i:02d}_{slug[:60]}.png"
        ex["image"].save(path)
        paths.append(path)
    return paths
