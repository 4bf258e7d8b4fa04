"""Step-indexed schedules (pure functions of the step, so a resumed run sees the same values).

* learning rate and weight decay: linear warm-up then half-cosine (``warmup_cosine``);
* teacher temperature: linear warm-up 0.04 -> 0.07 then constant (DINO / iBOT);
* EMA momentum: half-cosine 0.994 -> 1.0 over training. The TIPSv2 paper does not state its
  (head) EMA momentum; 0.994 is DINOv2's ViT-g value.
"""
from __future__ import annotations

import math


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` (step 0) to ``end`` (step >= total_steps)."""
    if total_steps <= 0:
        return float(end)
    t = min(max(step / total_steps, 0.0), 1.0)
    return float(end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t)))


def warmup_cosine(
    step: int, total_steps: int, base: float, final: float, warmup_steps: int = 0, warmup_start: float = 0.0
) -> float:
    """Linear warm-up from ``warmup_start`` to ``base`` over ``warmup_steps``, then cosine to ``final``."""
    if warmup_steps > 0 and step < warmup_steps:
        return float(warmup_start + (base - warmup_start) * step / warmup_steps)
    return cosine(step - warmup_steps, total_steps - warmup_steps, base, final)


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear from ``start`` to ``end`` over ``warmup_steps``, then constant ``end``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * max(step, 0) / warmup_steps)


def teacher_temperature(step: int, total_steps: int, start: float, end: float, warmup_frac: float) -> float:
    """Teacher sharpening temperature: warm-up over the first ``warmup_frac`` of training."""
    return linear_warmup(step, int(round(warmup_frac * total_steps)), start, end)


def ema_momentum(step: int, total_steps: int, start: float, end: float) -> float:
    """EMA momentum, cosine from ``start`` to ``end`` (1.0 = teacher frozen at the end)."""
    return cosine(step, total_steps, start, end)
