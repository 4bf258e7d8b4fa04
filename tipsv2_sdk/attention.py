"""Attention kernels for the fast paths: PyTorch SDPA everywhere, xFormers on CUDA when installed.

transformers' TIPSv2 attention dispatches through its ``AttentionInterface`` on the config's
``_attn_implementation``: ``"sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention``,
which on CPU is a fused flash-attention kernel (no N x N matrix in memory) and on CUDA picks the
flash / memory-efficient / cuDNN kernels for bf16. xFormers is used only for the vision tower
(no padding mask) on a CUDA device, and only when the package is installed; it is never a
dependency.
"""
from __future__ import annotations

import contextlib
import importlib.util
from typing import Any

import torch

XFORMERS = "tipsv2_xformers"  # the name registered in transformers' AttentionInterface


def xformers_available() -> bool:
    """Whether the ``xformers`` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("xformers") is not None


def choose_attention(device: torch.device | str, *, vision: bool, xformers: bool | None = None) -> str:
    """The attention implementation for a prepared tower on ``device``.

    ``xformers``: whether xFormers is installed (``None``: look). Text towers always use SDPA: their
    padding mask needs the SDPA mask format.
    """
    device = torch.device(device)
    if xformers is None:
        xformers = device.type == "cuda" and xformers_available()
    if vision and device.type == "cuda" and xformers:
        register_xformers()
        return XFORMERS
    return "sdpa"


def xformers_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                       **_: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature over ``xformers.ops.memory_efficient_attention``.

    Inputs are (B, heads, N, head_dim); like transformers' own functions it returns (B, N, heads,
    head_dim) and no attention weights.
    """
    from xformers.ops import memory_efficient_attention

    if attention_mask is not None:
        raise ValueError("the xFormers path serves the vision tower, which has no attention mask")
    out = memory_efficient_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                     p=dropout, scale=scaling)
    return out, None


def register_xformers() -> None:
    """Make ``XFORMERS`` a valid ``attn_implementation`` (adds one entry; existing ones are untouched)."""
    from transformers import AttentionInterface

    AttentionInterface.register(XFORMERS, xformers_attention)


def sdpa_kernels(device: torch.device | str):
    """On CUDA, let SDPA prefer flash, then memory-efficient, then cuDNN kernels (math as the fallback).

    On other devices, a no-op: the CPU flash kernel is PyTorch's default there.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.MATH], set_priority=True)


__all__ = ["XFORMERS", "choose_attention", "register_xformers", "sdpa_kernels", "xformers_attention",
           "xformers_available"]
