"""The TIPSv2 objective on a tiny model: a short training run, masks, parameter groups, state."""
from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from tipsv2_sdk.pretrain.captions import CaptionSampler
from tipsv2_sdk.pretrain.crops import MultiCrop
from tipsv2_sdk.pretrain.data.shapes import ShapesDataset
from tipsv2_sdk.pretrain.objective import ObjectiveConfig, TipsV2Objective
from tipsv2_sdk.testing import tiny_model

SMALL_HEADS = dict(head_prototypes=64, head_hidden=64, head_bottleneck=16)
_SCENES = ShapesDataset(size=64, length=64)


@functools.lru_cache(maxsize=None)
def scene(index: int) -> dict:
    return _SCENES[index]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model("tipsv2-b14", width=32, image_size=56, directory=tmp_path_factory.mktemp("obj"))


def fresh_model(tiny):
    """A copy of the tiny Tipsv2Model that a test may train."""
    import copy

    return copy.deepcopy(tiny.hf_model).train()


def make_batch(tokenizer, step: int, batch_size: int = 8, n_local: int = 2, start: int = 0) -> dict:
    """A batch of shapes scenes: 56 px global crop, ``n_local`` 28 px local crops, both captions."""
    crops, sampler = MultiCrop(56, 28, n_local), CaptionSampler()
    rng = np.random.default_rng([0, step, start])
    g, loc, alt, cap = [], [], [], []
    for i in range(start, start + batch_size):
        ex = scene(i)
        a, b = crops(ex["image"], rng)
        g.append(a), loc.append(b), alt.append(ex["alt_text"]), cap.append(sampler.sample(ex["captions"], i, step))
    alt_ids, alt_mask = tokenizer.encode(alt, 16)
    cap_ids, cap_mask = tokenizer.encode(cap, 24)
    return {"global_crops": torch.from_numpy(np.stack(g)), "local_crops": torch.from_numpy(np.stack(loc)),
            "alt_input_ids": torch.from_numpy(alt_ids), "alt_attention_mask": torch.from_numpy(alt_mask),
            "caption_input_ids": torch.from_numpy(cap_ids), "caption_attention_mask": torch.from_numpy(cap_mask),
            "index": torch.arange(start, start + batch_size)}


def train(objective, tokenizer, steps: int, lr: float = 3e-4, batch_size: int = 8) -> list[dict]:
    opt = torch.optim.AdamW(objective.parameter_groups(0.04), lr=lr)
    history = []
    for step in range(steps):
        out = objective(make_batch(tokenizer, step, batch_size), step)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        out.terms["momentum"] = objective.update_teacher(step)
        history.append(out.terms)
    return history


def test_twenty_step_run_decreases_the_loss(tiny):
    torch.manual_seed(0)
    objective = TipsV2Objective(fresh_model(tiny), ObjectiveConfig(**SMALL_HEADS), total_steps=20).train()
    history = train(objective, tiny.tokenizer, steps=20, batch_size=16)
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    first = history[0]
    assert {"clip_cls1", "clip_cls2", "dino", "ibot", "temperature", "teacher_temp", "loss", "mask_ratio",
            "dino_teacher_entropy", "ibot_teacher_entropy"} <= set(first)
    assert 0.0 < first["dino_teacher_entropy"] <= np.log(64) + 1e-4  # between one-hot and uniform over K = 64
    assert first["mask_ratio"] == pytest.approx(12 / 16)  # 0.75 of the 4x4 grid
    assert first["teacher_temp"] == pytest.approx(0.04) and history[-1]["teacher_temp"] == pytest.approx(0.07)
    assert history[0]["momentum"] == pytest.approx(0.994) and history[-1]["momentum"] > 0.999
    total = 0.5 * (first["clip_cls1"] + first["clip_cls2"]) + first["dino"] + 2.0 * first["ibot"]
    assert first["loss"] == pytest.approx(total, rel=1e-5)


def test_masks_depend_only_on_seed_step_and_index(tiny):
    objective = TipsV2Objective(fresh_model(tiny), ObjectiveConfig(**SMALL_HEADS), total_steps=10)
    batch = make_batch(tiny.tokenizer, 3, batch_size=6)
    halves = [make_batch(tiny.tokenizer, 3, batch_size=3, start=s) for s in (0, 3)]
    whole = objective.masks(batch, 3)
    assert torch.equal(whole, torch.cat([objective.masks(h, 3) for h in halves]))
    assert not torch.equal(whole, objective.masks(batch, 4))
    assert whole.sum(1).tolist() == [12] * 6


def test_state_dict_is_complete_and_safetensors_compatible(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    for teacher in ("head_ema", "full_ema"):
        cfg = ObjectiveConfig(teacher=teacher, shared_head=teacher == "full_ema", **SMALL_HEADS)
        objective = TipsV2Objective(fresh_model(tiny), cfg, total_steps=10)
        state = objective.state_dict()
        assert {"dino_loss.center", "ibot_loss.center"} <= set(state)
        assert any(k.startswith("teacher_heads.") for k in state)
        assert any(k.startswith("teacher_encoder.") for k in state) == (teacher == "full_ema")
        save_file(state, tmp_path / f"{teacher}.safetensors")  # refuses shared / tied tensors
        loaded = load_file(tmp_path / f"{teacher}.safetensors")
        objective.load_state_dict(loaded)


def test_parameter_groups_cover_trainable_parameters_once(tiny):
    objective = TipsV2Objective(fresh_model(tiny), ObjectiveConfig(teacher="full_ema", **SMALL_HEADS), total_steps=10)
    groups = objective.parameter_groups(0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in objective.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    no_decay = {id(p) for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    model = objective.model
    for param in (model.temperature, model.vision_model.embeddings.position_embeddings,
                  model.vision_model.embeddings.cls_token, model.vision_model.layernorm.weight):
        assert id(param) in no_decay
    assert id(objective.heads.cls.prototypes) not in no_decay
    assert {g["wd_scale"] for g in groups} == {0.0, 1.0}


def test_ablation_switches(tiny):
    batch = make_batch(tiny.tokenizer, 0, batch_size=4, n_local=0)
    cfg = ObjectiveConfig(use_clip=False, ibot_all_tokens=False, mask_mode="block", **SMALL_HEADS)
    objective = TipsV2Objective(fresh_model(tiny), cfg, total_steps=5).train()
    out = objective(batch, 0)
    assert "clip_cls1" not in out.terms and {"dino", "ibot"} <= set(out.terms)  # M = 0: DINO on the masked view
    out.loss.backward()
    clip_only = TipsV2Objective(fresh_model(tiny), ObjectiveConfig(use_dino=False, use_ibot=False, koleo_weight=0.1,
                                                                   **SMALL_HEADS), total_steps=5)
    assert clip_only.heads is None and clip_only.teacher_heads is None
    terms = clip_only(batch, 0).terms
    assert {"clip_cls1", "clip_cls2", "koleo"} <= set(terms) and "dino" not in terms
    assert clip_only.update_teacher(0) == pytest.approx(0.994)


@pytest.mark.parametrize("bad, match", [(dict(teacher="ema"), "unknown teacher"), (dict(mask_mode="grid"), "mask_mode"),
                                        (dict(dino_weight=-1.0), "dino_weight"),
                                        (dict(caption_probs=(1.0,)), "same length"),
                                        (dict(centering="mean"), "centering"),
                                        (dict(use_clip=False, use_dino=False, use_ibot=False), "disabled")])
def test_config_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        ObjectiveConfig(**bad)
