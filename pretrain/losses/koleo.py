"""KoLeo regulariser (Kozachenko-Leonenko entropy estimate), as used by DINOv2. Off by default."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    r"""Spread the L2-normalised features of a batch apart.

    .. math:: L = -\frac1B \sum_{i=1}^{B} \log\big(\lVert \hat x_i - \hat x_{n(i)} \rVert_2 + \varepsilon\big),
              \qquad n(i) = \arg\max_{j \ne i} \hat x_i^\top \hat x_j

    computed on the local batch (as DINOv2 does). Needs at least two rows.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features``: (B, D) with B >= 2."""
        if features.shape[0] < 2:
            raise ValueError(f"KoLeo needs at least 2 rows per batch, got {features.shape[0]}")
        x = F.normalize(features.float(), dim=-1)
        with torch.no_grad():
            sims = x @ x.t()
            sims.fill_diagonal_(-float("inf"))
            neighbour = sims.argmax(dim=1)
        # clamp before the square root: identical rows would otherwise give a NaN gradient
        distance = (x - x[neighbour]).pow(2).sum(-1).clamp(min=1e-12).sqrt()
        return -torch.log(distance + self.eps).mean()
