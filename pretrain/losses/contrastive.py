"""Symmetric image-text InfoNCE with a learned temperature (one term per CLS token)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed


class ContrastiveLoss(nn.Module):
    r"""CLIP loss between image embeddings ``x`` and text embeddings ``y`` of the same examples.

    With cosine similarities :math:`s_{ij} = \hat x_i^\top \hat y_j` over the *global* batch of
    :math:`B` pairs and the learned temperature :math:`\tau`:

    .. math::
        L = \tfrac12\Big[-\tfrac1B\sum_i \log\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
                        -\tfrac1B\sum_i \log\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ji}/\tau}}\Big]

    ``τ`` is ``Tipsv2Model.temperature`` itself (the model divides cosine logits by it; the
    checkpoints initialise it to ≈0.00507, i.e. a logit scale of ≈197). It is clamped from below
    at ``min_temperature`` so a large step cannot make it non-positive.

    Under ``torch.distributed`` each rank scores its local rows against the gathered columns of
    all ranks (labels offset by ``rank · B_local``) and gradients reach every rank's rows, so the
    mean of the per-rank losses equals the single-process loss on the concatenated batch.
    """

    def __init__(self, min_temperature: float = 1e-4):
        super().__init__()
        self.min_temperature = min_temperature

    def forward(self, image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
        """``image``, ``text``: (B_local, D) unnormalised; ``temperature``: scalar tensor."""
        image = F.normalize(image.float(), dim=-1)
        text = F.normalize(text.float(), dim=-1)
        all_image = distributed.all_gather_with_grad(image)
        all_text = distributed.all_gather_with_grad(text)
        tau = temperature.float().clamp(min=self.min_temperature)
        labels = torch.arange(image.shape[0], device=image.device) + distributed.rank() * image.shape[0]
        image_to_text = F.cross_entropy(image @ all_text.t() / tau, labels)
        text_to_image = F.cross_entropy(text @ all_image.t() / tau, labels)
        return 0.5 * (image_to_text + text_to_image)
