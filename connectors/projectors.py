"""Vision-to-language projectors in the two module layouts that exist in the wild.

Projector types (the names LLaVA's ``mm_projector_type`` uses, plus one of ours):

* ``linear``: one ``Linear(vision_dim, lm_dim)``.
* ``mlp{N}x_gelu``: ``Linear(vision_dim, lm_dim)`` then ``N - 1`` times ``GELU, Linear(lm_dim, lm_dim)``;
  ``mlp2x_gelu`` is LLaVA-1.5's projector and HF Llava's ``LlavaMultiModalProjector``.
* ``identity``: no weights; the vision width must equal the language model's hidden size.
* ``<type>+cls`` (e.g. ``mlp2x_gelu+cls``): the kept CLS tokens (see ``feature_select``) get a
  projector of their own and enter the language model as extra tokens in front of the patch
  tokens. TIPSv2's CLS tokens are global, text-aligned summaries whose statistics differ from the
  patch tokens; a separate projector lets them carry that meaning instead of being squeezed
  through the patch projector.

Layouts:

* LLaVA (``build_llava_projector``): ``nn.Linear`` or ``nn.Sequential`` exactly as
  ``llava.model.multimodal_projector.builder`` builds them, so ``mm_projector.bin`` state dicts
  load unchanged (keys ``0.weight``, ``2.weight``, ...; ``weight`` for ``linear``).
* HF (``MultiModalProjector``): ``linear_1``, ``act``, ``linear_2``, ... as in transformers'
  ``LlavaMultiModalProjector``. ``connectors.keymap`` converts between the two.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

_PATTERN = re.compile(r"^(?:(linear|identity)|mlp(\d+)x_gelu)(\+cls)?$")
CLS_SUFFIX = "+cls"


@dataclass(frozen=True)
class ProjectorSpec:
    """A parsed projector type name."""

    name: str
    kind: str  # "linear" | "mlp" | "identity"
    depth: int  # number of Linear layers (0 for identity)
    separate_cls: bool

    @property
    def base(self) -> str:
        """The type name without ``+cls``."""
        return self.name[: -len(CLS_SUFFIX)] if self.separate_cls else self.name


def parse_projector(projector_type: str) -> ProjectorSpec:
    """Parse a projector type name; ``ValueError`` names the accepted forms."""
    match = _PATTERN.match(projector_type) if isinstance(projector_type, str) else None
    if match is None or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ValueError(
            f"unknown projector {projector_type!r}; expected 'linear', 'mlp<N>x_gelu' (e.g. 'mlp2x_gelu'), "
            "'identity', or one of them with '+cls' (a separate projector for the CLS tokens)"
        )
    simple, depth, cls = match.groups()
    if simple == "identity" and cls:
        raise ValueError("'identity+cls' makes no sense: identity has no weights to separate; use 'identity'")
    if simple is not None:
        return ProjectorSpec(projector_type, simple, 1 if simple == "linear" else 0, bool(cls))
    return ProjectorSpec(projector_type, "mlp", int(depth), bool(cls))


def check_projector_dims(projector_type: str, in_dim: int, out_dim: int, num_prefix_tokens: int = 0) -> ProjectorSpec:
    """Refuse combinations that could only fail later as a shape error inside ``forward``."""
    spec = parse_projector(projector_type)
    if spec.kind == "identity" and in_dim != out_dim:
        raise ValueError(
            f"projector 'identity' needs the vision feature width ({in_dim}) to equal the language model "
            f"hidden size ({out_dim}); use 'linear' or 'mlp2x_gelu', or pick feature layers whose "
            "concatenated width matches"
        )
    if spec.separate_cls and num_prefix_tokens < 1:
        raise ValueError(
            f"projector {projector_type!r} projects CLS tokens separately, but feature_select='patch' keeps "
            "none; use feature_select='cls_patch', 'cls2_patch' or 'full', or drop '+cls'"
        )
    return spec


class IdentityProjector(nn.Module):
    """LLaVA's ``IdentityMap``: passes features through unchanged."""

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x

    @property
    def config(self) -> dict:
        return {"mm_projector_type": "identity"}


class ClsSplitProjector(nn.Sequential):
    """LLaVA layout of ``<type>+cls``: children ``0, 1, 2, ...`` project patches, ``cls`` the CLS tokens.

    The patch part keeps LLaVA's ``Sequential`` indices so its keys read like ``mm_projector.0.*``.
    """

    def __init__(self, patch_layers: list[nn.Module], cls: nn.Module, num_prefix_tokens: int):
        super().__init__(*patch_layers)
        self.cls = cls
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.num_prefix_tokens
        patches = x[:, n:]
        for name, layer in self._modules.items():
            if name != "cls":
                patches = layer(patches)
        return torch.cat((self.cls(x[:, :n]), patches), dim=1)


def _llava_layers(spec: ProjectorSpec, in_dim: int, out_dim: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(1, spec.depth):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return layers


def build_llava_projector(projector_type: str, in_dim: int, out_dim: int, num_prefix_tokens: int = 0) -> nn.Module:
    """Build a projector in original LLaVA's module layout (``config.mm_projector_type`` names)."""
    spec = check_projector_dims(projector_type, in_dim, out_dim, num_prefix_tokens)
    if spec.kind == "identity":
        return IdentityProjector()
    if spec.separate_cls:
        cls_layers = _llava_layers(spec, in_dim, out_dim)
        return ClsSplitProjector(_llava_layers(spec, in_dim, out_dim), nn.Sequential(*cls_layers), num_prefix_tokens)
    if spec.kind == "linear":
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(*_llava_layers(spec, in_dim, out_dim))


class MultiModalProjector(nn.Module):
    """HF layout: ``linear_1, act, linear_2, ...`` (``LlavaMultiModalProjector`` for ``mlp2x_gelu``).

    With ``+cls`` a child ``cls`` of the same layout projects the first ``num_prefix_tokens`` tokens.
    """

    def __init__(self, projector_type: str, in_dim: int, out_dim: int, num_prefix_tokens: int = 0, bias: bool = True):
        super().__init__()
        spec = check_projector_dims(projector_type, in_dim, out_dim, num_prefix_tokens)
        self.projector_type = projector_type
        self.num_prefix_tokens = num_prefix_tokens if spec.separate_cls else 0
        self.depth = spec.depth
        for i in range(spec.depth):
            setattr(self, f"linear_{i + 1}", nn.Linear(in_dim if i == 0 else out_dim, out_dim, bias=bias))
        if spec.depth > 1:
            self.act = nn.GELU()  # exact GELU, as LLaVA's nn.GELU() and HF's "gelu"
        if spec.separate_cls:
            self.cls = MultiModalProjector(spec.base, in_dim, out_dim, bias=bias)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.depth):
            if i:
                x = self.act(x)
            x = getattr(self, f"linear_{i + 1}")(x)
        return x

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        if not self.num_prefix_tokens:
            return self._project(image_features)
        n = self.num_prefix_tokens
        return torch.cat((self.cls(image_features[:, :n]), self._project(image_features[:, n:])), dim=1)


__all__ = [
    "ProjectorSpec",
    "parse_projector",
    "check_projector_dims",
    "IdentityProjector",
    "ClsSplitProjector",
    "build_llava_projector",
    "MultiModalProjector",
]
