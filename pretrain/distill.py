"""Distilling a frozen TIPSv2 teacher into a randomly initialised student (TIPSv2 §3, Table 2).

The paper distils its smaller models from the frozen ViT-g with the same loss framework, except
that the teacher is the frozen pretrained model (not an EMA) and the patch loss is applied with
**no masking** (every student patch token matches the teacher's), from a randomly initialised
student. Which other terms are kept is not stated; our documented defaults:

* patch term (β = 2): the student's patch tokens on the *unmasked* global view against the
  teacher's (``mask_ratio = 0``; with a ratio > 0 the student sees a masked view and every token
  is supervised, iBOT++-style);
* CLS term (α = 1): teacher CLS1 on the global view against the student CLS1 on the local crops
  and, by default, on the global view too (a frozen teacher cannot collapse, so the same-view
  pair is informative);
* contrastive terms (½ each): the student's CLS1 / CLS2 against its own text tower (alt-text,
  synthetic caption), exactly as in pre-training, so the student stays an image-text model.

Teacher targets come from the frozen teacher's tokens through *teacher heads*. Released
checkpoints ship no DINO/iBOT heads, so by default (``teacher_heads="ema"``) the teacher heads are
an EMA of the student heads (head-only EMA, as in TIPSv2) applied to the teacher features;
``"frozen"`` keeps them at their initial value (or at heads loaded with ``load_teacher_heads``).
A student of another width maps its tokens to the teacher width with a linear input projection
in its heads; the teacher heads have none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .ema import ema_update, frozen_copy
from .heads import TipsHeads
from .losses import ContrastiveLoss, DINOLoss, IBOTPatchLoss
from .objective import (ObjectiveOutput, check_choice, check_shared_fields, contrastive_terms, decay_groups,
                        example_masks, mean_entropy, num_prefix_tokens, pack_terms, patch_size, split_crops)
from .schedules import ema_momentum, teacher_temperature

if TYPE_CHECKING:
    from transformers import Tipsv2Model

TEACHER_HEADS = ("ema", "frozen")
TEACHER_PREFIX = "teacher."


@dataclass
class DistillConfig:
    """Knobs of the distillation objective (defaults described in the module docstring)."""

    clip_weight: float = 0.5  # weight of each CLS contrastive term (student image vs student text)
    dino_weight: float = 1.0  # CLS distillation
    ibot_weight: float = 2.0  # patch distillation
    mask_ratio: float = 0.0  # the paper distils with no masking
    mask_mode: str = "random"  # "random" | "block" (only used when mask_ratio > 0)
    dino_on_global: bool = True  # also match the student's global-view CLS1 to the teacher's
    teacher_heads: str = "ema"  # "ema": EMA of the student heads; "frozen": fixed teacher heads
    multi_granularity: bool = True  # CLS2 caption drawn among caption_sources (read by the data side)
    caption_sources: tuple[str, ...] = ("short", "long")
    caption_probs: tuple[float, ...] = (0.5, 0.5)
    head_prototypes: int = 65536
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    shared_head: bool = False
    student_temp: float = 0.1
    teacher_temp_start: float = 0.04
    teacher_temp_end: float = 0.07
    teacher_temp_warmup_frac: float = 0.3
    center_momentum: float = 0.9
    centering: str = "center"  # "center" | "sinkhorn"
    ema_momentum_start: float = 0.994  # teacher-head EMA (teacher_heads="ema")
    ema_momentum_end: float = 1.0
    use_dino: bool = True
    use_ibot: bool = True
    use_clip: bool = True
    min_temperature: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        self.caption_sources = tuple(self.caption_sources)
        self.caption_probs = tuple(float(p) for p in self.caption_probs)
        check_choice("teacher_heads", self.teacher_heads, TEACHER_HEADS)
        check_shared_fields(self)
        if not (self.use_clip or self.use_dino or self.use_ibot):
            raise ValueError("every loss term is disabled")


def _hf_model(model: Any) -> Tipsv2Model:
    """Accept a ``Tipsv2Model`` or a ``tipsv2_sdk.TipsV2`` wrapper."""
    return model.hf_model if hasattr(model, "hf_model") else model


class DistillObjective(nn.Module):
    """Frozen teacher -> student distillation with the TipsV2Objective interface.

    ``state_dict()`` holds the student (``model.*``), heads, teacher heads and centres but not the
    frozen teacher (reload it from its source); ``load_state_dict`` accepts that absence.
    """

    def __init__(self, student: Tipsv2Model, teacher: Tipsv2Model, cfg: DistillConfig, total_steps: int):
        super().__init__()
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        self.model = _hf_model(student)
        self.teacher = _hf_model(teacher).eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.cfg, self.total_steps = cfg, int(total_steps)
        self.patch = patch_size(self.model)
        if patch_size(self.teacher) != self.patch:
            raise ValueError(f"teacher patch size {patch_size(self.teacher)} != student patch size {self.patch}: "
                             "their patch grids must match for the patch loss")
        self.prefix, self.teacher_prefix = num_prefix_tokens(self.model), num_prefix_tokens(self.teacher)
        s_width = int(self.model.config.vision_config.hidden_size)
        t_width = int(self.teacher.config.vision_config.hidden_size)
        self.heads: TipsHeads | None = None
        self.teacher_heads: TipsHeads | None = None
        if cfg.use_dino or cfg.use_ibot:
            self.heads = TipsHeads(t_width, cfg.head_prototypes, cfg.head_hidden, cfg.head_bottleneck,
                                   n_layers=cfg.head_layers, shared=cfg.shared_head, use_cls=cfg.use_dino,
                                   use_patch=cfg.use_ibot, proj_from=s_width)
            self.teacher_heads = frozen_copy(self.heads)
            for head in (self.teacher_heads.cls, self.teacher_heads.patch):
                if head is not None:
                    head.in_proj = None  # the teacher's tokens already have the teacher width
        self.clip_loss = ContrastiveLoss(cfg.min_temperature)
        self.dino_loss = (DINOLoss(cfg.head_prototypes, cfg.student_temp, cfg.center_momentum, cfg.centering)
                          if cfg.use_dino else None)
        self.ibot_loss = (IBOTPatchLoss(cfg.head_prototypes, cfg.student_temp, cfg.center_momentum, all_tokens=True,
                                        centering=cfg.centering)
                          if cfg.use_ibot else None)
        self.register_state_dict_post_hook(_drop_teacher_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    def train(self, mode: bool = True) -> DistillObjective:
        """Switch the student; the frozen teacher always stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    @torch.no_grad()
    def load_teacher_heads(self, state: dict[str, torch.Tensor], prefix: str = "teacher_heads.") -> None:
        """Start the teacher heads and the student heads' cores from trained heads (e.g. the
        ``teacher_heads.*`` of a ``TipsV2Objective`` checkpoint of the teacher)."""
        if self.teacher_heads is None:
            raise RuntimeError("no heads to load: the CLS and patch terms are both disabled")
        heads = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        self.teacher_heads.load_state_dict(heads)
        missing = self.heads.load_state_dict(heads, strict=False)
        unexpected = [k for k in missing.missing_keys if ".in_proj." not in k]
        if unexpected or missing.unexpected_keys:
            raise ValueError(f"head state does not match the student heads: {unexpected or missing.unexpected_keys}")

    def teacher_temp(self, step: int) -> float:
        c = self.cfg
        return teacher_temperature(step, self.total_steps, c.teacher_temp_start, c.teacher_temp_end,
                                   c.teacher_temp_warmup_frac)

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> ObjectiveOutput:
        cfg = self.cfg
        vision = self.model.vision_model
        images, local, n_local = split_crops(batch)
        tau_t = self.teacher_temp(step)
        values: dict[str, torch.Tensor | float] = {"teacher_temp": tau_t}
        total = images.new_zeros((), dtype=torch.float32)

        with torch.no_grad():
            teacher = self.teacher.vision_model(pixel_values=images).last_hidden_state.detach()
        full = vision(pixel_values=images).last_hidden_state
        if teacher.shape[1] - self.teacher_prefix != full.shape[1] - self.prefix:
            raise ValueError(f"teacher and student patch grids differ ({teacher.shape[1] - self.teacher_prefix} "
                             f"vs {full.shape[1] - self.prefix} tokens)")
        if cfg.use_clip:
            total = total + cfg.clip_weight * contrastive_terms(self.model, self.clip_loss, full, batch, values)
        if cfg.use_dino:
            with torch.no_grad():
                t_logits = self.teacher_heads.cls_head()(teacher[:, 0])
            probs = self.dino_loss.teacher_probs(t_logits, tau_t)
            student_cls = [full[:, 0]] if cfg.dino_on_global or n_local == 0 else []
            if n_local > 0:
                student_cls.append(vision(pixel_values=local.flatten(0, 1)).pooler_output)
            crops = torch.cat([c.view(images.shape[0], -1, c.shape[-1]) for c in student_cls], dim=1)
            dino = self.dino_loss(self.heads.cls_head()(crops), probs)
            total = total + cfg.dino_weight * dino
            values.update(dino=dino, dino_teacher_entropy=mean_entropy(probs))
            if self.training:
                self.dino_loss.update_center(t_logits)
        if cfg.use_ibot:
            if cfg.mask_ratio > 0:
                size = images.shape[-2:]
                grid = (int(size[0]) // self.patch, int(size[1]) // self.patch)
                mask = example_masks(batch, step, cfg.seed, grid, cfg.mask_ratio, cfg.mask_mode)
                student = vision(pixel_values=images, bool_masked_pos=mask).last_hidden_state
            else:
                student = full
                mask = torch.zeros(full.shape[0], full.shape[1] - self.prefix, dtype=torch.bool, device=full.device)
            with torch.no_grad():
                t_patch = self.teacher_heads.patch_head()(teacher[:, self.teacher_prefix:])
            probs = self.ibot_loss.teacher_probs(t_patch, tau_t, mask)
            ibot = self.ibot_loss(self.heads.patch_head()(student[:, self.prefix:]), probs, mask)
            total = total + cfg.ibot_weight * ibot
            values.update(ibot=ibot, ibot_teacher_entropy=mean_entropy(probs), mask_ratio=mask.float().mean())
            if self.training:
                self.ibot_loss.update_center(t_patch, mask)
        values["loss"] = total
        return ObjectiveOutput(loss=total, terms=pack_terms(values))

    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """Head EMA (``teacher_heads="ema"``): returns the momentum; ``"frozen"``: nothing, 0.0."""
        if self.cfg.teacher_heads == "frozen" or self.teacher_heads is None:
            return 0.0
        m = ema_momentum(step, self.total_steps, self.cfg.ema_momentum_start, self.cfg.ema_momentum_end)
        ema_update(self.teacher_heads, self.heads, m, skip=("in_proj",))
        return m

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Trainable parameters (student and its heads; never the teacher) split by weight decay."""
        return decay_groups(list(self.named_parameters()), weight_decay)


def _drop_teacher_keys(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state if k.startswith(prefix + TEACHER_PREFIX)]:
        del state[key]


def _ignore_missing_teacher_keys(module: nn.Module, incompatible: Any) -> None:
    # keys of the frozen teacher, also when this module is nested (e.g. "module.teacher.…" under DDP)
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not (k.startswith(TEACHER_PREFIX) or f".{TEACHER_PREFIX}" in k)]
