"""iBOT masked-image patch loss and its TIPSv2 variant iBOT++ (loss on every patch token)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from .dino import CENTERINGS
from .sinkhorn import sinkhorn_knopp


class IBOTPatchLoss(nn.Module):
    r"""Patch-level self-distillation: teacher on the full view, student on the masked view.

    Per image, with teacher patch distributions :math:`p_t^{(i)} = \mathrm{softmax}((z_t^{(i)} -
    c)/\tau_t)` and student :math:`\log p_s^{(i)} = \mathrm{log\_softmax}(z_s^{(i)}/\tau_s)` for
    the :math:`N` patch tokens and mask indicators :math:`m_i`:

    * iBOT (``all_tokens=False``): :math:`L = -\frac{1}{\sum_i m_i}\sum_{i=1}^{N} m_i\,
      p_t^{(i)\top}\log p_s^{(i)}` (masked tokens only);
    * iBOT++ (``all_tokens=True``, TIPSv2 Eq. 3): :math:`L = -\frac1N\sum_{i=1}^{N}
      p_t^{(i)\top}\log p_s^{(i)}` — the mask indicator is dropped, every token (visible and
      masked) has the same weight. With :math:`r` the masked fraction this is
      :math:`r\,L_{masked} + (1-r)\,L_{visible}`.

    The result is averaged over images (an image without masked tokens contributes 0 to iBOT).
    The centre :math:`c` is the EMA (momentum 0.9) of the mean teacher logits over the tokens
    the loss uses, synchronised across ranks. ``centering="sinkhorn"`` replaces centre + softmax
    by Sinkhorn-Knopp over the tokens the loss uses (see ``sinkhorn.py``).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 all_tokens: bool = True, centering: str = "center"):
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"unknown centering {centering!r} (expected one of {', '.join(CENTERINGS)})")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.all_tokens = all_tokens
        self.centering = centering
        self.register_buffer("center", torch.zeros(1, 1, out_dim))

    @torch.no_grad()
    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, K) teacher logits -> centred, sharpened probabilities (no gradient).

        ``mask`` (B, N) selects the tokens Sinkhorn-Knopp balances for original iBOT (the masked
        ones); the other tokens then get plain softmax targets, which the loss weights by 0.
        """
        if self.centering == "center":
            return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)
        if self.all_tokens or mask is None:
            flat = teacher_logits.reshape(-1, teacher_logits.shape[-1])
            return sinkhorn_knopp(flat, teacher_temp).view(teacher_logits.shape)
        probs = F.softmax(teacher_logits.float() / teacher_temp, dim=-1)
        probs[mask] = sinkhorn_knopp(teacher_logits[mask], teacher_temp)
        return probs

    def token_weights(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) per-token weights: 1/N everywhere (iBOT++) or 1/#masked on masked tokens (iBOT)."""
        if self.all_tokens:
            return torch.full(mask.shape, 1.0 / mask.shape[1], device=mask.device)
        masked = mask.float()
        return masked / masked.sum(1, keepdim=True).clamp(min=1.0)

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``student_logits``, ``teacher_probs``: (B, N, K); ``mask``: (B, N) bool (True = masked)."""
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        cross_entropy = -(teacher_probs * log_p).sum(-1)  # (B, N)
        return (cross_entropy * self.token_weights(mask)).sum(1).mean()

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor, mask: torch.Tensor) -> None:
        """EMA of the mean teacher logits over the tokens the loss uses (all ranks; unused by Sinkhorn)."""
        if self.centering == "sinkhorn":
            return
        used = torch.ones_like(mask) if self.all_tokens else mask
        weights = used.float().unsqueeze(-1)
        total = (teacher_logits.float() * weights).sum((0, 1), keepdim=True)
        count = weights.sum().reshape(1, 1, 1)
        # ratio of the rank means == ratio of the global sums (counts may differ per rank)
        total, count = distributed.all_reduce_mean(total), distributed.all_reduce_mean(count)
        if float(count) == 0.0:
            return
        self.center.mul_(self.center_momentum).add_(total / count, alpha=1.0 - self.center_momentum)
