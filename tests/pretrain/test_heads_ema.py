"""Heads (weight-normalised prototypes), EMA math, head-only vs full EMA teachers."""
from __future__ import annotations

import copy

import pytest
import torch

from tipsv2_sdk.pretrain.ema import ema_update, frozen_copy
from tipsv2_sdk.pretrain.heads import DINOHead, TipsHeads
from tipsv2_sdk.pretrain.objective import ObjectiveConfig, TipsV2Objective
from tipsv2_sdk.pretrain.schedules import cosine, ema_momentum, teacher_temperature, warmup_cosine
from tipsv2_sdk.registry import make_config, tiny_spec

SMALL = dict(head_prototypes=32, head_hidden=48, head_bottleneck=16)


def tiny_hf(seed: int = 0):
    from transformers import Tipsv2Model

    torch.manual_seed(seed)
    return Tipsv2Model(make_config(tiny_spec("tipsv2-b14", width=32, image_size=56))).train()


def images(b: int = 3) -> dict:
    return {"global_crops": torch.rand(b, 3, 56, 56, generator=torch.Generator().manual_seed(0)),
            "local_crops": torch.rand(b, 2, 3, 28, 28, generator=torch.Generator().manual_seed(1)),
            "index": torch.arange(b)}


def test_head_outputs_are_cosines_with_normalised_prototypes():
    torch.manual_seed(0)
    head = DINOHead(8, out_dim=10, hidden_dim=16, bottleneck_dim=4)
    x = torch.randn(5, 8)
    logits = head(x)
    assert logits.shape == (5, 10) and logits.abs().max() <= 1.0 + 1e-6
    with torch.no_grad():
        head.prototypes.mul_(torch.arange(1.0, 11.0).unsqueeze(1))  # rescale rows: weight norm ignores it
    assert torch.allclose(head(x), logits, atol=1e-6)
    assert set(dict(head.named_parameters())) >= {"prototypes", "mlp.0.weight"} and head.in_proj is None
    assert DINOHead(8, 10, 16, 4, proj_from=6)(torch.randn(2, 6)).shape == (2, 10)


def test_shared_heads_are_stored_once():
    shared = TipsHeads(8, 10, 16, 4, shared=True)
    assert shared.cls_head() is shared.patch_head() and shared.patch is None
    assert not any(k.startswith("patch.") for k in shared.state_dict())
    separate = TipsHeads(8, 10, 16, 4)
    assert separate.cls_head() is not separate.patch_head()
    with pytest.raises(RuntimeError, match="CLS head"):
        TipsHeads(8, 10, 16, 4, use_cls=False).cls_head()


