"""Optimizer, learning-rate / weight-decay schedules and gradient clipping.

The schedules are pure functions of the step, so a resumed run needs only the step number and the
optimizer state to continue exactly: LR = linear warm-up to ``lr`` then cosine to ``min_lr``;
weight decay = cosine from ``weight_decay`` to ``weight_decay_end`` (DINOv2-style), applied to the
groups the objective marks as decayed (``weight_decay > 0``).
"""
from __future__ import annotations

import contextlib
import math

import torch

from .config import OptimConfig


def cosine(start: float, end: float, progress: float) -> float:
    """Cosine interpolation from ``start`` (progress 0) to ``end`` (progress 1)."""
    progress = min(max(progress, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def learning_rate(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """LR at ``step``: linear warm-up over ``warmup_steps``, then cosine decay to ``min_lr``."""
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    span = max(total_steps - warmup - 1, 1)
    return cosine(cfg.lr, cfg.min_lr, (step - warmup) / span)


def weight_decay(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Weight decay at ``step`` (cosine from ``weight_decay`` to ``weight_decay_end``)."""
    return cosine(cfg.weight_decay, cfg.weight_decay_end, step / max(total_steps - 1, 1))


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW or Adafactor over the objective's parameter groups.

    Each group remembers whether it is decayed (``decayed``) so the schedule can set its weight
    decay every step. ``foreach=False`` keeps the update order (and hence rounding) identical
    between a straight run and a resumed one.
    """
    groups = [dict(g) for g in groups if any(p.requires_grad for p in g["params"])]
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
        g["decayed"] = float(g.get("weight_decay", 0.0)) > 0.0
        g["weight_decay"] = cfg.weight_decay if g["decayed"] else 0.0
    if not groups:
        raise ValueError("the objective has no trainable parameters")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, foreach=False)
    if cfg.name == "adafactor":
        if not hasattr(torch.optim, "Adafactor"):
            raise RuntimeError("optim.name='adafactor' needs torch >= 2.5 (torch.optim.Adafactor)")
        return torch.optim.Adafactor(groups, lr=cfg.lr, beta2_decay=cfg.adafactor_beta2_decay, foreach=False)
    raise ValueError(f"unknown optimizer {cfg.name!r}; expected 'adamw' or 'adafactor'")


def apply_schedules(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int, total_steps: int) -> tuple[float, float]:
    """Set this step's LR and weight decay on every group; returns ``(lr, wd)``."""
    lr = learning_rate(cfg, step, total_steps)
    wd = weight_decay(cfg, step, total_steps)
    for g in optimizer.param_groups:
        g["lr"] = lr
        g["weight_decay"] = wd if g.get("decayed", True) else 0.0
    return lr, wd


def clip_gradients(parameters, max_norm: float | None) -> float:
    """Clip the global gradient norm (if ``max_norm``) and return the norm before clipping.

    Handles a mix of sharded (FSDP DTensor) and plain gradients: each shard's norm is reduced to
    the full tensor's norm before the global norm is formed.
    """
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return 0.0
    if not any(hasattr(p.grad, "full_tensor") for p in params):
        if max_norm:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=False))
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params])))
    norms = []
    for p in params:
        n = torch.linalg.vector_norm(p.grad.detach())
        norms.append(n.full_tensor() if hasattr(n, "full_tensor") else n)
    total = torch.linalg.vector_norm(torch.stack(norms))
    if max_norm:
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for p in params:
            p.grad.detach().mul_(coef.to(p.grad.device) if not hasattr(p.grad, "full_tensor") else float(coef))
    return float(total)


def autocast(enabled: bool, device: torch.device):
    """bf16 autocast on devices that support it; a no-op otherwise."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


__all__ = ["learning_rate", "weight_decay", "build_optimizer", "apply_schedules", "clip_gradients", "autocast", "cosine"]
