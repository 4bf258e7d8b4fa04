"""The TIPSv2 pre-training objective around a transformers ``Tipsv2Model``.

    L = clip_weight · (L_CLIP(CLS1, alt-text) + L_CLIP(CLS2, synthetic caption))
        + α · L_DINO + β · L_iBOT++ (+ γ · L_KoLeo)

with clip_weight = ½, α = 1, β = 2, γ = 0 by default. Per step and image:

1. the student encoder sees the full global view with gradient: its CLS1 / CLS2 feed the two
   contrastive terms (the paper does not say which view feeds CLIP; ``clip_on_masked_view``
   switches to the masked one, saving a forward pass);
2. teacher tokens of the full view: with ``teacher="head_ema"`` (TIPSv2) they are the same
   encoder pass, detached (no encoder copy exists); with ``"full_ema"`` an EMA copy of the image
   encoder computes them under ``torch.no_grad``. The EMA heads turn them into targets;
3. the student sees the masked global view (``bool_masked_pos``): its patch tokens go through the
   student patch head against the teacher patch targets (iBOT++: every token; iBOT: masked only);
4. the student sees the ``M`` local crops: their CLS1 go through the student CLS head against the
   teacher's global-view CLS1 target (DINO). With ``M = 0`` the masked global view's CLS1 is used.

Masks depend only on ``(seed, step, example index)``: identical on resume and for any number of
ranks. DINO / iBOT centres are updated in ``forward`` while the module is in training mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from . import distributed
from .ema import ema_update, frozen_copy
from .heads import TipsHeads
from .losses import ContrastiveLoss, DINOLoss, IBOTPatchLoss, KoLeoLoss
from .losses.dino import CENTERINGS
from .masking import MASK_MODES, MaskGenerator, example_seed
from .schedules import ema_momentum, teacher_temperature

if TYPE_CHECKING:
    from transformers import Tipsv2Model

TEACHERS = ("head_ema", "full_ema")
# Parameters kept out of weight decay besides every bias / norm / scalar (ndim <= 1).
NO_DECAY_NAMES = ("position_embeddings", "cls_token", "register_tokens", "mask_token", "temperature")


def split_crops(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The global crops (B, 3, G, G), the local crops (B, M, 3, L, L) or None, and M."""
    local = batch.get("local_crops")
    n_local = int(local.shape[1]) if local is not None and local.ndim == 5 else 0
    return batch["global_crops"], local, n_local


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Refuse a config value outside ``allowed``, naming the field and the choices."""
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r} (expected one of {', '.join(allowed)})")


def check_shared_fields(cfg: Any) -> None:
    """Checks common to the pre-training and distillation configs (masking, centering, captions, weights)."""
    check_choice("mask_mode", cfg.mask_mode, MASK_MODES)
    check_choice("centering", cfg.centering, CENTERINGS)
    if len(cfg.caption_sources) != len(cfg.caption_probs):
        raise ValueError("caption_sources and caption_probs must have the same length")
    for f in fields(cfg):
        if f.name.endswith("_weight") and getattr(cfg, f.name) < 0:
            raise ValueError(f"{f.name} must be >= 0, got {getattr(cfg, f.name)}")


@dataclass
class ObjectiveConfig:
    """Every knob of the objective. Defaults are the TIPSv2 paper's where it states them."""

    clip_weight: float = 0.5  # weight of EACH CLS contrastive term: ½·(L_CLIP(CLS1) + L_CLIP(CLS2))
    dino_weight: float = 1.0  # α, CLS self-distillation (teacher: global view, student: local crops)
    ibot_weight: float = 2.0  # β, patch self-distillation
    koleo_weight: float = 0.0  # KoLeo on the student's full-view CLS1 (not used by the paper)
    ibot_all_tokens: bool = True  # True = iBOT++ (every patch token), False = original iBOT (masked only)
    multi_granularity: bool = True  # CLS2 caption drawn among caption_sources; False = always the first
    # listed source the example has (the single-synthetic-caption setting of TIPS v1: PaliGemma-like "short")
    caption_sources: tuple[str, ...] = ("short", "long")  # synthetic caption keys (PaliGemma-like, Gemini-like)
    caption_probs: tuple[float, ...] = (0.5, 0.5)  # draw probabilities of caption_sources (not stated: 50/50)
    teacher: str = "head_ema"  # "head_ema" (TIPSv2: EMA heads, shared encoder) | "full_ema" (EMA encoder + heads)
    head_prototypes: int = 65536  # K, prototypes per head (use a few hundred for tiny models)
    head_hidden: int = 2048  # hidden width of the head MLP
    head_bottleneck: int = 256  # bottleneck width before the prototypes
    head_layers: int = 3  # linear layers in the head MLP
    shared_head: bool = False  # one head for CLS and patch tokens (iBOT's shared_head)
    student_temp: float = 0.1  # τ_s
    teacher_temp_start: float = 0.04  # τ_t at step 0
    teacher_temp_end: float = 0.07  # τ_t after the warm-up
    teacher_temp_warmup_frac: float = 0.3  # fraction of the steps over which τ_t warms up linearly
    center_momentum: float = 0.9  # EMA momentum of the DINO and iBOT centres
    centering: str = "center"  # teacher normalisation: "center" (paper) | "sinkhorn" (Sinkhorn-Knopp, DINOv2 ViT-g)
    ema_momentum_start: float = 0.994  # teacher-head EMA momentum at step 0 (paper: not stated)
    ema_momentum_end: float = 1.0  # ... at the last step (cosine schedule)
    mask_ratio: float = 0.75  # fraction of patches masked in the student's global view
    mask_mode: str = "random"  # "random" | "block"
    use_dino: bool = True  # include the DINO CLS term
    use_ibot: bool = True  # include the iBOT / iBOT++ patch term
    use_clip: bool = True  # include the two contrastive terms
    clip_on_masked_view: bool = False  # contrastive terms on the masked view (one fewer encoder pass)
    min_temperature: float = 1e-4  # lower clamp of the learned contrastive temperature
    seed: int = 0  # seeds masks (and caption draws via the trainer)

    def __post_init__(self) -> None:
        # YAML gives lists; keep tuples so configs compare and hash the same way.
        self.caption_sources = tuple(self.caption_sources)
        self.caption_probs = tuple(float(p) for p in self.caption_probs)
        check_choice("teacher", self.teacher, TEACHERS)
        check_shared_fields(self)
        if not (self.use_clip or self.use_dino or self.use_ibot or self.koleo_weight > 0):
            raise ValueError("every loss term is disabled")


