"""Richer synthetic scenes ("scenes"): the shapes classes with more variety and grounded captions.

Same example fields and class ids as ``shapes.py`` (``image``, ``mask``, ``alt_text``,
``captions``, ``label``, ``objects``, ``index``), so every consumer of the shapes data (the
evaluation protocol, the trainer, the tokenizer corpus) reads it unchanged. Compared with the
original generator, a scene here has:

* 0-4 objects (a few scenes are empty, so "background" has images of its own), sizes from small to
  large, flat or textured (striped / dotted) fills, colours jittered around their names;
* backgrounds that are plain colours (white, black, light grey, ... - the way people draw), the
  original textures, gradients, two-tone splits or noise;
* captions at four granularities: ``alt_text`` (noisy, the main object), ``short`` (every
  object), ``long`` (every object with its size and position, and the background) and ``grounded``
  (one object and where it is: "a red circle in the top left").

Objects stay inside the frame and their radius is within ``RADIUS`` (fractions of the side): the
"drawn shapes" evaluation (``drawn.py``) uses sizes and border positions outside these ranges.
Everything is a pure function of ``(seed, split, index)``; the random stream differs from
``shapes.py`` so the two datasets never produce the same scene.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .shapes import (CLASS_NAMES, COLOR_CLASS_NAMES, COLORS, SHAPES, SPLITS, TEXTURES, ShapeObject, ShapesDataset,
                     _a, _background, _draw, _join, _where)

RADIUS = (0.08, 0.30)  # object radius range in training scenes (fraction of the image side)
OBJECT_COUNTS = (0, 1, 2, 3, 4)
OBJECT_COUNT_PROBS = (0.06, 0.34, 0.25, 0.20, 0.15)  # before truncation to ``max_objects``
PLAIN_BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15), "light gray": (205, 205, 205),
                     "gray": (128, 128, 128), "beige": (225, 210, 180), "teal": (40, 120, 120),
                     "navy": (30, 35, 80), "pink": (235, 170, 190), "sky blue": (150, 200, 240),
                     "brown": (120, 80, 50)}
BACKGROUND_KINDS = ("plain", "textured", "split", "noise")
BACKGROUND_KIND_PROBS = (0.40, 0.40, 0.10, 0.10)
FILLS = ("flat", "striped", "dotted")
FILL_PROBS = (0.75, 0.15, 0.10)
_STREAM = 0x5CE7E5  # keeps this generator's random stream apart from shapes.py's


def _choice(rng: np.random.Generator, items, probs=None):
    items = list(items)
    return items[int(rng.choice(len(items), p=probs))]


def _scene_background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str, str]:
    """(H, W, 3) uint8 background, its colour name and its kind as a caption word ("plain", ...)."""
    kind = _choice(rng, BACKGROUND_KINDS, BACKGROUND_KIND_PROBS)
    name = _choice(rng, PLAIN_BACKGROUNDS)
    base = PLAIN_BACKGROUNDS[name]
    if kind == "textured":
        texture = _choice(rng, [t for t in TEXTURES if t != "plain"])
        return _background(rng, size, texture, base), name, texture
    img = np.empty((size, size, 3), np.float32)
    img[:] = base
    if kind == "split":  # two-tone: another colour below (or right of) a random line
        other = np.asarray(PLAIN_BACKGROUNDS[_choice(rng, [n for n in PLAIN_BACKGROUNDS if n != name])], np.float32)
        yy, xx = np.mgrid[0:size, 0:size]
        cut = rng.uniform(0.3, 0.7) * size
        img[(yy if rng.random() < 0.5 else xx) > cut] = other
        kind = "two-tone"
    elif kind == "noise":
        img += rng.normal(0, 28, size=img.shape)
        kind = "noisy"
    img += rng.normal(0, 2, size=img.shape)  # a little sensor noise everywhere
    return np.clip(img, 0, 255).astype(np.uint8), name, kind


def _fill_pattern(rng: np.random.Generator, size: int, fill: str, color: tuple[int, int, int]) -> Image.Image:
    """A full-size RGB layer with the object's fill; the object's mask cuts it out."""
    rgb = np.empty((size, size, 3), np.float32)
    rgb[:] = color
    if fill != "flat":
        yy, xx = np.mgrid[0:size, 0:size]
        period = int(rng.integers(4, 9))
        if fill == "striped":
            sel = ((xx + yy) // period) % 2 == 0
        else:
            sel = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) < (period / 3.5) ** 2
        rgb[sel] = np.asarray(color, np.float32) * 0.55 + 20
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _object_color(rng: np.random.Generator, background: tuple[int, int, int]) -> tuple[str, tuple[int, int, int]]:
    """A named object colour far enough from the background to be visible, jittered a little."""
    names = [n for n, c in COLORS.items() if sum(abs(a - b) for a, b in zip(c, background)) > 120]
    name = _choice(rng, names)
    jitter = rng.integers(-14, 15, size=3)
    return name, tuple(int(v) for v in np.clip(np.asarray(COLORS[name]) + jitter, 0, 255))


def _describe(obj: ShapeObject, fill: str) -> str:
    texture = "" if fill == "flat" else f"{fill} "
    return f"{texture}{obj.color} {obj.shape}"


def scene_captions(objects: list[ShapeObject], fills: list[str], main: int | None, bg_name: str, bg_kind: str,
                   rng: np.random.Generator) -> tuple[str, dict[str, str]]:
    """(alt_text, {"short", "long", "grounded"}) of a scene; ``main`` indexes the largest visible object."""
    background = _a(f"{bg_kind} {bg_name} background")
    if not objects:
        alt = _choice(rng, ("empty background", f"{bg_name} background", "background", f"plain {bg_name}"))
        return alt, {"short": background, "long": f"an empty scene, only {background}", "grounded": background}
    o = objects[main]
    name = o.shape if rng.random() < 0.25 else f"{o.color} {o.shape}"
    filler = _choice(rng, ("photo of", "pic of", "image:", "my", "cool", "stock", "", "", "drawing of"))
    alt = f"{filler} {name}".strip()
    short = _join([_a(_describe(x, f)) for x, f in zip(objects, fills)])
    long_parts = [f"{_a(x.size_word)} {_describe(x, f)} {_where(x)}" for x, f in zip(objects, fills)]
    pick = int(rng.integers(len(objects)))
    grounded = f"{_a(_describe(objects[pick], fills[pick]))} {_where(objects[pick])}"
    return alt, {"short": short, "long": f"{_join(long_parts)}, on {background}", "grounded": grounded}


def render_rich_scene(seed: int, split: str, index: int, size: int = 112, max_objects: int = 4) -> dict:
    """Render one example (same fields as ``shapes.render_scene``); a pure function of its arguments."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index, _STREAM])
    background, bg_name, bg_kind = _scene_background(rng, size)
    canvas = Image.fromarray(background)
    mask_img = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask_img)
    color_img = Image.new("L", (size, size), 0)
    color_draw = ImageDraw.Draw(color_img)
    counts = [c for c in OBJECT_COUNTS if c <= max_objects]
    probs = np.asarray([p for c, p in zip(OBJECT_COUNTS, OBJECT_COUNT_PROBS) if c <= max_objects])
    n = int(_choice(rng, counts, probs / probs.sum()))
    objects: list[ShapeObject] = []
    fills: list[str] = []
    for _ in range(n):
        radius = float(rng.uniform(*RADIUS))
        color_name, rgb = _object_color(rng, PLAIN_BACKGROUNDS[bg_name])
        obj = ShapeObject(shape=_choice(rng, SHAPES), color=color_name, cx=float(rng.uniform(radius, 1 - radius)),
                          cy=float(rng.uniform(radius, 1 - radius)), radius=radius,
                          angle=float(rng.uniform(0, 2 * math.pi)))
        fill = _choice(rng, FILLS, FILL_PROBS)
        shape_mask = Image.new("L", (size, size), 0)
        _draw(ImageDraw.Draw(shape_mask), obj, size, 255)
        canvas.paste(_fill_pattern(rng, size, fill, rgb), (0, 0), shape_mask)
        _draw(mask_draw, obj, size, CLASS_NAMES.index(obj.shape))
        _draw(color_draw, obj, size, COLOR_CLASS_NAMES.index(obj.color))
        objects.append(obj)
        fills.append(fill)
    mask = np.asarray(mask_img, dtype=np.int64)
    areas = [int((mask == CLASS_NAMES.index(o.shape)).sum()) for o in objects]
    main = int(np.argmax(areas)) if objects else None
    alt, captions = scene_captions(objects, fills, main, bg_name, bg_kind, rng)
    return {
        "image": canvas,
        "mask": mask,
        "color_mask": np.asarray(color_img, dtype=np.int64),
        "alt_text": alt,
        "captions": captions,
        "label": CLASS_NAMES.index(objects[main].shape) if objects else 0,
        "objects": [{**o.__dict__, "fill": f} for o, f in zip(objects, fills)],
        "index": index,
    }


class SceneDataset(ShapesDataset):
    """Map-style (``length`` given) or infinite (``length=None``) dataset of rich scenes."""

    def __init__(self, split: str = "train", size: int = 112, seed: int = 0, length: int | None = 10_000,
                 max_objects: int = 4):
        if max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {max_objects}")
        super().__init__(split, size, seed, length, max_objects)

    @staticmethod
    def render(seed: int, split: str, index: int, size: int, max_objects: int) -> dict:
        return render_rich_scene(seed, split, index, size, max_objects)


def scene_corpus(n: int = 5000, seed: int = 0, size: int = 56) -> list[str]:
    """Every caption kind of ``n`` training scenes, the class names and simple prompts (tokenizer training)."""
    lines = list(CLASS_NAMES) + [f"a photo of a {c}." for c in CLASS_NAMES]
    for i in range(n):
        ex = render_rich_scene(seed, "train", i, size=size)
        lines += [ex["alt_text"], *ex["captions"].values()]
    return lines


__all__ = ["RADIUS", "PLAIN_BACKGROUNDS", "SceneDataset", "render_rich_scene", "scene_captions", "scene_corpus"]
