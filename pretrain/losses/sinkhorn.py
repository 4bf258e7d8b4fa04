"""Sinkhorn-Knopp teacher normalisation, the alternative to centering (SwAV, DINOv2 ViT-g)."""
from __future__ import annotations

import torch

from .. import distributed


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, teacher_temp: float, iterations: int = 3) -> torch.Tensor:
    r"""Teacher probabilities with equipartition over the prototypes, for (R, K) logits.

    Starting from :math:`Q = \exp(z/\tau_t)^\top` (K x R over the *global* set of rows R of all
    ranks), alternately normalise every prototype row to total mass 1/K and every sample column
    to 1/R; finally scale so each sample's distribution sums to 1. Unlike centering, this keeps
    the targets informative when the teacher outputs are still nearly identical across samples
    (early training, small models), because the batch must spread over the prototypes.
    """
    logits = teacher_logits.float() / teacher_temp
    # a global shift cancels in the first normalisation; it only guards exp() against overflow
    q = torch.exp(logits - distributed.all_reduce_max(logits.max())).t()  # (K, R_local)
    prototypes = q.shape[0]
    rows = distributed.all_reduce_sum(torch.tensor(float(q.shape[1]), device=q.device))
    q /= distributed.all_reduce_sum(q.sum())
    for _ in range(iterations):
        # clamp: a prototype whose mass underflowed to 0 everywhere must not produce 0/0
        q /= distributed.all_reduce_sum(q.sum(dim=1, keepdim=True)).clamp(min=1e-30)
        q /= prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= rows
    return (q * rows).t()
