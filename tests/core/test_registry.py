"""Every registered layout builds, runs forward and backward (timm-style), on a tiny config."""
from __future__ import annotations

import pytest
import torch
from transformers import Tipsv2Model

import tipsv2_sdk as tips
from tipsv2_sdk.registry import get_spec, make_config, tiny_spec

LAYOUTS = ["tipsv2-s14", "tipsv2-b14", "tipsv2-l14", "tipsv2-so400m14", "tipsv2-g14", "tips-b14", "tips-g14"]


def test_list_models_has_every_variant():
    names = tips.list_models()
    for size in ("s14", "b14", "l14", "so400m14", "g14"):
        assert f"tipsv2-{size}" in names and f"tips-{size}" in names
    assert "tipsv2-tiny" in names


def test_unknown_name_lists_known_ones():
    with pytest.raises(tips.UnknownModelError) as info:
        tips.load("tipsv2-huge")
    assert "tipsv2-b14" in str(info.value) and "tipsv2-huge" in str(info.value)


@pytest.mark.parametrize(
    "name, width, depth, text_depth, grid, swiglu",
    [("tipsv2-b14", 768, 12, 12, 32, False), ("tipsv2-so400m14", 1152, 27, 27, 32, False),
     ("tipsv2-g14", 1536, 40, 12, 32, True), ("tips-l14", 1024, 24, 12, 16, False)],
)
def test_full_size_configs(name, width, depth, text_depth, grid, swiglu):
    cfg = make_config(name)
    assert cfg.vision_config.hidden_size == width == cfg.text_config.hidden_size
    assert cfg.vision_config.num_hidden_layers == depth
    assert cfg.text_config.num_hidden_layers == text_depth
    assert cfg.vision_config.image_size // cfg.vision_config.patch_size == grid
    assert cfg.vision_config.use_swiglu_ffn is swiglu
    assert cfg.vision_config.num_register_tokens == 1


def test_so400m_mlp_width_is_4304():
    with torch.device("meta"):
        model = Tipsv2Model(make_config("tipsv2-so400m14"))
    assert model.vision_model.encoder.layer[0].mlp.fc1.out_features == 4304
    assert model.text_model.encoder.layers[0].mlp.fc1.out_features == 4304


@pytest.mark.parametrize("name", LAYOUTS)
def test_tiny_forward_backward(name):
    spec = tiny_spec(name, width=32)
    assert spec.swiglu == get_spec(name).swiglu
    torch.manual_seed(0)
    model = Tipsv2Model(make_config(spec))
    size = spec.image_size
    pixels = torch.rand(2, 3, size, size)
    ids = torch.randint(1, spec.vocab_size, (2, 7))
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), return_loss=True)
    grid = size // 14
    assert out.vision_model_output.last_hidden_state.shape == (2, 2 + grid * grid, 32)
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)
