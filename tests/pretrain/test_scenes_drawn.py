"""The richer synthetic scenes and the drawn-shapes evaluation."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tipsv2_sdk.pretrain.data.scenes import RADIUS, SceneDataset, render_rich_scene, scene_corpus
from tipsv2_sdk.pretrain.data.shapes import CLASS_NAMES, COLOR_CLASS_NAMES, render_scene
from tipsv2_sdk.pretrain.drawn import drawn_cases, evaluate_drawn

POSITION_WORDS = ("top", "bottom", "left", "right", "center")


def test_scenes_are_deterministic_and_differ_from_shapes():
    a, b = render_rich_scene(0, "train", 5), render_rich_scene(0, "train", 5)
    assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) and a["captions"] == b["captions"]
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(render_rich_scene(0, "val", 5)["image"]))
    assert not np.array_equal(np.asarray(a["image"]), np.asarray(render_scene(0, "train", 5)["image"]))


def test_scene_fields_masks_and_grounded_captions_agree():
    ds = SceneDataset("train", size=96, length=120)
    empty = counts = 0
    for ex in ds:
        assert ex["image"].size == (96, 96) and ex["mask"].shape == (96, 96)
        # The colour mask covers exactly the shape mask's object pixels, with the objects' colours.
        assert np.array_equal(ex["color_mask"] > 0, ex["mask"] > 0)
        assert {COLOR_CLASS_NAMES[c] for c in np.unique(ex["color_mask"]) if c} <= {o["color"] for o in ex["objects"]}
        present = {CLASS_NAMES[c] for c in np.unique(ex["mask"]) if c}
        shapes = {o["shape"] for o in ex["objects"]}
        assert present <= shapes
        assert all(RADIUS[0] <= o["radius"] <= RADIUS[1] for o in ex["objects"])
        assert all(o["radius"] <= o["cx"] <= 1 - o["radius"] for o in ex["objects"])  # inside the frame
        caps = ex["captions"]
        assert set(caps) == {"short", "long", "grounded"} and "background" in caps["long"]
        if not ex["objects"]:
            empty += 1
            assert ex["label"] == 0 and "background" in ex["alt_text"] + caps["short"]
            continue
        counts += len(ex["objects"])
        assert CLASS_NAMES[ex["label"]] in present and CLASS_NAMES[ex["label"]] in ex["alt_text"]
        assert all(s in caps["short"] and s in caps["long"] for s in shapes)
        assert sum(s in caps["grounded"] for s in shapes) >= 1 and any(w in caps["grounded"] for w in POSITION_WORDS)
    assert 0 < empty < 20 and counts / (120 - empty) > 1.5  # a few empty scenes, usually several objects
    backgrounds = " ".join(ex["captions"]["long"] for ex in ds)
    assert "plain white background" in backgrounds and "striped" in backgrounds and "dotted" in backgrounds


def test_scene_corpus_and_max_objects():
    corpus = scene_corpus(n=10)
    assert "circle" in corpus and len(corpus) == 2 * len(CLASS_NAMES) + 40
    assert all(len(render_rich_scene(0, "train", i, size=56, max_objects=1)["objects"]) <= 1 for i in range(20))
    with pytest.raises(ValueError, match="max_objects"):
        SceneDataset(max_objects=-1)


def test_drawn_cases_are_outside_the_training_distribution():
    cases = drawn_cases()
    assert cases[0].name == "red circle on white" and len(cases) == 48 and len({c.name for c in cases}) == 48
    assert {c.shape for c in cases} == set(CLASS_NAMES[1:])
    assert all(c.radius > RADIUS[1] for c in cases)  # bigger than any training object
    assert sum(c.cx < c.radius or c.cx > 1 - c.radius or c.cy < c.radius or c.cy > 1 - c.radius
               for c in cases) >= 20  # about half reach past the border
    image, mask = cases[0].render(112)
    assert np.asarray(image)[56, 56].tolist() == [220, 40, 40] and np.asarray(image)[2, 2].tolist() == [255] * 3
    assert set(np.unique(mask)) == {0, CLASS_NAMES.index("circle")}


class _Oracle:
    """Answers every drawing with its true mask, except that squares are called circles and blue
    objects red (asked for colours, it labels object pixels with the colour and the page 0)."""

    image_size = 56

    def __init__(self):
        self.truth = {}

    def zero_shot_segment(self, image, labels, mode):
        mask, color = self.truth[np.asarray(image).tobytes()]
        if "square" in labels:
            answer = mask.copy()
            answer[mask == labels.index("square")] = labels.index("circle")
        else:
            answer = np.where(mask > 0, labels.index("red" if color == "blue" else color), 0)
        return SimpleNamespace(label_map=answer)


def test_evaluate_drawn_scores_by_hand():
    oracle = _Oracle()
    cases = drawn_cases()
    for case in cases:
        image, mask = case.render(56)
        oracle.truth[np.asarray(image).tobytes()] = (mask, case.color)
    scores = evaluate_drawn(oracle)
    assert scores.n_cases == 48 and scores.red_circle_on_white == 1.0 and scores.foreground_iou == 1.0
    squares = [c.name for c in cases if c.shape == "square"]
    assert all(scores.per_case[name] == 0.0 for name in squares)
    assert scores.object_iou == pytest.approx(1 - len(squares) / 48)
    assert 0.5 < scores.miou < 1.0  # square: IoU 0; circle: its pixels are shared with the squares'
    blue = sum(c.color == "blue" for c in cases)
    assert blue == 8 and scores.color_accuracy == pytest.approx(1 - blue / 48)


def test_evaluate_drawn_runs_on_a_random_model(tiny_model):
    scores = evaluate_drawn(tiny_model, cases=drawn_cases()[:3]).to_dict()
    assert scores["n_cases"] == 3
    assert all(0.0 <= scores[k] <= 1.0 for k in ("miou", "object_iou", "foreground_iou", "color_accuracy"))
