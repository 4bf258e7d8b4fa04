"""The linear patch probe: labels by hand, the fitter on separable vs random features, the wiring
(an oracle encoder reaches ~100%, a noise encoder stays near chance) and the CLI."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from tipsv2_sdk.cli.app import cli
from tipsv2_sdk.pretrain.data.scenes import SceneDataset
from tipsv2_sdk.pretrain.data.shapes import CLASS_NAMES, ShapesDataset
from tipsv2_sdk.pretrain.probe import fit_linear_probe, patch_labels, patch_shape_probe, predict_linear_probe

SIZE = 56


def test_patch_labels_take_each_blocks_majority():
    mask = np.array([[0, 0, 3, 3],
                     [0, 2, 3, 0],
                     [1, 1, 0, 0],
                     [1, 0, 0, 0]])
    # top-left block: three 0s and one 2 -> 0; top-right: three 3s -> 3; bottom-left: three 1s -> 1.
    assert patch_labels(mask, (2, 2), num_classes=4).tolist() == [[0, 3], [1, 0]]
    tie = np.array([[0, 2], [2, 0]])
    assert patch_labels(tie, (1, 1), num_classes=3).tolist() == [[0]]  # ties go to the background
    with pytest.raises(ValueError, match="does not split into a 3x3 patch grid"):
        patch_labels(mask, (3, 3), num_classes=4)


def test_fit_linear_probe_separates_separable_classes_and_not_noise():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 3
    y = rng.integers(0, 4, 400)
    x = centers[y] + rng.normal(size=(400, 16))
    params = fit_linear_probe(x[:300], y[:300], num_classes=4)
    assert np.mean(predict_linear_probe(params, x[300:]) == y[300:]) > 0.95
    noise = rng.normal(size=(400, 16))
    params = fit_linear_probe(noise[:300], y[:300], num_classes=4)
    assert np.mean(predict_linear_probe(params, noise[300:]) == y[300:]) < 0.5  # chance is ~0.25
    with pytest.raises(ValueError, match="at least one training patch"):
        fit_linear_probe(np.zeros((0, 3)), np.zeros(0, int), num_classes=2)


class _LookupEncoder:
    """Stands in for a TipsV2: patch features computed from the scene's true mask (oracle) or noise."""

    image_size = SIZE

    def __init__(self, masks: dict[bytes, np.ndarray], oracle: bool):
        self.masks, self.oracle, self.rng = masks, oracle, np.random.default_rng(1)

    def encode_images(self, images, batch_size, image_size, progress, with_patches):
        assert with_patches and image_size == SIZE
        grid = (SIZE // 14, SIZE // 14)
        feats = []
        for image in images:
            noise = self.rng.normal(scale=0.1, size=(*grid, 12))
            if self.oracle:
                labels = patch_labels(self.masks[image.tobytes()], grid, len(CLASS_NAMES))
                noise[..., :len(CLASS_NAMES)] += np.eye(len(CLASS_NAMES))[labels]
            feats.append(noise)
        return SimpleNamespace(patches=np.stack(feats).astype(np.float32))


def _masks(data_cls, n_train: int, n_val: int) -> dict[bytes, np.ndarray]:
    masks = {}
    for split, seed, n in (("train", 1000, n_train), ("val", 0, n_val)):
        data = data_cls(split, size=SIZE, seed=seed, length=n)
        for i in range(n):
            ex = data[i]
            masks[ex["image"].tobytes()] = ex["mask"]
    return masks


@pytest.mark.parametrize("dataset, data_cls", [("shapes", ShapesDataset), ("scenes", SceneDataset)])
def test_oracle_features_are_probed_near_perfectly_and_noise_near_chance(dataset, data_cls):
    masks = _masks(data_cls, 60, 40)
    oracle = patch_shape_probe(_LookupEncoder(masks, oracle=True), n_train=60, n_val=40, dataset=dataset)
    assert oracle.accuracy > 0.95 and oracle.balanced_accuracy > 0.9
    assert oracle.grid == (4, 4) and oracle.n_val_patches > 20
    assert set(oracle.per_class) <= set(CLASS_NAMES[1:])  # background patches are left out
    noise = patch_shape_probe(_LookupEncoder(masks, oracle=False), n_train=60, n_val=40, dataset=dataset)
    assert noise.balanced_accuracy < 0.5 and noise.balanced_chance == pytest.approx(1 / len(noise.per_class))
    assert noise.n_val_patches == oracle.n_val_patches


def test_probe_refuses_unknown_dataset_and_empty_counts(tiny_model):
    with pytest.raises(ValueError, match="unknown probe dataset 'coco'"):
        patch_shape_probe(tiny_model, dataset="coco")
    with pytest.raises(ValueError, match="must be positive"):
        patch_shape_probe(tiny_model, n_train=0)


def test_cli_probe_prints_json_for_a_model_directory(tiny_model_dir):
    result = CliRunner().invoke(cli, ["pretrain", "probe", "-m", str(tiny_model_dir), "--n-train", "12",
                                      "--n-val", "8", "--dataset", "scenes", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dataset"] == "scenes" and data["grid"] == [4, 4]
    assert 0.0 <= data["accuracy"] <= 1.0 and 0.0 < data["chance"] <= 1.0
    text = CliRunner().invoke(cli, ["pretrain", "probe", "-m", str(tiny_model_dir), "--n-train", "6", "--n-val", "4"])
    assert text.exit_code == 0 and "patch probe (shapes" in text.output and "chance" in text.output


def test_cli_probe_user_errors_exit_2(tmp_path):
    missing = CliRunner().invoke(cli, ["pretrain", "probe", "-m", str(tmp_path)])
    assert missing.exit_code == 2 and "config.json is missing" in missing.output
    bad = CliRunner().invoke(cli, ["pretrain", "probe", "--dataset", "coco"])
    assert bad.exit_code == 2 and "coco" in bad.output
