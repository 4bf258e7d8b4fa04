"""LoRA on the TIPSv2 tower: targets, training, merge_and_unload, save/reload; freezing helpers."""
from __future__ import annotations

import pytest
import torch

from tipsv2_sdk.connectors import (
    build_llava,
    freeze_vision_tower,
    language_lora_targets,
    unfreeze_last_n_blocks,
    vision_lora_targets,
)

peft = pytest.importorskip("peft")


def test_targets_are_scoped_to_one_part(tiny_model, lm_config):
    model = build_llava(tiny_model, lm_config)
    vision = vision_lora_targets(model)
    language = language_lora_targets(model)
    assert vision and all(n.startswith("model.vision_tower.encoder.layer.") for n in vision)
    assert language and all(n.startswith("model.language_model.layers.") for n in language)
    assert {n.rsplit(".", 1)[1] for n in vision} == {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"}
    assert not set(vision) & set(language)
    assert len(vision_lora_targets(model, mlp=False, last_n_blocks=1)) == 4
    assert {n.rsplit(".", 1)[1] for n in vision_lora_targets(tiny_model, attention=False)} == {"fc1", "fc2"}
    with pytest.raises(ValueError, match="nothing to target"):
        vision_lora_targets(model, attention=False, mlp=False)


def test_swiglu_tower_targets():
    from tipsv2_sdk.testing import tiny_model

    g14 = tiny_model("tipsv2-g14", width=32, image_size=28)
    assert {n.rsplit(".", 1)[1] for n in vision_lora_targets(g14, attention=False)} == {"gate_proj", "up_proj", "down_proj"}


def test_lora_on_tower_trains_merges_saves_and_reloads(tiny_model, tmp_path):
    from transformers import Tipsv2VisionModel

    torch.manual_seed(0)
    tower = Tipsv2VisionModel(tiny_model.vision_config)
    tower.load_state_dict(tiny_model.hf_model.vision_model.state_dict())
    pixels, target = torch.rand(4, 3, 56, 56), torch.randn(4, 18, 32)
    with torch.no_grad():
        before = tower(pixels).last_hidden_state.clone()
    model = peft.get_peft_model(tower, peft.LoraConfig(r=4, lora_alpha=8, target_modules=vision_lora_targets(tower)))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.mse_loss(model(pixel_values=pixels).last_hidden_state, target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        adapted = model(pixel_values=pixels).last_hidden_state
    assert not torch.allclose(adapted, before, atol=1e-3)  # LoRA changed the tower's outputs

    model.save_pretrained(tmp_path / "adapter")
    merged = model.merge_and_unload()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=pixels).last_hidden_state, adapted, atol=1e-5, rtol=1e-4)
    merged.save_pretrained(tmp_path / "merged")
    reloaded = Tipsv2VisionModel.from_pretrained(tmp_path / "merged")
    fresh = Tipsv2VisionModel(tiny_model.vision_config)
    fresh.load_state_dict(tiny_model.hf_model.vision_model.state_dict())
    with_adapter = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).last_hidden_state, adapted, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(with_adapter(pixel_values=pixels).last_hidden_state, adapted, atol=1e-5, rtol=1e-4)


def test_lora_on_the_tower_inside_llava_gets_gradients(tiny_model, lm_config):
    model = build_llava(tiny_model, lm_config, image_token_id=4)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=vision_lora_targets(model), init_lora_weights=False))
    n = 16
    ids = torch.tensor([[4] * n + [5, 6, 7]])
    out = lora(input_ids=ids, pixel_values=torch.rand(1, 3, 56, 56), labels=ids)
    out.loss.backward()
    got = {name for name, p in lora.named_parameters() if p.grad is not None}
    assert got and all("vision_tower" in name and "lora_" in name for name in got)
    # feature_layer -2: the last block feeds nothing, so its adapters receive no gradient
    assert not any("encoder.layer.1." in name for name in got)


def test_freeze_and_unfreeze_last_blocks(tiny_model, lm_config):
    model = build_llava(tiny_model, lm_config, image_token_id=4)
    assert freeze_vision_tower(model) == len(list(model.model.vision_tower.parameters()))
    assert not any(p.requires_grad for p in model.model.vision_tower.parameters())
    # feature_layer -2 reads the output of block 0 of 2: "the last block" that matters is block 0
    names = unfreeze_last_n_blocks(model, 1)
    assert names and all(n.startswith("model.vision_tower.encoder.layer.0.") for n in names)
    ids = torch.tensor([[4] * 16 + [5, 6]])
    model(input_ids=ids, pixel_values=torch.rand(1, 3, 56, 56), labels=ids).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.requires_grad and n.startswith("model.vision_tower")}
    assert grads == set(names)
    assert all(dict(model.named_parameters())[n].grad is not None for n in names)
    every = unfreeze_last_n_blocks(model, 5, feature_layer=-1, final_norm=True)
    assert any(".encoder.layer.1." in n for n in every) and any(".layernorm." in n for n in every)
    with pytest.raises(ValueError):
        unfreeze_last_n_blocks(model, -1)
    with pytest.raises(ValueError, match="no TIPSv2 vision tower"):
        freeze_vision_tower(torch.nn.Linear(2, 2))
