"""The miniature-reproduction evaluation protocol: metric functions and an end-to-end run."""
from __future__ import annotations

import numpy as np
import pytest

from tipsv2_sdk.pretrain.evaluate import confusion_miou, evaluate_shapes, knn_accuracy, recall_at_1


def test_recall_at_1_by_hand():
    keys = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], np.float32)  # rows 0 and 2 correct
    assert recall_at_1(queries, keys) == pytest.approx(2 / 3)


def test_knn_accuracy_by_hand():
    train = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    labels = np.array([1, 1, 2, 2])
    test = np.array([[1, 0.05], [0.05, 1]], np.float32)
    assert knn_accuracy(train, labels, test, np.array([1, 2]), k=2) == 1.0
    assert knn_accuracy(train, labels, test, np.array([2, 1]), k=2) == 0.0
    assert knn_accuracy(train, labels, test, np.array([1, 2]), k=10) == 1.0  # k larger than the bank


def test_confusion_miou_by_hand():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    miou, acc, conf = confusion_miou(pred, target, num_classes=3)
    # class 0: inter 1, union 2 -> 0.5; class 1: inter 2, union 3 -> 2/3; class 2 absent -> ignored
    assert miou == pytest.approx((0.5 + 2 / 3) / 2)
    assert acc == pytest.approx(0.75)
    assert conf.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]


def test_evaluate_shapes_runs_on_a_random_model(tiny_model):
    result = evaluate_shapes(tiny_model, n_val=12, n_train=24, size=56)
    data = result.to_dict()
    for key in ("seg_miou", "seg_miou_color", "t2i_r1_long_cls2", "i2t_r1_long_cls2", "t2i_r1_alt_cls1", "knn_acc_cls1"):
        assert 0.0 <= data[key] <= 1.0
    assert data["chance_r1"] == pytest.approx(1 / 12)


def test_segmentation_scores_use_the_target_mask_and_class_names(tiny_model, monkeypatch):
    """A model that predicts the colour mask exactly scores 1 on the colour target and not on the
    shape target: the target selects both the prompts and the mask; evaluate_shapes reports both."""
    from tipsv2_sdk.pretrain.data.shapes import COLOR_CLASS_NAMES, ShapesDataset
    from tipsv2_sdk.pretrain.evaluate import segmentation_scores

    examples = [ShapesDataset("val", size=56, seed=0, length=6)[i] for i in range(6)]
    by_image = {np.asarray(ex["image"]).tobytes(): ex for ex in examples}
    prompts = []

    def colour_oracle(image, labels, mode):
        prompts.append(tuple(labels))
        # Colour prompts have no background: class k is COLOR_CLASS_NAMES[k + 1]; background pixels
        # get colour 0 ("red"), which must not count (they are ignored).
        return type("Seg", (), {"label_map": np.maximum(by_image[np.asarray(image).tobytes()]["color_mask"] - 1, 0)})()

    monkeypatch.setattr(tiny_model, "zero_shot_segment", colour_oracle)
    assert segmentation_scores(tiny_model, examples, "color") == (pytest.approx(1.0), pytest.approx(1.0))
    assert set(prompts) == {COLOR_CLASS_NAMES[1:]}
    shape_miou, _ = segmentation_scores(tiny_model, examples, "shape")
    assert shape_miou < 0.9  # colour ids are not shape ids
    scores = evaluate_shapes(tiny_model, n_val=6, n_train=8, size=56)
    assert scores.seg_miou_color == pytest.approx(1.0) and scores.seg_pixel_acc_color == pytest.approx(1.0)
    assert scores.seg_miou == pytest.approx(shape_miou)
    with pytest.raises(ValueError, match="seg_target"):
        segmentation_scores(tiny_model, examples, "texture")


def test_evaluate_shapes_on_the_rich_scenes(tiny_model, monkeypatch):
    """dataset='scenes' scores held-out rich scenes (the oracle only knows those) with both targets."""
    from tipsv2_sdk.pretrain.data.scenes import SceneDataset

    examples = [SceneDataset("val", size=56, seed=0, length=6)[i] for i in range(6)]
    by_image = {np.asarray(ex["image"]).tobytes(): ex for ex in examples}

    def oracle(image, labels, mode):
        ex = by_image[np.asarray(image).tobytes()]
        label_map = ex["mask"] if "circle" in labels else np.maximum(ex["color_mask"] - 1, 0)
        return type("Seg", (), {"label_map": label_map})()

    monkeypatch.setattr(tiny_model, "zero_shot_segment", oracle)
    scores = evaluate_shapes(tiny_model, n_val=6, n_train=8, size=56, dataset="scenes")
    assert scores.dataset == "scenes" and scores.n_val == 6
    assert scores.seg_miou == pytest.approx(1.0) and scores.seg_miou_color == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown synthetic dataset 'coco'"):
        evaluate_shapes(tiny_model, n_val=6, n_train=8, size=56, dataset="coco")
