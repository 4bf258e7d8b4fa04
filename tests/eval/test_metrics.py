"""Metrics against values computed by hand (ignore pixels, absent classes, class shifts, ties)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tipsv2_sdk.eval.metrics import (ConfusionMatrix, depth_errors, prepare_target, recall_at_k, retrieval_ranks,
                                     segmentation_scores, topk_accuracy)


def test_miou_by_hand_with_ignore_and_an_absent_class():
    # 4 classes; class 3 is predicted only on ignored (255) pixels, so it is absent from both the
    # ground truth and the counted predictions and must be left out of the mean.
    labels = [np.array([[0, 0, 1], [1, 255, 2]]), np.array([[2, 2, 0], [255, 255, 1]])]
    preds = [np.array([[0, 1, 1], [1, 2, 2]]), np.array([[2, 0, 0], [3, 3, 1]])]
    conf = ConfusionMatrix(4)
    for label, pred in zip(labels, preds):
        conf.update(pred, prepare_target(label, 4, ignore_index=255))
    s = conf.scores()
    # class 0: TP 2, GT 3, predicted 3 -> IoU 2 / 4;  class 1: TP 3, GT 3, predicted 4 -> 3 / 4
    # class 2: TP 2, GT 3, predicted 2 -> 2 / 3;        class 3: no pixels -> NaN, not averaged
    assert s.iou[:3] == pytest.approx([0.5, 0.75, 2 / 3])
    assert math.isnan(s.iou[3])
    assert s.miou == pytest.approx((0.5 + 0.75 + 2 / 3) / 3)  # 0.63889
    assert s.pixel_accuracy == pytest.approx(7 / 9)
    assert s.mean_accuracy == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert s.labelled_pixels == 9 and s.present_classes == 3
    assert conf.matrix.sum() == 9 and conf.matrix[1, 1] == 3 and conf.matrix[2, 0] == 1


def test_a_predicted_class_absent_from_the_ground_truth_counts_as_zero():
    conf = ConfusionMatrix(2)
    conf.update(np.array([[0, 1]]), np.array([[0, 0]]))
    s = conf.scores()
    assert s.iou.tolist() == [0.5, 0.0]  # class 1: union 1 (a false positive), TP 0
    assert s.miou == pytest.approx(0.25)
    assert s.mean_accuracy == pytest.approx(0.5)  # accuracy averages only classes in the ground truth


def test_reduce_zero_label_ignores_zero_and_shifts_ids():
    # ADE20K / PC59 / VOC20: raw 0 is ignored, raw k becomes k - 1; 255 stays ignored.
    raw = np.array([[0, 1, 2], [3, 255, 1]])
    assert prepare_target(raw, 3, 255, reduce_zero_label=True).tolist() == [[-1, 0, 1], [2, -1, 0]]
    assert prepare_target(raw, 4, 255).tolist() == [[0, 1, 2], [3, -1, 1]]
    conf = ConfusionMatrix(3)
    conf.update(np.array([[2, 0, 1], [2, 0, 1]]), prepare_target(raw, 3, 255, reduce_zero_label=True))
    # counted pixels: (t0,p0) (t1,p1) (t2,p2) (t0,p1) -> IoU 1/2, 1/2, 1
    assert conf.scores().iou.tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_out_of_range_labels_and_predictions_are_errors_not_silently_dropped():
    with pytest.raises(ValueError, match=r"\[181\]"):
        prepare_target(np.array([[0, 181]]), 171, 255)  # an unconverted COCO-Stuff map
    with pytest.raises(ValueError, match="after the -1 shift"):
        prepare_target(np.array([[151]]), 150, 255, reduce_zero_label=True)
    conf = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="predicted ids"):
        conf.update(np.array([[-1, 0]]), np.array([[0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        conf.update(np.zeros((2, 2)), np.zeros((2, 3)))
    conf.update(np.array([[5]]), np.array([[-1]]))  # an ignored pixel's prediction is never looked at
    assert conf.matrix.sum() == 0
    assert math.isnan(segmentation_scores(conf.matrix).miou)


def test_pretrain_confusion_miou_agrees_with_the_eval_metric():
    from tipsv2_sdk.pretrain.evaluate import confusion_miou

    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(3, 16, 16))
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, 4, size=target.shape))
    miou, acc, conf = confusion_miou(pred, target, 6)  # class 5 absent everywhere
    ref = ConfusionMatrix(6)
    ref.update(pred, target)
    assert miou == pytest.approx(ref.scores().miou)
    assert acc == pytest.approx(ref.scores().pixel_accuracy)
    assert np.array_equal(conf, ref.matrix)


def test_topk_accuracy_by_hand_and_ties_count_against():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.4, 0.4, 0.2]])
    labels = np.array([0, 0, 1])
    # row 0 rank 0; row 1: class 0 is third (rank 2); row 2: tied with class 0 -> rank 1
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 3) == pytest.approx(1.0)
    assert topk_accuracy(np.ones((4, 3)), np.array([0, 1, 2, 0]), 1) == 0.0  # constant scores earn nothing


def test_retrieval_ranks_by_hand():
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.7], [0.0, 1.0]])
    owner = np.array([0, 0, 1, 1])  # texts 0, 1 describe image 0; texts 2, 3 image 1
    i2t, t2i = retrieval_ranks(images, texts, owner, chunk=1)
    # image 0 scores texts [0.9, 0.2, 0.7, 0.0]: its best own caption (0.9) ranks first
    # image 1 scores [0.1, 0.8, 0.7, 1.0]: its best own (1.0) is first
    assert i2t.tolist() == [0, 0]
    # text 1 scores images [0.2, 0.8] -> its image 0 is second; text 2 ties [0.7, 0.7] -> rank 1
    assert t2i.tolist() == [0, 1, 1, 0]
    assert recall_at_k(t2i, 1) == 0.5 and recall_at_k(t2i, 2) == 1.0
    assert retrieval_ranks(images, texts, owner)[1].tolist() == t2i.tolist()  # chunking changes nothing


def test_depth_errors_by_hand():
    gt = np.array([[1.0, 2.0], [4.0, 0.0]])
    pred = np.array([[1.0, 2.5], [2.0, 9.0]])
    valid = gt > 0
    e = depth_errors(pred, gt, valid)
    assert e["abs_rel"] == pytest.approx((0 + 0.25 + 0.5) / 3)
    assert e["rmse"] == pytest.approx(math.sqrt((0 + 0.25 + 4) / 3))
    assert e["delta1"] == pytest.approx(1 / 3)  # ratios 1, 1.25 (not < 1.25), 2
    assert e["delta2"] == pytest.approx(2 / 3)  # 1.25 < 1.5625
    assert e["delta3"] == pytest.approx(2 / 3)  # 2 > 1.953
    assert e["log10"] == pytest.approx((0 + math.log10(1.25) + math.log10(2)) / 3)
    with pytest.raises(ValueError):
        depth_errors(pred, gt, np.zeros_like(valid))