def test_ema_update_math():
    student, teacher = torch.nn.Linear(3, 2), None
    teacher = frozen_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    t0 = copy.deepcopy(teacher.state_dict())
    with torch.no_grad():
        student.weight.add_(1.0)
    ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, 0.9 * t0["weight"] + 0.1 * student.weight)
    assert torch.allclose(teacher.bias, t0["bias"])  # student bias unchanged -> teacher unchanged
    ema_update(teacher, student, 0.0)
    assert torch.equal(teacher.weight, student.weight)
    with pytest.raises(ValueError, match="momentum"):
        ema_update(teacher, student, 1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema_update(teacher, torch.nn.Linear(3, 2, bias=False), 0.5)


def test_schedules():
    assert cosine(0, 10, 0.994, 1.0) == pytest.approx(0.994) and cosine(10, 10, 0.994, 1.0) == 1.0
    assert cosine(5, 10, 0.0, 1.0) == pytest.approx(0.5)
    assert warmup_cosine(0, 100, 1e-3, 1e-5, warmup_steps=10) == 0.0
    assert warmup_cosine(5, 100, 1e-3, 1e-5, warmup_steps=10) == pytest.approx(5e-4)
    assert warmup_cosine(10, 100, 1e-3, 1e-5, warmup_steps=10) == pytest.approx(1e-3)
    assert warmup_cosine(100, 100, 1e-3, 1e-5, warmup_steps=10) == pytest.approx(1e-5)
    assert teacher_temperature(0, 100, 0.04, 0.07, 0.3) == 0.04
    assert teacher_temperature(15, 100, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temperature(99, 100, 0.04, 0.07, 0.3) == 0.07
    assert ema_momentum(50, 100, 0.994, 1.0) == pytest.approx(0.997)


def test_head_only_ema_holds_no_encoder_copy_and_targets_carry_no_gradient():
    objective = TipsV2Objective(tiny_hf(), ObjectiveConfig(**SMALL), total_steps=10).train()
    assert objective.teacher_encoder is None
    assert not any(k.startswith("teacher_encoder") for k in objective.state_dict())
    n_vision = sum(1 for k in objective.state_dict() if ".vision_model." in k or k.startswith("model.vision_model"))
    assert n_vision == len(objective.model.vision_model.state_dict())  # the encoder exists once
    batch = images()
    teacher = objective.teacher_tokens(batch["global_crops"], objective.model.vision_model(
        pixel_values=batch["global_crops"]).last_hidden_state)
    assert not teacher.requires_grad
    out = objective(dict(batch, **_texts(3)), 0)
    out.loss.backward()
    assert all(p.grad is None for p in objective.teacher_heads.parameters())
    assert objective.heads.cls.prototypes.grad is not None
    # the teacher's own output is a stop-gradient target: the student encoder gets no gradient through it
    objective.zero_grad()
    with torch.no_grad():
        probs = objective.ibot_loss.teacher_probs(objective.teacher_heads.patch_head()(teacher[:, 2:]), 0.04)
    assert not probs.requires_grad


def _texts(b: int) -> dict:
    ids = torch.randint(3, 300, (b, 8), generator=torch.Generator().manual_seed(2))
    return {"alt_input_ids": ids, "alt_attention_mask": torch.ones_like(ids),
            "caption_input_ids": ids.flip(1), "caption_attention_mask": torch.ones_like(ids)}


def test_full_ema_copies_and_updates_the_encoder():
    objective = TipsV2Objective(tiny_hf(), ObjectiveConfig(teacher="full_ema", **SMALL), total_steps=10)
    encoder, teacher = objective.model.vision_model, objective.teacher_encoder
    assert teacher is not None and teacher.state_dict().keys() == encoder.state_dict().keys()
    assert all(not p.requires_grad for p in teacher.parameters())
    before = teacher.embeddings.cls_token.clone()
    with torch.no_grad():
        encoder.embeddings.cls_token.add_(1.0)
        objective.heads.cls.prototypes.add_(1.0)
    heads_before = objective.teacher_heads.cls.prototypes.clone()
    m = objective.update_teacher(0)
    assert m == pytest.approx(0.994)
    assert torch.allclose(teacher.embeddings.cls_token, m * before + (1 - m) * encoder.embeddings.cls_token)
    assert torch.allclose(objective.teacher_heads.cls.prototypes,
                          m * heads_before + (1 - m) * objective.heads.cls.prototypes)
    assert objective.update_teacher(10) == 1.0


def test_head_only_ema_update_leaves_the_encoder_alone():
    objective = TipsV2Objective(tiny_hf(), ObjectiveConfig(**SMALL), total_steps=10)
    encoder_state = copy.deepcopy(objective.model.state_dict())
    with torch.no_grad():
        objective.heads.patch.prototypes.add_(1.0)
    start = objective.teacher_heads.patch.prototypes.clone()
    m = objective.update_teacher(3)
    assert torch.allclose(objective.teacher_heads.patch.prototypes, m * start + (1 - m) * objective.heads.patch.prototypes)
    assert all(torch.equal(v, objective.model.state_dict()[k]) for k, v in encoder_state.items())
