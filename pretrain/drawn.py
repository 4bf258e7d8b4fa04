"""Shapes "drawn by anyone": flat colours on plain backgrounds, at sizes and positions never trained on.

The training generators draw objects with a radius in ``scenes.RADIUS`` (at most 0.30 of the side;
``shapes.py``: at most 0.26), always fully inside the frame, mostly on textured or noisy
backgrounds. A person testing a model draws something simpler and bigger: one flat red circle on a
white page. ``drawn_cases`` is a fixed list of such drawings - every shape class, in several
colour / background pairs, with a radius of 0.33-0.42 (larger than any training object) and
half of them pushed against or past the border (positions no training scene has) - and
``evaluate_drawn`` segments each one zero-shot with the class names (the protocol of
``evaluate_shapes``) and reports:

* ``miou``: mIoU over the 9 classes (background included) of all drawings together;
* ``object_iou``: per drawing, IoU of the pixels labelled with the drawn shape against its mask,
  averaged over drawings (``per_case`` lists each);
* ``foreground_iou``: the same for "any shape" against background (is the object found at all);
* ``red_circle_on_white``: the object IoU of the headline case, a red circle centred on white;
* ``color_accuracy``: segmenting again with the 8 colour names as prompts, the fraction of each
  drawing's object pixels labelled with its colour, averaged over drawings (the "colour" target of
  ``evaluate_shapes``: object pixels only; chance 1/8).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .data.shapes import CLASS_NAMES, COLOR_CLASS_NAMES, COLORS, SHAPES, ShapeObject, _draw
from .evaluate import confusion_miou

PAGES = {"white": (255, 255, 255), "light gray": (210, 210, 210), "black": (0, 0, 0), "cream": (250, 240, 215)}
# (object colour, page) pairs a person might pick; the first is the headline case.
PAIRS = (("red", "white"), ("blue", "white"), ("green", "light gray"), ("black", "white"), ("yellow", "black"),
         ("purple", "cream"))


@dataclass(frozen=True)
class DrawnCase:
    """One drawing: a single flat shape on a plain page."""

    name: str
    shape: str
    color: str
    page: str
    cx: float
    cy: float
    radius: float
    angle: float = 0.0

    def render(self, size: int) -> tuple[Image.Image, np.ndarray]:
        """(RGB image, (size, size) int64 mask with the shape's class id)."""
        image = Image.new("RGB", (size, size), PAGES[self.page])
        mask = Image.new("L", (size, size), 0)
        obj = ShapeObject(self.shape, self.color, self.cx, self.cy, self.radius, self.angle)
        _draw(ImageDraw.Draw(image), obj, size, COLORS[self.color])
        _draw(ImageDraw.Draw(mask), obj, size, CLASS_NAMES.index(self.shape))
        return image, np.asarray(mask, dtype=np.int64)


def drawn_cases() -> list[DrawnCase]:
    """The fixed evaluation list: 8 shapes x 6 colour/page pairs, centred or against the border."""
    cases = [DrawnCase("red circle on white", "circle", "red", "white", 0.5, 0.5, 0.36)]
    for i, shape in enumerate(SHAPES):
        for j, (color, page) in enumerate(PAIRS):
            k = i * len(PAIRS) + j
            radius = 0.33 + 0.03 * (k % 4)  # 0.33 .. 0.42, all above the training maximum
            if k % 2:  # pushed against the border: part of the shape may leave the frame
                side = (k // 2) % 4
                cx, cy = [(radius * 0.8, 0.5), (1 - radius * 0.8, 0.5), (0.5, radius * 0.8), (0.5, 1 - radius * 0.8)][side]
            else:
                cx, cy = 0.5 + 0.06 * math.cos(k), 0.5 + 0.06 * math.sin(k)
            name = f"{color} {shape} on {page}"
            if name != cases[0].name:
                cases.append(DrawnCase(name, shape, color, page, cx, cy, radius, angle=0.3 * k))
    return cases


@dataclass
class DrawnEval:
    """Scores on the drawn shapes (fractions in [0, 1])."""

    miou: float
    object_iou: float
    foreground_iou: float
    red_circle_on_white: float
    color_accuracy: float
    n_cases: int
    per_case: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def evaluate_drawn(model, size: int | None = None, cases: list[DrawnCase] | None = None) -> DrawnEval:
    """Segment every drawing with the class names (``mode="whole"``, as ``evaluate_shapes``)."""
    size = size or model.image_size
    cases = cases if cases is not None else drawn_cases()
    colors = list(COLOR_CLASS_NAMES[1:])
    preds, targets, per_case, fg, color_hits = [], [], {}, [], []
    for case in cases:
        image, mask = case.render(size)
        pred = np.asarray(model.zero_shot_segment(image, list(CLASS_NAMES), mode="whole").label_map)
        cls = CLASS_NAMES.index(case.shape)
        per_case[case.name] = _iou(pred == cls, mask == cls)
        fg.append(_iou(pred > 0, mask > 0))
        preds.append(pred)
        targets.append(mask)
        by_color = np.asarray(model.zero_shot_segment(image, colors, mode="whole").label_map)
        color_hits.append(float(np.mean(by_color[mask > 0] == colors.index(case.color))) if (mask > 0).any() else 0.0)
    miou, _, _ = confusion_miou(np.stack(preds), np.stack(targets), len(CLASS_NAMES))
    return DrawnEval(miou=miou, object_iou=float(np.mean(list(per_case.values()))), foreground_iou=float(np.mean(fg)),
                     red_circle_on_white=per_case[cases[0].name], n_cases=len(cases), per_case=per_case,
                     color_accuracy=float(np.mean(color_hits)))


__all__ = ["DrawnCase", "DrawnEval", "drawn_cases", "evaluate_drawn", "PAGES", "PAIRS"]
