"""Linear probes learn what the frozen features show: red-vs-blue regions (segmentation, depth)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tipsv2_sdk.eval.datasets import DatasetError, open_depth, open_segmentation
from tipsv2_sdk.eval.depth import eval_mask, evaluate_depth
from tipsv2_sdk.eval.features import FeatureStore, resize_nearest
from tipsv2_sdk.eval.linear_seg import evaluate_linear_segmentation
from tipsv2_sdk.eval.probe import DepthBins, LinearProbe, ProbeConfig, channel_stats


def test_linear_seg_probe_separates_the_regions(tiny_model, layouts, tmp_path):
    # The scenes' object (red) / background (blue) split lies on patch borders, so even a random
    # encoder's patch features separate them linearly; a probe trained on misaligned labels could not.
    root = layouts.voc(layouts.root("voc"))
    train, val = open_segmentation("voc21", root, train=True), open_segmentation("voc21", root)
    result = evaluate_linear_segmentation(tiny_model, train, val, config=ProbeConfig(epochs=40, lr=1e-2, batch_size=2),
                                          cache_dir=tmp_path / "cache", progress=False)
    assert result["miou"] > 90.0
    assert result["classes_in_mean"] == 2 and result["num_train_images"] == 3 and result["num_images"] == 2
    assert result["train_loss"][-1] < result["train_loss"][0]
    assert result["settings"]["target_size"] == 16 and result["settings"]["image_size"] == 56
    assert list((tmp_path / "cache").iterdir()) == []  # the memory-mapped features are removed afterwards


def test_linear_seg_skips_unreadable_training_images_and_subsets_evenly(tiny_model, layouts):
    root = layouts.ade(layouts.root("ade"), n_train=5)
    train, val = open_segmentation("ade150", root, train=True), open_segmentation("ade150", root)
    train.samples[0].image.write_bytes(b"broken")
    result = evaluate_linear_segmentation(tiny_model, train, val, config=ProbeConfig(epochs=2), progress=False)
    assert result["num_train_images"] == 4 and len(result["train_skipped"]) == 1
    subset = evaluate_linear_segmentation(tiny_model, train, val, config=ProbeConfig(epochs=1), train_limit=2,
                                          progress=False)
    assert subset["num_train_images"] == 1 and subset["settings"]["train_limit"] == 2  # images 0 (broken) and 4
    for sample in train.samples:
        sample.label.unlink()
    with pytest.raises(DatasetError, match="no training image of ade150"):
        evaluate_linear_segmentation(tiny_model, train, val, progress=False)


@pytest.mark.parametrize("layout", ["nyu_mmseg", "nyu_lists"])
def test_depth_probe_beats_the_best_constant(tiny_model, layouts, layout):
    root = getattr(layouts, layout)(layouts.root(layout))
    train, test = open_depth(root, "train"), open_depth(root, "test")
    result = evaluate_depth(tiny_model, train, test, config=ProbeConfig(epochs=50, lr=1e-2, batch_size=2),
                            progress=False)
    # Test scenes: 1.5 m on a quarter / a half of the image, 4 m elsewhere. The best single depth
    # has a per-image RMSE of at least 2.5 * sqrt(p (1 - p)): 1.08 and 1.25 m.
    assert result["rmse"] < 0.9 and result["delta1"] > 0.7 and result["abs_rel"] < 0.3
    assert result["num_images"] == 2 and result["num_train_images"] == 4
    assert result["settings"]["eigen_crop"] is True and result["settings"]["bins"] == 256


def test_eigen_crop_applies_to_nyu_frames_only():
    gt = np.full((480, 640), 2.0, np.float32)
    mask = eval_mask(gt, 1e-3, 10.0, eigen_crop=True)
    assert mask.sum() == (471 - 45) * (601 - 41) and mask[45, 41] and not mask[44, 41] and not mask[45, 601]
    assert eval_mask(gt, 1e-3, 10.0, eigen_crop=False).all()
    small = np.array([[0.0, 2.0], [11.0, 5.0]])
    assert eval_mask(small, 1e-3, 10.0, eigen_crop=True).tolist() == [[False, True], [False, True]]


def test_probe_initialisation_depends_on_its_seed_only():
    mean, std = np.zeros(4, np.float32), np.ones(4, np.float32)
    torch.manual_seed(123)
    a = LinearProbe(mean, std, 3, seed=7)
    after = torch.rand(1)
    torch.manual_seed(999)
    b = LinearProbe(mean, std, 3, seed=7)
    assert torch.equal(a.linear.weight, b.linear.weight)
    assert not torch.equal(a.linear.weight, LinearProbe(mean, std, 3, seed=8).linear.weight)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after)  # the global random state is left as it was


def test_probe_building_blocks():
    labels = np.arange(12).reshape(3, 4)
    assert resize_nearest(labels, 2).tolist() == [[1, 3], [9, 11]]  # pixel-centre sampling
    assert set(np.unique(resize_nearest(labels, 7))) <= set(labels.ravel())
    feats = np.random.default_rng(0).normal(3.0, 2.0, size=(5, 2, 2, 4)).astype(np.float16)
    mean, std = channel_stats(feats, chunk=2)
    flat = feats.astype(np.float64).reshape(-1, 4)
    assert np.allclose(mean, flat.mean(0), atol=1e-4) and np.allclose(std, flat.std(0), atol=1e-3)
    bins = DepthBins(3, 1.0, 3.0)
    assert bins(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(2.0)  # uniform weights: the middle
    assert bins(torch.tensor([100.0, -5.0, -5.0]).view(1, 3, 1, 1)).item() < 1.01  # mass on the first bin
    with pytest.raises(ValueError, match="epochs"):
        ProbeConfig(epochs=0).check()
    with FeatureStore() as store:
        arr = store.array("x", (2, 3), np.float32)
        arr[:] = 1
        path = store.path
        assert (path / "x.npy").is_file()
    assert not path.exists()
