"""TipsV2VisionTower against the contract of LLaVA's CLIPVisionTower, without llava installed.

The same tower runs inside real LLaVA in test_llava_original.py (its own CI step).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tipsv2_sdk.connectors.llava_original import (
    TipsV2ImageProcessor,
    TipsV2VisionTower,
    is_tipsv2_tower,
    parse_tower_name,
)


def _args(**kw):
    return SimpleNamespace(**{"mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", **kw})


def test_tower_names(tiny_model_dir, tmp_path):
    assert parse_tower_name("tipsv2-b14@224") == parse_tower_name("tipsv2:tipsv2-b14@224")
    assert parse_tower_name("tipsv2:/x/y@336").source == "/x/y" and parse_tower_name("tipsv2-b14").image_size is None
    assert is_tipsv2_tower("tipsv2-l14") and is_tipsv2_tower(f"{tiny_model_dir}@42")
    assert is_tipsv2_tower(f"tipsv2:{tiny_model_dir}") and is_tipsv2_tower(str(tiny_model_dir))
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip_vision_model"}')
    for other in ("openai/clip-vit-large-patch14-336", str(tmp_path / "clip"), None):
        assert not is_tipsv2_tower(other)


def test_delay_load_keeps_a_config_only(tiny_model_dir):
    tower = TipsV2VisionTower(f"tipsv2:{tiny_model_dir}@42", _args(), delay_load=True)
    assert not tower.is_loaded and not hasattr(tower, "image_processor")
    assert tower.hidden_size == 32 and tower.config.image_size == 42 and tower.config.patch_size == 14
    assert tower.num_patches_per_side == 3 and tower.num_patches == 9
    with pytest.raises(RuntimeError, match="not loaded"):
        tower(torch.rand(1, 3, 42, 42))
    tower.load_model()
    tower.load_model()  # idempotent
    assert tower.is_loaded and tower.image_processor.crop_size == {"height": 42, "width": 42}
    assert tower(torch.rand(2, 3, 42, 42)).shape == (2, 9, 32)


@pytest.mark.parametrize("select, extra", [("patch", 0), ("cls_patch", 1), ("cls2_patch", 1), ("full", 2)])
def test_forward_tensor_and_list(tiny_model, tiny_model_dir, select, extra):
    tower = TipsV2VisionTower(str(tiny_model_dir), _args(mm_vision_select_feature=select))
    images = torch.rand(2, 3, 56, 56, dtype=torch.float64)
    feats = tower(images)
    assert feats.shape == (2, 16 + extra, 32) and feats.dtype == torch.float64  # cast back like CLIP's tower
    assert tower.num_tokens == 16 + extra
    listed = tower([images[0], images[1]])
    assert [f.shape for f in listed] == [(1, 16 + extra, 32)] * 2
    torch.testing.assert_close(listed[1][0], feats[1], atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        ref = tiny_model.hf_model.vision_model(pixel_values=images.float(), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(feats[:, extra:].float(), ref[:, 2:], atol=1e-5, rtol=1e-4)  # never CLS2 as a "patch"


def test_members_llava_reads(tiny_model_dir):
    tower = TipsV2VisionTower(str(tiny_model_dir), _args(mm_vision_select_layer=[0, -1]))
    assert tower.hidden_size == 64 and tower(torch.rand(1, 3, 56, 56)).shape == (1, 16, 64)
    assert tower.dtype == torch.float32 and tower.device.type == "cpu"
    assert tower.dummy_feature.shape == (1, 64) and not tower.dummy_feature.any()
    tower.to(dtype=torch.bfloat16)  # LLaVA moves the tower to half precision after load_model
    assert tower.dtype == torch.bfloat16 and tower(torch.rand(1, 3, 56, 56)).dtype == torch.float32


def test_gradients_only_when_the_tower_trains(tiny_model_dir):
    tower = TipsV2VisionTower(str(tiny_model_dir), _args())
    assert not any(p.requires_grad for p in tower.parameters())
    assert not tower(torch.rand(1, 3, 56, 56)).requires_grad  # LLaVA's frozen default
    tower.vision_tower.encoder.layer[0].requires_grad_(True)
    out = tower(torch.rand(1, 3, 56, 56))
    out.sum().backward()
    assert tower.vision_tower.encoder.layer[0].attention.q_proj.weight.grad is not None


def test_bad_settings_fail_at_construction(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown feature_select 'cls'"):
        TipsV2VisionTower(str(tiny_model_dir), _args(mm_vision_select_feature="cls"), delay_load=True)
    with pytest.raises(ValueError, match="out of range"):
        TipsV2VisionTower(str(tiny_model_dir), _args(mm_vision_select_layer=-7), delay_load=True)
    with pytest.raises(ValueError, match="not a positive multiple of the patch size 14"):
        TipsV2VisionTower(f"{tiny_model_dir}@50", _args(), delay_load=True)
    tower = TipsV2VisionTower(str(tiny_model_dir), _args())
    with pytest.raises(ValueError, match="not a positive multiple"):
        tower(torch.rand(1, 3, 50, 56))
    from tipsv2_sdk import UnknownModelError

    with pytest.raises(UnknownModelError):
        TipsV2VisionTower("tipsv2:no-such-model", _args(), delay_load=True)


def _expand2square(image: Image.Image, color):
    # what LLaVA's "pad" aspect ratio does before preprocess
    side = max(image.size)
    canvas = Image.new(image.mode, (side, side), color)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


def test_image_processor_has_what_llava_reads():
    processor = TipsV2ImageProcessor(56)
    assert processor.crop_size == {"height": 56, "width": 56} and processor.size["shortest_edge"] == 56
    image = Image.fromarray(np.full((20, 56, 3), 200, np.uint8))
    padded = _expand2square(image, tuple(int(x * 255) for x in processor.image_mean))
    pixels = processor.preprocess(padded, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 56, 56) and pixels.dtype == torch.float32
    # like CLIP's mean-colour padding (0 after normalisation), the padding is an input of exactly 0
    assert float(pixels[0, :, 0].abs().max()) == 0.0 and float(pixels[0, :, 28].min()) > 0.7
    batch = processor([image, image], return_tensors="pt")["pixel_values"]
    assert batch.shape == (2, 3, 56, 56)
    assert isinstance(processor(image, return_tensors=None)["pixel_values"], np.ndarray)
    with pytest.raises(ValueError):
        TipsV2ImageProcessor(57)


def test_llava_train_launcher_explains_a_missing_llava():
    import importlib.util

    if importlib.util.find_spec("llava") is not None:
        pytest.skip("llava-torch is installed here; the launcher runs in test_llava_original.py")
    from tipsv2_sdk.connectors.llava_train import _pop_option, main

    with pytest.raises(SystemExit, match="pip install --no-deps llava-torch==1.2.2.post1"):
        main(["--version", "plain"])
    argv = ["--a", "1", "--attn_implementation=sdpa", "--b"]
    assert _pop_option(argv, "--attn_implementation") == "sdpa" and argv == ["--a", "1", "--b"]
