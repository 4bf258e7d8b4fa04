"""Which vision tokens a connector hands to the language model.

TIPSv2 emits ``[CLS1, CLS2, patch_1 ... patch_N]``: two prefix tokens (CLS1 plus one register token
that TIPSv2 trains as a second CLS). CLIP-oriented code drops exactly one token and so leaks CLS2
into the "patch" stream; every connector in this package selects tokens explicitly instead:

=============  ==================================  ================
feature_select tokens kept                         count (h x w grid)
=============  ==================================  ================
``patch``      patches only                        h*w
``cls_patch``  CLS1 + patches                      h*w + 1
``cls2_patch`` CLS2 + patches                      h*w + 1
``full``       CLS1 + CLS2 + patches               h*w + 2
=============  ==================================  ================
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

FEATURE_SELECTS = ("patch", "cls_patch", "cls2_patch", "full")


def check_feature_select(feature_select: str) -> str:
    """Return ``feature_select`` or raise ``ValueError`` listing the accepted names."""
    if feature_select not in FEATURE_SELECTS:
        raise ValueError(
            f"unknown feature_select {feature_select!r}; expected one of {', '.join(FEATURE_SELECTS)} "
            "(TIPSv2 has two prefix tokens, CLS1 and CLS2, before the patches)"
        )
    return feature_select


def num_prefix_kept(feature_select: str, num_register_tokens: int = 1) -> int:
    """How many prefix (CLS / register) tokens ``feature_select`` keeps in front of the patches."""
    check_feature_select(feature_select)
    return {"patch": 0, "cls_patch": 1, "cls2_patch": num_register_tokens, "full": 1 + num_register_tokens}[
        feature_select
    ]


def select_tokens(hidden: torch.Tensor, feature_select: str, num_register_tokens: int = 1) -> torch.Tensor:
    """Keep the tokens named by ``feature_select`` from a ``(B, 1 + R + N, D)`` TIPSv2 sequence."""
    check_feature_select(feature_select)
    prefix = 1 + num_register_tokens
    if feature_select == "patch":
        return hidden[:, prefix:]
    if feature_select == "cls_patch":
        return torch.cat((hidden[:, :1], hidden[:, prefix:]), dim=1)
    if feature_select == "cls2_patch":
        return hidden[:, 1:]
    return hidden


def normalize_feature_layer(feature_layer: int | Sequence[int], num_layers: int) -> int | list[int]:
    """Validate ``feature_layer`` against a tower with ``num_layers`` blocks.

    Indices address ``hidden_states``: 0 is the embedding output, ``num_layers`` (or -1) the last
    block (before the final layer norm, as transformers records it). A bare ``0`` becomes
    ``-(num_layers + 1)``, the same layer: transformers reads the layer index as the
    ``output_hidden_states`` flag, and ``0`` would switch recording off.
    """

    def check(layer: object) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"feature_layer entries must be ints, not {layer!r}")
        if not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(
                f"feature_layer {layer} is out of range for a tower with {num_layers} blocks "
                f"(valid: {-(num_layers + 1)} .. {num_layers})"
            )
        return layer

    if isinstance(feature_layer, Sequence) and not isinstance(feature_layer, str):
        layers = [check(layer) for layer in feature_layer]
        if not layers:
            raise ValueError("feature_layer must not be an empty list")
        return layers
    layer = check(feature_layer)
    return -(num_layers + 1) if layer == 0 else layer


def num_feature_layers(feature_layer: int | Sequence[int]) -> int:
    """How many layers are concatenated on the channel axis (1 for an int)."""
    return 1 if isinstance(feature_layer, int) else len(feature_layer)


def select_features(
    hidden_states: Sequence[torch.Tensor],
    feature_layer: int | Sequence[int],
    feature_select: str,
    num_register_tokens: int = 1,
) -> torch.Tensor:
    """Pick ``feature_layer`` (one index or several, concatenated on channels) and select tokens."""
    layers = [feature_layer] if isinstance(feature_layer, int) else list(feature_layer)
    picked = [select_tokens(hidden_states[i], feature_select, num_register_tokens) for i in layers]
    return picked[0] if len(picked) == 1 else torch.cat(picked, dim=-1)


def grid_size(image_size: int | Sequence[int], patch_size: int = 14) -> tuple[int, int]:
    """``(h, w)`` patch grid of an image size; refuses sizes that are not multiples of the patch."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    for side in (h, w):
        if isinstance(side, bool) or not isinstance(side, int) or side <= 0 or side % patch_size:
            raise ValueError(
                f"image size {image_size!r} is not a positive multiple of the patch size {patch_size}; "
                f"use e.g. {patch_size * 16}, {patch_size * 24} or {patch_size * 32}"
            )
    return h // patch_size, w // patch_size


def tokens_per_image(
    image_size: int | Sequence[int], feature_select: str, patch_size: int = 14, num_register_tokens: int = 1
) -> int:
    """Image tokens one image costs in the language model."""
    h, w = grid_size(image_size, patch_size)
    return h * w + num_prefix_kept(feature_select, num_register_tokens)


__all__ = [
    "FEATURE_SELECTS",
    "check_feature_select",
    "num_prefix_kept",
    "select_tokens",
    "normalize_feature_layer",
    "num_feature_layers",
    "select_features",
    "grid_size",
    "tokens_per_image",
]
