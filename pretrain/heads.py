"""DINO / iBOT projection heads with weight-normalised prototypes.

``DINOHead``: [optional input projection] -> MLP (in -> hidden -> hidden -> bottleneck, GELU) ->
L2-normalise -> cosine against ``K`` prototypes. The prototype rows are L2-normalised inside
``forward`` (weight normalisation with the gain fixed to 1, DINO's ``norm_last_layer``) instead
of torch's ``weight_norm`` parametrisation, so the state dict holds plain tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """Projection head producing (…, K) prototype logits from (…, in_dim) tokens."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        n_layers: int = 3,
        proj_from: int | None = None,
    ):
        """``proj_from``: width of the tokens actually fed in, when it differs from ``in_dim``
        (distillation students of another width); a linear projection maps it to ``in_dim``."""
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.in_proj = nn.Linear(proj_from, in_dim) if proj_from not in (None, in_dim) else None
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        self.reset_parameters()

    @property
    def out_dim(self) -> int:
        return self.prototypes.shape[0]

    def reset_parameters(self) -> None:
        """Truncated-normal(0.02) linear weights, zero biases (DINO's initialisation)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens if self.in_proj is None else self.in_proj(tokens)
        x = F.normalize(self.mlp(x), dim=-1)
        return x @ F.normalize(self.prototypes, dim=-1).t()


class TipsHeads(nn.Module):
    """The CLS (DINO) and patch (iBOT) heads; ``shared=True`` uses one module for both.

    A shared head is stored once (``patch`` is then absent from the state dict) so safetensors
    never sees two names for the same tensor.
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, shared: bool = False, use_cls: bool = True, use_patch: bool = True,
                 proj_from: int | None = None):
        super().__init__()
        self.shared = shared
        kwargs = dict(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim,
                      n_layers=n_layers, proj_from=proj_from)
        self.cls = DINOHead(**kwargs) if use_cls or (shared and use_patch) else None
        self.patch = DINOHead(**kwargs) if use_patch and not shared else None

    def cls_head(self) -> DINOHead:
        if self.cls is None:
            raise RuntimeError("this TipsHeads was built without a CLS head")
        return self.cls

    def patch_head(self) -> DINOHead:
        head = self.cls if self.shared else self.patch
        if head is None:
            raise RuntimeError("this TipsHeads was built without a patch head")
        return head
