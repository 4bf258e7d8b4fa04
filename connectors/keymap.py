"""Projector weights between original LLaVA and HF Llava key names.

=================================  =========================================
LLaVA (``mm_projector.bin``)       HF (``LlavaForConditionalGeneration``)
=================================  =========================================
``model.mm_projector.weight``      ``multi_modal_projector.linear_1.weight``  (``linear``)
``model.mm_projector.0.weight``    ``multi_modal_projector.linear_1.weight``
``model.mm_projector.2.weight``    ``multi_modal_projector.linear_2.weight``
``model.mm_projector.{2k}.*``      ``multi_modal_projector.linear_{k+1}.*``
``model.mm_projector.cls.{2k}.*``  ``multi_modal_projector.cls.linear_{k+1}.*`` (``+cls``)
=================================  =========================================

Both converters accept keys with any prefix in front of ``mm_projector.`` /
``multi_modal_projector.`` (a full model state dict works; other keys are ignored), or bare
projector keys (``0.weight`` / ``linear_1.weight``). The tensors are not copied.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .projectors import parse_projector

LLAVA_NAME = "mm_projector."
HF_NAME = "multi_modal_projector."
_LLAVA_KEY = re.compile(r"^(cls\.)?(?:(\d+)\.)?(weight|bias)$")
_HF_KEY = re.compile(r"^(cls\.)?linear_(\d+)\.(weight|bias)$")


def _strip(state_dict: Mapping[str, torch.Tensor], marker: str) -> dict[str, torch.Tensor]:
    """Keys after ``marker`` when any key contains it, else the keys as they are."""
    if any(marker in key for key in state_dict):
        return {key.split(marker, 1)[1]: value for key, value in state_dict.items() if marker in key}
    return dict(state_dict)


def llava_to_hf(state_dict: Mapping[str, torch.Tensor], *, prefix: str = HF_NAME) -> dict[str, torch.Tensor]:
    """Convert LLaVA ``mm_projector`` keys to HF ``multi_modal_projector.linear_{i}`` keys."""
    out = {}
    for key, value in _strip(state_dict, LLAVA_NAME).items():
        match = _LLAVA_KEY.match(key)
        if match is None or (match.group(2) is not None and int(match.group(2)) % 2):
            raise ValueError(f"unexpected LLaVA projector key {key!r} (expected 'N.weight' with even N, or 'weight')")
        cls, index, kind = match.groups()
        layer = 1 if index is None else int(index) // 2 + 1
        out[f"{prefix}{cls or ''}linear_{layer}.{kind}"] = value
    return out


def hf_to_llava(
    state_dict: Mapping[str, torch.Tensor], projector_type: str | None = None, *, prefix: str = "model." + LLAVA_NAME
) -> dict[str, torch.Tensor]:
    """Convert HF ``multi_modal_projector.linear_{i}`` keys to LLaVA ``mm_projector`` keys.

    ``projector_type`` tells ``linear`` (keys ``weight``) from ``mlp1x_gelu`` (keys ``0.weight``);
    when omitted, a single-layer projector is taken to be ``linear``.
    """
    stripped = _strip(state_dict, HF_NAME)
    matches = {key: _HF_KEY.match(key) for key in stripped}
    for key, match in matches.items():
        if match is None:
            raise ValueError(f"unexpected HF projector key {key!r} (expected 'linear_N.weight' or 'linear_N.bias')")
    if projector_type is None:
        depth = max((int(m.group(2)) for m in matches.values()), default=0)
        plain_linear = depth == 1 and not any(m.group(1) for m in matches.values())
    else:
        spec = parse_projector(projector_type)
        plain_linear = spec.kind == "linear" and not spec.separate_cls
    out = {}
    for key, match in matches.items():
        cls, layer, kind = match.groups()
        index = "" if plain_linear else f"{2 * (int(layer) - 1)}."
        out[f"{prefix}{cls or ''}{index}{kind}"] = stripped[key]
    return out


def to_hf_projector_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bare HF projector keys (``linear_1.weight``, ...) from LLaVA- or HF-named weights of any prefix."""
    if any(LLAVA_NAME in key for key in state_dict):
        return llava_to_hf(state_dict, prefix="")
    if any(HF_NAME in key for key in state_dict):
        return _strip(state_dict, HF_NAME)
    if all(_HF_KEY.match(key) for key in state_dict):
        return dict(state_dict)
    return llava_to_hf(state_dict, prefix="")  # bare LLaVA keys ("0.weight"); raises on anything else


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read projector weights from ``.safetensors`` or LLaVA's ``mm_projector.bin``.

    ``.bin`` files are read with ``torch.load(weights_only=True)``: tensors only, nothing unpickled
    that could run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"projector weights {path} do not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


__all__ = ["llava_to_hf", "hf_to_llava", "to_hf_projector_state", "load_state_file", "LLAVA_NAME", "HF_NAME"]