@dataclass
class ObjectiveOutput:
    """The differentiable total loss and python floats for logging."""

    loss: torch.Tensor
    terms: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- helpers
def num_prefix_tokens(model: Tipsv2Model) -> int:
    """CLS1 plus the register token(s) TIPS uses as CLS2."""
    return 1 + int(model.config.vision_config.num_register_tokens)


def patch_size(model: Tipsv2Model) -> int:
    size = model.config.vision_config.patch_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def example_masks(batch: dict[str, torch.Tensor], step: int, seed: int, grid: tuple[int, int],
                  ratio: float, mode: str) -> torch.Tensor:
    """(B, N) bool masks, each a function of ``(seed, step, batch["index"][i])`` only.

    Without an ``index`` entry the example's global position ``rank · B + i`` is used.
    """
    images = batch["global_crops"]
    if "index" in batch:
        indices = batch["index"].tolist()
    else:
        start = distributed.rank() * images.shape[0]
        indices = list(range(start, start + images.shape[0]))
    generator = MaskGenerator(grid, ratio, mode)
    return generator.for_examples([example_seed(seed, step, i) for i in indices]).to(images.device)


def contrastive_terms(model: Tipsv2Model, loss: ContrastiveLoss, tokens: torch.Tensor,
                      batch: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_CLIP(CLS1, alt-text) + L_CLIP(CLS2, caption) from image ``tokens`` (B, 2+N, D).

    Both terms and the temperature are logged into ``values`` (``clip_cls1``, ``clip_cls2``).
    """
    alt = model.text_model(input_ids=batch["alt_input_ids"], attention_mask=batch["alt_attention_mask"])
    cap = model.text_model(input_ids=batch["caption_input_ids"], attention_mask=batch["caption_attention_mask"])
    clip1 = loss(tokens[:, 0], alt.pooler_output, model.temperature)
    clip2 = loss(tokens[:, 1], cap.pooler_output, model.temperature)
    values.update(clip_cls1=clip1, clip_cls2=clip2, temperature=model.temperature)
    return clip1 + clip2


def decay_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict]:
    """AdamW groups: no decay on biases, norms, scalars, tokens, position embeddings, temperature.

    Each group carries ``wd_scale`` (1 or 0) so a weight-decay schedule can set
    ``group["weight_decay"] = wd(step) * group["wd_scale"]``. Prototypes are decayed (DINO does):
    their rows are normalised in the forward pass, so decay only changes their effective step size.
    """
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        skip = param.ndim <= 1 or name.endswith(".bias") or any(k in name for k in NO_DECAY_NAMES)
        (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "wd_scale": 1.0, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "wd_scale": 0.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def mean_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean entropy (nats) of teacher distributions: ln K = collapse to uniform, 0 = one-hot."""
    return -(probs * torch.log(probs.clamp(min=1e-12))).sum(-1).mean()


def marginal_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the teacher distributions averaged over samples/tokens: near 0 = every target on the
    same prototype (the other collapse), ln K = targets spread over all prototypes."""
    return mean_entropy(probs.reshape(-1, probs.shape[-1]).mean(0))


def pack_terms(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Tensors -> python floats with a single device sync."""
    keys = [k for k, v in values.items() if isinstance(v, torch.Tensor)]
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    if keys:
        out.update(zip(keys, torch.stack([values[k].detach().float().reshape(()) for k in keys]).tolist()))
    return out


# -------------------------------------------------------------------------------------- objective
class TipsV2Objective(nn.Module):
    """Student model + heads + teacher (EMA heads, optionally EMA encoder) + loss modules.

    ``state_dict()`` holds everything needed to resume: ``model.*`` (the student
    ``Tipsv2Model``), ``heads.*``, ``teacher_heads.*``, ``teacher_encoder.*`` (full EMA only) and
    the ``*_loss.center`` buffers; all plain, unshared tensors (safetensors-compatible).
    """

    def __init__(self, model: Tipsv2Model, cfg: ObjectiveConfig, total_steps: int):
        super().__init__()
        if total_steps <= 0:
            raise ValueError(f"total_steps must be > 0, got {total_steps}")
        self.model = model
        self.cfg = cfg
        self.total_steps = int(total_steps)
        self.prefix = num_prefix_tokens(model)
        self.patch = patch_size(model)
        width = int(model.config.vision_config.hidden_size)
        self.heads: TipsHeads | None = None
        self.teacher_heads: TipsHeads | None = None
        self.teacher_encoder: nn.Module | None = None
        if cfg.use_dino or cfg.use_ibot:
            self.heads = TipsHeads(width, cfg.head_prototypes, cfg.head_hidden, cfg.head_bottleneck,
                                   n_layers=cfg.head_layers, shared=cfg.shared_head,
                                   use_cls=cfg.use_dino, use_patch=cfg.use_ibot)
            self.teacher_heads = frozen_copy(self.heads)
            if cfg.teacher == "full_ema":
                self.teacher_encoder = frozen_copy(model.vision_model)
        self.clip_loss = ContrastiveLoss(cfg.min_temperature)
        self.dino_loss = (DINOLoss(cfg.head_prototypes, cfg.student_temp, cfg.center_momentum, cfg.centering)
                          if cfg.use_dino else None)
        self.ibot_loss = (IBOTPatchLoss(cfg.head_prototypes, cfg.student_temp, cfg.center_momentum,
                                        all_tokens=cfg.ibot_all_tokens, centering=cfg.centering)
                          if cfg.use_ibot else None)
        self.koleo_loss = KoLeoLoss() if cfg.koleo_weight > 0 else None

    def train(self, mode: bool = True) -> TipsV2Objective:
        """Switch the student; an EMA encoder copy stays in eval mode (deterministic targets)."""
        super().train(mode)
        if self.teacher_encoder is not None:
            self.teacher_encoder.eval()
        return self

    # ------------------------------------------------------------------ schedules
    def teacher_temp(self, step: int) -> float:
        c = self.cfg
        return teacher_temperature(step, self.total_steps, c.teacher_temp_start, c.teacher_temp_end,
                                   c.teacher_temp_warmup_frac)

    def momentum(self, step: int) -> float:
        return ema_momentum(step, self.total_steps, self.cfg.ema_momentum_start, self.cfg.ema_momentum_end)

    # ------------------------------------------------------------------ forward
    def masks(self, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        """The student's (B, N) patch mask for this batch and step."""
        size = batch["global_crops"].shape[-2:]
        grid = (int(size[0]) // self.patch, int(size[1]) // self.patch)
        return example_masks(batch, step, self.cfg.seed, grid, self.cfg.mask_ratio, self.cfg.mask_mode)

    def teacher_tokens(self, images: torch.Tensor, full_tokens: torch.Tensor | None) -> torch.Tensor:
        """Teacher tokens of the full view, without gradient."""
        if self.teacher_encoder is not None:
            with torch.no_grad():
                return self.teacher_encoder(pixel_values=images).last_hidden_state.detach()
        if full_tokens is None:  # head_ema without a gradient-carrying full pass
            with torch.no_grad():
                return self.model.vision_model(pixel_values=images).last_hidden_state.detach()
        return full_tokens.detach()  # head_ema: the student's own pass, stop-gradient

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> ObjectiveOutput:
        cfg = self.cfg
        vision = self.model.vision_model
        images, local, n_local = split_crops(batch)
        tau_t = self.teacher_temp(step)
        self_distill = cfg.use_dino or cfg.use_ibot
        values: dict[str, torch.Tensor | float] = {"teacher_temp": tau_t}
        total = images.new_zeros((), dtype=torch.float32)

        # 1. full view with gradient (contrastive terms, KoLeo)
        full_needed = (cfg.use_clip and not cfg.clip_on_masked_view) or self.koleo_loss is not None
        full = vision(pixel_values=images).last_hidden_state if full_needed else None
        # 2. masked view
        mask = masked = None
        if cfg.use_ibot or (cfg.use_dino and n_local == 0) or (cfg.use_clip and cfg.clip_on_masked_view):
            mask = self.masks(batch, step)
            masked = vision(pixel_values=images, bool_masked_pos=mask).last_hidden_state
            values["mask_ratio"] = mask.float().mean()
        teacher = self.teacher_tokens(images, full) if self_distill else None

        if cfg.use_clip:
            tokens = masked if cfg.clip_on_masked_view else full
            total = total + cfg.clip_weight * contrastive_terms(self.model, self.clip_loss, tokens, batch, values)
        if cfg.use_dino:
            with torch.no_grad():
                t_logits = self.teacher_heads.cls_head()(teacher[:, 0])
            probs = self.dino_loss.teacher_probs(t_logits, tau_t)
            if n_local > 0:
                local_cls = vision(pixel_values=local.flatten(0, 1)).pooler_output
                s_logits = self.heads.cls_head()(local_cls).view(images.shape[0], n_local, -1)
            else:
                s_logits = self.heads.cls_head()(masked[:, 0]).unsqueeze(1)
            dino = self.dino_loss(s_logits, probs)
            total = total + cfg.dino_weight * dino
            values.update(dino=dino, dino_teacher_entropy=mean_entropy(probs),
                          dino_teacher_marginal_entropy=marginal_entropy(probs))
            if self.training:
                self.dino_loss.update_center(t_logits)
        if cfg.use_ibot:
            with torch.no_grad():
                t_patch = self.teacher_heads.patch_head()(teacher[:, self.prefix:])
            probs = self.ibot_loss.teacher_probs(t_patch, tau_t, mask)
            s_patch = self.heads.patch_head()(masked[:, self.prefix:])
            ibot = self.ibot_loss(s_patch, probs, mask)
            total = total + cfg.ibot_weight * ibot
            values.update(ibot=ibot, ibot_teacher_entropy=mean_entropy(probs),
                          ibot_teacher_marginal_entropy=marginal_entropy(probs))
            if self.training:
                self.ibot_loss.update_center(t_patch, mask)
        if self.koleo_loss is not None:
            koleo = self.koleo_loss(full[:, 0])
            total = total + cfg.koleo_weight * koleo
            values["koleo"] = koleo
        values["loss"] = total
        return ObjectiveOutput(loss=total, terms=pack_terms(values))

    # ------------------------------------------------------------------ training helpers
    @torch.no_grad()
    def update_teacher(self, step: int) -> float:
        """EMA of the student heads (and encoder for ``full_ema``); call after ``optimizer.step()``."""
        m = self.momentum(step)
        if self.teacher_heads is not None:
            ema_update(self.teacher_heads, self.heads, m)
        if self.teacher_encoder is not None:
            ema_update(self.teacher_encoder, self.model.vision_model, m)
        return m

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Trainable parameters (student model and heads) split by weight decay."""
        return decay_groups(list(self.named_parameters()), weight_decay)
