"""LLaVA-1.5-style training end to end on tiny models and synthetic image-caption pairs.

Stage 1 trains only the projector; stage 2 adds LoRA on the language model. Loss must fall and
gradients must reach exactly the parameters that are meant to train.
"""
from __future__ import annotations

import pytest
import torch

from tipsv2_sdk.connectors import build_llava, build_llava_processor, freeze_vision_tower, language_lora_targets
from tipsv2_sdk.pretrain.data.shapes import render_scene


def _batch(tokenizer_factory, llama_factory, tiny_model, n=8):
    scenes = [render_scene(0, "train", i, size=56) for i in range(n)]
    captions = [s["captions"]["short"] for s in scenes]
    tokenizer = tokenizer_factory(captions)
    torch.manual_seed(0)
    model = build_llava(tiny_model, llama_factory(len(tokenizer), hidden=32, layers=2), image_size=56)
    processor = build_llava_processor(model, tokenizer)
    batch = processor(
        text=[f"<image> {c} </s>" for c in captions], images=[s["image"] for s in scenes],
        return_tensors="pt", padding=True,
    )
    labels = batch["input_ids"].clone()
    labels[(labels == model.config.image_token_id) | (batch["attention_mask"] == 0)] = -100
    return model, {**batch, "labels": labels}


def _train(model, batch, params, steps, lr):
    optimizer = torch.optim.Adam(params, lr=lr)
    losses, grads = [], set()  # names of parameters that received a non-zero gradient at some step
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        grads |= {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses, grads


def test_stage1_projector_then_stage2_lora(tiny_model, tokenizer_factory, llama_factory):
    peft = pytest.importorskip("peft")
    model, batch = _batch(tokenizer_factory, llama_factory, tiny_model)
    model.train()

    # stage 1: everything frozen but the projector
    model.requires_grad_(False)
    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    tower_before = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    lm_before = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    losses, grads = _train(model, batch, list(projector.parameters()), steps=20, lr=1e-2)
    assert grads == {f"model.multi_modal_projector.{n}" for n, _ in projector.named_parameters()}
    # the LM is random and frozen, so only part of the loss is reachable through the image tokens
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05, losses

    # stage 2: LoRA on the LM (never the tower, whose blocks use the same q/k/v/o names) + projector
    targets = language_lora_targets(model)
    assert targets and all(t.startswith("model.language_model.") for t in targets)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    freeze_vision_tower(lora)
    projector.requires_grad_(True)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    with torch.no_grad():
        start = float(lora(**batch).loss)
    losses2, grads2 = _train(lora, batch, [p for p in lora.parameters() if p.requires_grad], steps=20, lr=2e-2)
    assert grads2 == trainable
    assert all("lora_" in n or "multi_modal_projector" in n for n in grads2)
    assert any("language_model" in n and "lora_A" in n for n in grads2)
    assert not any("vision_tower" in n for n in grads2)
    assert sum(losses2[-5:]) / 5 < start - 0.2, (start, losses2)

    base = lora.get_base_model()
    for key, value in base.model.vision_tower.state_dict().items():
        assert torch.equal(value, tower_before[key]), key
    for key, value in lm_before.items():  # LoRA leaves the base LM weights alone
        name = key.replace(".weight", ".base_layer.weight") if any(key.endswith(f"{t.split('.')[-1]}.weight") for t in targets) else key
        assert torch.equal(base.model.language_model.state_dict()[name], value), key
