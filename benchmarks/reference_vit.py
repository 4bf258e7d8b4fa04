"""The official TIPS / TIPSv2 PyTorch image encoder's forward pass, as a benchmark contender.

Written from the structure of google-deepmind/tips ``pytorch/image_encoder.py`` (the DINOv2-style
ViT it ships) as that repository's own inference script runs it: unchunked blocks, LayerScale
with ``init_values=1.0``, one register token, antialiased bilinear position interpolation without
offset, and no xFormers (so attention is the plain ``softmax(q k^T) v`` of its ``Attention``
class). Parameter names are the official state-dict keys, so an official ``.npz`` loads directly
(``load_official``) and a transformers model is mapped back with the converter's own key rules
(``official_state_dict``). This file exists to time the reference and to check that the SDK
computes the same thing; it is not part of the package.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn


class RefAttention(nn.Module):
    """One fused qkv projection, explicit attention matrix, output projection."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        weights = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(b, n, c))


class RefMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class RefSwiGLU(nn.Module):
    """The g/14 feed-forward: one fused [gate; up] projection."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * up)


class RefLayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RefBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_hidden: int, swiglu: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, heads)
        self.ls1 = RefLayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefSwiGLU(dim, mlp_hidden) if swiglu else RefMlp(dim, mlp_hidden)
        self.ls2 = RefLayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class RefPatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ReferenceViT(nn.Module):
    """The reference vision transformer; ``forward`` returns (cls1 (B, D), cls2 (B, D), patches (B, N, D))."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, grid: int, patch: int = 14,
                 swiglu: bool = False, registers: int = 1):
        super().__init__()
        self.patch = patch
        self.registers = registers
        self.patch_embed = RefPatchEmbed(dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(RefBlock(dim, heads, int(dim * mlp_ratio), swiglu) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def position_embedding(self, n_patches: int, h: int, w: int) -> torch.Tensor:
        known = self.pos_embed.shape[1] - 1
        if n_patches == known and h == w:
            return self.pos_embed
        side = int(math.sqrt(known))
        grid = self.pos_embed[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h // self.patch, w // self.patch), mode="bilinear", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, self.pos_embed.shape[-1])
        return torch.cat([self.pos_embed[:, :1], grid.to(self.pos_embed.dtype)], dim=1)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, _, h, w = pixels.shape
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(x.shape[1] - 1, h, w)
        x = torch.cat([x[:, :1], self.register_tokens.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1], x[:, 1 + self.registers:]


def official_state_dict(hf_vision_state: Mapping[str, torch.Tensor], depth: int, swiglu: bool) -> dict[str, torch.Tensor]:
    """transformers vision weights -> official keys: the converter's rules applied in reverse.

    ``hf_vision_state`` is ``Tipsv2VisionModel.state_dict()`` (keys without a ``vision_model.`` prefix).
    Split targets (q/k/v, gate/up) are concatenated back along their first axis.
    """
    from tipsv2_sdk.convert.keys import vision_rules

    return {rule.source: torch.cat([hf_vision_state[t] for t in rule.targets], dim=0)
            for rule in vision_rules(depth, swiglu, prefix="")}


def reference_from_hf(vision_model) -> ReferenceViT:
    """A ``ReferenceViT`` holding the same weights as a transformers ``Tipsv2VisionModel``."""
    cfg = vision_model.config
    grid = cfg.image_size // cfg.patch_size
    ref = ReferenceViT(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.mlp_ratio, grid,
                       cfg.patch_size, cfg.use_swiglu_ffn, cfg.num_register_tokens)
    ref.load_state_dict(official_state_dict(vision_model.state_dict(), cfg.num_hidden_layers, cfg.use_swiglu_ffn))
    return ref.eval()


def load_official(state: Mapping[str, torch.Tensor], heads: int, mlp_ratio: float, swiglu: bool = False,
                  patch: int = 14) -> ReferenceViT:
    """A ``ReferenceViT`` from an official vision state dict (the arrays of an official ``.npz``)."""
    dim = state["cls_token"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
    grid = int(math.isqrt(state["pos_embed"].shape[1] - 1))
    ref = ReferenceViT(dim, depth, heads, mlp_ratio, grid, patch, swiglu, state["register_tokens"].shape[1])
    ref.load_state_dict(dict(state))
    return ref.eval()
