"""Converting the official DPT decoders: parity with a reference forward, refusals, partial conversions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import dense_fixtures as fx  # tests/core is on pytest's pythonpath
import dpt_reference as ref

import tipsv2_sdk as tips
from tipsv2_sdk.convert.dpt import dpt_layers
from tipsv2_sdk.errors import CheckpointError, TipsV2Error

# Max abs diff to the float64 reference: the model run in float64 (structure and layout: measured
# ~5e-14), and as used, in float32 (measured up to 3.7e-5 on depths of up to 9 m; docs/dense.md).
TOLERANCE_FP64 = 1e-10
TOLERANCE_FP32 = 1e-5  # relative to the largest output magnitude (at least 1)
SIZES = [(56, 56), (56, 84), (70, 56), (42, 98)]  # own grid, wider, odd grid (5x4), interpolated down and up


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return fx.write_official(tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "dpt"
    decoders = [official[t] for t in ("depth", "normals", "segmentation")]
    return tips.convert_official_dpt(official["vision"], decoders, out, variant=fx.tiny_spec())


@pytest.fixture(scope="module")
def converted_model(converted):
    return tips.load_dense(converted)


def pixels(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * 1000 + width).random((2, 3, height, width), dtype=np.float32)


def convert(tmp_path, official, tasks, out="out", **kwargs):
    decoders = [official[t] if isinstance(t, str) else t for t in tasks]
    vision = kwargs.pop("vision", official["vision"])
    return tips.convert_official_dpt(vision, decoders, tmp_path / out, variant=kwargs.pop("variant", fx.tiny_spec()),
                                     **kwargs)


# ---------------------------------------------------------------------- parity with the reference
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_converted_model_equals_the_reference_forward(official, converted_model, size):
    model = converted_model.to(dtype=torch.float32)
    assert model.tasks == ("depth", "normals", "segmentation")
    px = pixels(*size)
    vision = fx.load_arrays(official["vision"])
    expected = {task: ref.reference(task, vision, fx.load_arrays(official[task]), px, [0, 1, 2, 3], heads=fx.HEADS)
                for task in model.tasks}
    got32 = model.raw_outputs(torch.from_numpy(px))
    got64 = model.to(dtype=torch.float64).raw_outputs(torch.from_numpy(px))
    for task, want in expected.items():
        assert got32[task].shape == want.shape and got32[task].dtype == torch.float32, task
        diff64 = np.abs(got64[task].numpy() - want).max()
        assert diff64 <= TOLERANCE_FP64, (task, float(diff64))
        diff32 = np.abs(got32[task].numpy() - want).max()
        assert diff32 <= TOLERANCE_FP32 * max(1.0, np.abs(want).max()), (task, float(diff32))


def test_the_comparison_catches_an_unrotated_transposed_kernel(tmp_path, official, monkeypatch):
    from tipsv2_sdk.convert import dpt_keys

    right = dpt_keys.to_torch
    monkeypatch.setattr(dpt_keys, "to_torch",
                        lambda a, kind: right(a[::-1, ::-1] if kind == "conv_transpose" else a, kind))
    model = tips.load_dense(convert(tmp_path, official, ["depth"]))
    px = pixels(56, 56)
    expected = ref.reference("depth", fx.load_arrays(official["vision"]), fx.load_arrays(official["depth"]), px,
                             [0, 1, 2, 3], heads=fx.HEADS)
    assert np.abs(model.raw_outputs(torch.from_numpy(px))["depth"].numpy() - expected).max() > 0.1


def test_single_task_conversion_uses_the_single_task_class(tmp_path, official):
    from transformers import AutoModelForDepthEstimation

    out = convert(tmp_path, official, ["depth"])
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Tipsv2DptForDepthEstimation"]
    assert config["num_depth_bins"] == fx.BINS and config["depth_decoder_activation"] == "linear"
    assert config["backbone_config"]["out_indices"] == [1, 2, 3, 4]
    meta = json.loads((out / "tipsv2_sdk.json").read_text())
    assert meta["tasks"] == ["depth"] and meta["random_heads"] == []
    assert meta["converted_from"]["depth"] == official["depth"].name
    px = pixels(56, 84)
    expected = ref.reference("depth", fx.load_arrays(official["vision"]), fx.load_arrays(official["depth"]), px,
                             [0, 1, 2, 3], heads=fx.HEADS)
    hf = AutoModelForDepthEstimation.from_pretrained(out).eval()  # transformers alone reads it
    with torch.no_grad():
        depth = hf(pixel_values=torch.from_numpy(px)).predicted_depth.numpy()
    assert np.abs(depth - expected).max() <= TOLERANCE_FP32 * np.abs(expected).max()


def test_two_decoders_give_a_dense_model_with_a_recorded_random_head(tmp_path, official):
    out = convert(tmp_path, official, ["normals", "depth"])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Tipsv2DptForDensePrediction"]
    meta = json.loads((out / "tipsv2_sdk.json").read_text())
    assert meta["tasks"] == ["depth", "normals"] and meta["random_heads"] == ["segmentation"]
    assert "segmentation head randomly initialised" in meta["description"]
    model = tips.load_dense(out)
    assert model.tasks == ("depth", "normals")
    with pytest.raises(ValueError, match="no trained segmentation head"):
        model.predict_segmentation(np.zeros((56, 56, 3), np.uint8), progress=False)
    with pytest.raises(CheckpointError, match="no trained segmentation head"):
        tips.load_dense(out, task="segmentation")
    again = convert(tmp_path, official, ["normals", "depth"], out="again")  # the random head is seeded
    a, b = tips.load_dense(out).hf_model, tips.load_dense(again).hf_model
    assert torch.equal(a.segmentation_decoder.head.weight, b.segmentation_decoder.head.weight)


def test_key_spellings_without_prefixes_and_with_out_conv(tmp_path, official):
    src = fx.load_arrays(official["normals"])
    renamed = {}
    for key in src:  # no decoder/ and dpt/ levels, fusion out conv spelled out_conv
        new = key.replace("decoder/", "").replace("dpt/", "").replace("/Conv_0/", "/out_conv/")
        renamed[key] = new
    plain = fx.rewrite(official["normals"], tmp_path / "plain.npz", rename=renamed)
    a = tips.load_dense(convert(tmp_path, official, [plain], out="a")).hf_model
    b = tips.load_dense(convert(tmp_path, official, ["normals"], out="b")).hf_model
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name


def test_official_layer_choice():
    # The official notebook's intermediate layers (0-based) for B, L, SO400m and g; transformers adds 1.
    official = {12: [2, 5, 8, 11], 24: [5, 11, 17, 23], 27: [6, 13, 20, 26], 40: [9, 19, 29, 39]}
    for depth, blocks in official.items():
        assert list(dpt_layers(depth)) == [b + 1 for b in blocks]


def test_labels_become_id2label(tmp_path, official):
    names = ["wall", "floor", "sky", "tree", "road"]
    model = tips.load_dense(convert(tmp_path, official, ["segmentation"], labels=names))
    assert model.labels == names
    with pytest.raises(CheckpointError, match="3 labels given but the segmentation head has 5 classes"):
        convert(tmp_path, official, ["segmentation"], out="bad", labels=names[:3])


# ---------------------------------------------------------------------- refusals
def test_missing_unexpected_and_wrong_shape_keys_are_named(tmp_path, official):
    key = "decoder/dpt/fusion_blocks_2/PreActResidualConvUnit_1/conv2/kernel"
    broken = fx.rewrite(official["depth"], tmp_path / "broken.zip", drop=[key],
                        add={"decoder/dpt/extra_layer/kernel": np.zeros((2, 2), np.float32),
                             "decoder/dpt/project/bias": np.zeros(7, np.float32)})
    with pytest.raises(CheckpointError) as info:
        convert(tmp_path, official, [broken])
    message = str(info.value)
    assert "missing keys: fusion_blocks_2/PreActResidualConvUnit_1/conv2/kernel" in message
    assert "unexpected keys: decoder/dpt/extra_layer/kernel" in message
    assert "wrong shapes: decoder/dpt/project/bias (7,) (expected (16,))" in message
    assert not (tmp_path / "out").exists()


def test_transposed_kernel_of_the_wrong_size_is_refused(tmp_path, official):
    bad = fx.rewrite(official["depth"], tmp_path / "bad.zip",
                     add={"decoder/dpt/reassemble_blocks/resize_layers_0/kernel": np.zeros((2, 2, 4, 4), np.float32)})
    with pytest.raises(CheckpointError, match=r"resize_layers_0/kernel \(2, 2, 4, 4\) \(expected \(4, 4, 4, 4\)\)"):
        convert(tmp_path, official, [bad])


@pytest.mark.parametrize("case, message", [
    ("vision", "is an encoder checkpoint, not a DPT decoder; pass it as --vision"),
    ("pytorch", "has PyTorch-style keys"),
    ("regression", "regression depth head"),
    ("two_heads", "several task heads"),
    ("no_readout", "only the 'project' readout"),
    ("duplicate", "the same tensor twice"),
])
def test_files_that_are_not_a_supported_decoder(tmp_path, official, case, message):
    depth = fx.load_arrays(official["depth"])
    if case == "vision":
        path = official["vision"]
    elif case == "pytorch":
        path = tmp_path / "torch.npz"
        np.savez(path, **{"dpt.project.weight": np.zeros((16, 16, 3, 3), np.float32)})
    elif case == "regression":
        path = fx.rewrite(official["depth"], tmp_path / "r.zip", rename={
            "decoder/pixel_depth_classif/kernel": "decoder/pixel_depth_regress/kernel",
            "decoder/pixel_depth_classif/bias": "decoder/pixel_depth_regress/bias"})
    elif case == "two_heads":
        path = fx.rewrite(official["depth"], tmp_path / "h.zip",
                          add={"decoder/pixel_normals/kernel": np.zeros((16, 3), np.float32)})
    elif case == "no_readout":
        path = fx.rewrite(official["depth"], tmp_path / "n.zip",
                          drop=[k for k in depth if "readout_projects" in k])
    else:
        path = fx.rewrite(official["depth"], tmp_path / "d.zip",
                          add={"dpt/project/bias": depth["decoder/dpt/project/bias"]})
    with pytest.raises(CheckpointError, match=message):
        convert(tmp_path, official, [path])


def test_decoders_must_fit_the_backbone_and_each_other(tmp_path, official):
    wide = tmp_path / "wide.zip"
    with open(wide, "wb") as handle:
        np.savez(handle, **ref.random_decoder("pixel_normals", 48, fx.NECK, fx.FUSION, 3, seed=9))
    with pytest.raises(CheckpointError, match="reads 48-dim features but the vision checkpoint has width 32"):
        convert(tmp_path, official, [wide])
    other = tmp_path / "other.zip"
    with open(other, "wb") as handle:
        np.savez(handle, **ref.random_decoder("pixel_normals", 32, (8, 8, 16, 32), fx.FUSION, 3, seed=9))
    with pytest.raises(CheckpointError, match="different sizes.*neck \\[8, 8, 16, 32\\]"):
        convert(tmp_path, official, ["depth", other])
    with pytest.raises(CheckpointError, match="are both depth decoders"):
        convert(tmp_path, official, ["depth", "depth"])


def test_vision_checkpoint_is_checked_against_the_variant(tmp_path, official):
    with pytest.raises(CheckpointError, match=r"does not match --variant tipsv2-b14: it has width 32"):
        convert(tmp_path, official, ["depth"], variant="tipsv2-b14")
    broken = fx.rewrite(official["vision"], tmp_path / "v.npz", drop=["blocks.3.ls2.gamma"])
    with pytest.raises(CheckpointError, match="missing keys: blocks.3.ls2.gamma"):
        convert(tmp_path, official, ["depth"], vision=broken)
    with pytest.raises(CheckpointError, match="expected four increasing block numbers in 1..4"):
        convert(tmp_path, official, ["depth"], layers=[1, 2, 3, 5])


def test_nothing_to_convert_and_output_guard(tmp_path, official):
    with pytest.raises(CheckpointError, match="no DPT decoder checkpoint"):
        convert(tmp_path, official, [])
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep")
    with pytest.raises(TipsV2Error, match="refusing to replace"):
        convert(tmp_path, official, ["depth"], out="precious")
    assert (precious / "notes.txt").read_text() == "keep"
