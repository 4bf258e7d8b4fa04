"""The dataset-level zero-shot protocol: same maps as ``zero_shot_segment``, its options, the report."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tipsv2_sdk.eval.datasets import DatasetError, open_segmentation
from tipsv2_sdk.eval.segmentation import (ZeroShotSegSettings, evaluate_zero_shot_segmentation, predict_label_map,
                                          predict_scores)
from tipsv2_sdk.segmentation import dense_features, zero_shot_segment
from tipsv2_sdk.zero_shot import label_embeddings

LABELS = ["sky", "tree", "road", "car"]


@pytest.fixture(scope="module")
def photo():
    return Image.fromarray(np.random.default_rng(3).integers(0, 255, size=(70, 130, 3), dtype=np.uint8))


def _text(model, labels=LABELS):
    return torch.from_numpy(label_embeddings(model, labels, "tcl"))


@pytest.mark.parametrize("temperature", [1.0, 0.05])
def test_slide_mode_reproduces_zero_shot_segment(tiny_model, photo, temperature):
    ref = zero_shot_segment(tiny_model, photo, LABELS, temperature=temperature)
    s = ZeroShotSegSettings(temperature=temperature, batch_size=2).resolve(tiny_model)
    assert (s.short_side, s.window, s.stride) == (56, 56, 42)
    pred = predict_label_map(tiny_model, photo, _text(tiny_model), s)
    assert ref.windows == 3 and pred.shape == (70, 130)
    assert np.array_equal(pred, ref.label_map)


def test_whole_mode_is_one_pass_of_raw_cosines_resized_to_the_label(tiny_model):
    img = Image.fromarray(np.random.default_rng(5).integers(0, 255, size=(56, 84, 3), dtype=np.uint8))
    s = ZeroShotSegSettings(mode="whole").resolve(tiny_model)
    text = _text(tiny_model)
    scores = predict_scores(tiny_model, img, text, s)
    assert scores.shape == (4, 4, 6)  # the whole 56 x 84 image in one pass: a 4 x 6 patch grid, no softmax
    pixels = torch.from_numpy(np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0)[None]
    with torch.inference_mode():
        feats = F.normalize(dense_features(tiny_model, pixels, "value")[0].float(), dim=-1)
    cos = torch.einsum("hwd,cd->chw", feats, text)
    assert torch.allclose(scores, cos, atol=1e-5)
    expected = F.interpolate(cos[None], size=(30, 45), mode="bilinear", align_corners=False)[0].argmax(0).numpy()
    assert np.array_equal(predict_label_map(tiny_model, img, text, s, size=(30, 45)), expected)


def test_short_side_window_and_stride_are_independent(tiny_model, photo):
    s = ZeroShotSegSettings(short_side=112, window=56, stride=28).resolve(tiny_model)
    scores = predict_scores(tiny_model, photo, _text(tiny_model), s)
    assert scores.shape == (4, 112, 208)  # shorter side 70 -> 112, aspect kept
    assert torch.allclose(scores.sum(0), torch.ones(112, 208), atol=1e-5)  # averaged window probabilities
    with pytest.raises(ValueError, match="mode"):
        ZeroShotSegSettings(mode="sliding").resolve(tiny_model)


def test_background_threshold_marks_low_confidence_pixels_as_class_zero(tiny_model, photo):
    text = _text(tiny_model)
    never = predict_label_map(tiny_model, photo, text, ZeroShotSegSettings(background_threshold=0.0).resolve(tiny_model))
    always = predict_label_map(tiny_model, photo, text, ZeroShotSegSettings(background_threshold=1.0).resolve(tiny_model))
    plain = predict_label_map(tiny_model, photo, text, ZeroShotSegSettings().resolve(tiny_model))
    assert np.array_equal(never, plain + 1)  # ids shift by one; 0 is background
    assert (always == 0).all()


def test_report_with_a_constant_prediction_matches_the_hand_computed_miou(tiny_model, layouts, monkeypatch):
    import tipsv2_sdk.eval.segmentation as zs

    ds = open_segmentation("voc21", layouts.voc(layouts.root("voc")))
    person = ds.classes.index("person")
    monkeypatch.setattr(zs, "predict_label_map", lambda model, image, text, s, size: np.full(size, person))
    result = evaluate_zero_shot_segmentation(tiny_model, ds, progress=False)
    # val scenes 100 and 101: person on columns 1..27 and 1..41, background up to column 55, column 0 void.
    # Everything predicted "person": IoU(person) = 68 / 110, IoU(background) = 0, 19 classes without pixels.
    assert result["miou"] == pytest.approx(100 * 68 / 220, abs=1e-3)
    assert result["pixel_accuracy"] == pytest.approx(100 * 68 / 110, abs=1e-3)
    assert result["classes_in_mean"] == 2 and result["num_images"] == 2
    assert result["per_class_iou"]["background"] == 0.0 and result["per_class_iou"]["cat"] is None


def test_report_on_the_tiny_model_lists_settings_and_skips_bad_files(tiny_model, layouts):
    root = layouts.ade(layouts.root("ade"), n_val=3)
    ds = open_segmentation("ade150", root)
    ds.samples[0].image.write_bytes(b"not a jpeg")
    Image.new("L", (10, 10)).save(ds.samples[1].label)  # a label of the wrong size
    settings = ZeroShotSegSettings(mode="whole", templates="simple")
    result = evaluate_zero_shot_segmentation(tiny_model, ds, settings, progress=False)
    assert result["num_images"] == 1 and [e["source"] for e in result["skipped"]] == ["ADE_val_00000001",
                                                                                      "ADE_val_00000002"]
    assert "10x10" in result["skipped"][1]["reason"]
    assert len(result["per_class_iou"]) == 150 and 0.0 <= result["miou"] <= 100.0
    s = result["settings"]
    assert (s["mode"], s["short_side"], s["window"], s["stride"], s["templates"]) == ("whole", 56, 56, 42, "simple")
    assert s["reduce_zero_label"] is True and result["model"]["trained"] is False
    with pytest.raises(DatasetError, match="cannot load image"):  # --limit 1 keeps only the broken image
        evaluate_zero_shot_segmentation(tiny_model, ds, settings, limit=1, progress=False)


def test_nothing_readable_or_wrong_names_is_an_error(tiny_model, layouts):
    ds = open_segmentation("voc20", layouts.voc(layouts.root("voc")))
    with pytest.raises(DatasetError, match="3 class names given for 20"):
        evaluate_zero_shot_segmentation(tiny_model, ds, class_names=["a", "b", "c"], progress=False)
    with pytest.raises(DatasetError, match="needs a dataset with a background class"):
        evaluate_zero_shot_segmentation(tiny_model, ds, ZeroShotSegSettings(background_threshold=0.5), progress=False)
    for sample in ds.samples:
        sample.label.unlink()
    with pytest.raises(DatasetError, match="no image of voc20"):
        evaluate_zero_shot_segmentation(tiny_model, ds, progress=False)
