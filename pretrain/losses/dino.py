"""DINO self-distillation loss on the CLS token (teacher: global view, student: local crops)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from .sinkhorn import sinkhorn_knopp

CENTERINGS = ("center", "sinkhorn")


class DINOLoss(nn.Module):
    r"""Cross-entropy between the centred, sharpened teacher distribution and the student's.

    TIPSv2: :math:`L_{DINO} = -\sum_{i=1}^{M} h_t(f_t(I))^\top \log h_s(f_s(I_i))` with the teacher
    on the global view :math:`I` and the student on :math:`M` local crops :math:`I_i`, where

    .. math::
        p_t = \mathrm{softmax}\big((z_t - c)/\tau_t\big), \qquad
        \log p_s = \mathrm{log\_softmax}(z_s/\tau_s)

    and the centre follows :math:`c \leftarrow m\,c + (1-m)\,\overline{z_t}` (batch mean over all
    ranks). The sum over crops is averaged (divided by ``M``) and the loss is averaged over the
    batch, as DINO / DINOv2 normalise it, so α does not depend on the number of crops.
    ``centering="sinkhorn"`` replaces centre + softmax by Sinkhorn-Knopp (see ``sinkhorn.py``).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center"):
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"unknown centering {centering!r} (expected one of {', '.join(CENTERINGS)})")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = centering
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def teacher_probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """(B, K) teacher logits -> centred, sharpened probabilities (no gradient)."""
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(teacher_logits, teacher_temp)
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
        """``student_logits``: (B, M, K); ``teacher_probs``: (B, K). Returns the mean cross-entropy."""
        log_p = F.log_softmax(student_logits.float() / self.student_temp, dim=-1)
        return -(teacher_probs.unsqueeze(1) * log_p).sum(-1).mean()

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor) -> None:
        """EMA of the batch-mean teacher logits, synchronised across ranks (unused by Sinkhorn)."""
        if self.centering == "sinkhorn":
            return
        batch_center = distributed.all_reduce_mean(teacher_logits.float().mean(0, keepdim=True))
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
