"""Distillation from a frozen teacher into a randomly initialised student of another width."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from tipsv2_sdk.pretrain.distill import DistillConfig, DistillObjective
from tipsv2_sdk.pretrain.objective import ObjectiveConfig, TipsV2Objective
from tipsv2_sdk.registry import make_config, tiny_spec

HEADS = dict(head_prototypes=32, head_hidden=48, head_bottleneck=16)


def build(width: int, seed: int, patch: int = 14):
    from transformers import Tipsv2Model

    spec = dataclasses.replace(tiny_spec("tipsv2-b14", width=width, image_size=56), patch_size=patch)
    torch.manual_seed(seed)
    return Tipsv2Model(make_config(spec))


def batch(b: int = 4, n_local: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (b, 12), generator=g)
    return {"global_crops": torch.rand(b, 3, 56, 56, generator=g), "local_crops": torch.rand(b, n_local, 3, 28, 28, generator=g),
            "alt_input_ids": ids, "alt_attention_mask": torch.ones_like(ids),
            "caption_input_ids": ids.flip(1), "caption_attention_mask": torch.ones_like(ids), "index": torch.arange(b)}


@pytest.fixture(scope="module")
def teacher():
    return build(width=48, seed=1)


def test_step_with_frozen_teacher(teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    objective = DistillObjective(build(32, seed=2), teacher, DistillConfig(**HEADS), total_steps=10).train()
    assert not teacher.training and objective.heads.cls.in_proj is not None  # 32 -> 48 projection
    assert objective.teacher_heads.cls.in_proj is None
    opt = torch.optim.AdamW(objective.parameter_groups(0.04), lr=1e-3)
    student_before = copy.deepcopy(objective.model.state_dict())
    for step in range(2):
        out = objective(batch(), step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        momentum = objective.update_teacher(step)
    assert {"clip_cls1", "clip_cls2", "dino", "ibot"} <= set(out.terms)
    assert out.terms["mask_ratio"] == 0.0  # the paper distils without masking
    assert momentum == pytest.approx(objective.cfg.ema_momentum_start, abs=1e-3)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in objective.model.state_dict().items())
    trainable = {id(p) for g in objective.parameter_groups(0.0) for p in g["params"]}
    assert not trainable & {id(p) for p in teacher.parameters()}


def test_teacher_is_not_checkpointed(teacher):
    objective = DistillObjective(build(32, seed=2), teacher, DistillConfig(**HEADS), total_steps=10)
    state = objective.state_dict()
    assert not any(k.startswith("teacher.") for k in state) and any(k.startswith("teacher_heads.") for k in state)
    again = DistillObjective(build(32, seed=3), teacher, DistillConfig(**HEADS), total_steps=10)
    again.load_state_dict(state)
    assert torch.equal(again.model.temperature, objective.model.temperature)


def test_head_ema_and_frozen_heads(teacher):
    objective = DistillObjective(build(32, seed=2), teacher, DistillConfig(**HEADS), total_steps=10)
    with torch.no_grad():
        objective.heads.cls.prototypes.add_(1.0)
    start = objective.teacher_heads.cls.prototypes.clone()
    m = objective.update_teacher(0)
    expected = m * start + (1 - m) * objective.heads.cls.prototypes
    assert torch.allclose(objective.teacher_heads.cls.prototypes, expected)
    frozen = DistillObjective(build(32, seed=2), teacher, DistillConfig(teacher_heads="frozen", **HEADS), 10)
    start = frozen.teacher_heads.cls.prototypes.clone()
    assert frozen.update_teacher(0) == 0.0 and torch.equal(frozen.teacher_heads.cls.prototypes, start)


def test_masked_student_and_global_only(teacher):
    cfg = DistillConfig(mask_ratio=0.5, use_clip=False, **HEADS)
    objective = DistillObjective(build(32, seed=2), teacher, cfg, total_steps=10).train()
    out = objective(batch(n_local=0), 0)
    assert out.terms["mask_ratio"] == pytest.approx(0.5) and "clip_cls1" not in out.terms
    out.loss.backward()


def test_load_teacher_heads_from_an_objective_checkpoint():
    teacher = build(32, seed=1)
    trained = TipsV2Objective(teacher, ObjectiveConfig(**HEADS), total_steps=10)
    objective = DistillObjective(build(32, seed=2), teacher, DistillConfig(teacher_heads="frozen", **HEADS), 10)
    objective.load_teacher_heads(trained.state_dict())
    assert torch.equal(objective.teacher_heads.patch.prototypes, trained.teacher_heads.patch.prototypes)
    assert torch.equal(objective.heads.cls.prototypes, trained.teacher_heads.cls.prototypes)


def test_mismatched_patch_grid_is_refused(teacher):
    with pytest.raises(ValueError, match="patch size"):
        DistillObjective(build(32, seed=2, patch=8), teacher, DistillConfig(**HEADS), total_steps=10)
    with pytest.raises(ValueError, match="teacher_heads"):
        DistillConfig(teacher_heads="shared")
