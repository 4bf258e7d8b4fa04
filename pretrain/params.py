"""Parameters held for training with head-only EMA vs full EMA, counted on the meta device.

What is counted (``COUNTED``): every tensor of model weights that a training process keeps —
the student ``Tipsv2Model`` (image tower, text tower, contrastive temperature), the student DINO
and iBOT heads, and the EMA teacher copies (``full_ema``: image encoder + heads; ``head_ema``:
heads only; the text tower never has an EMA copy). Optimizer state, gradients and activations are
not counted. The models are built on ``torch.device("meta")``, so no memory is allocated.

The paper reports "42% fewer training parameters" for ViT-B without stating its accounting; our
figure depends strongly on what is counted (text tower, prototype count), which is why
``parameter_breakdown`` returns every component.

``paper_parameter_counts`` is the accounting that reproduces the paper's figure: the *image side*
only (student image encoder + student heads + the EMA copies; no text tower, no temperature) with
heads of iBOT's default size (8,192 prototypes each, separate CLS and patch heads: 41.9% for
ViT-B), or one shared 32,768-prototype head (TIPS v1's 32k prototypes: 42.7%). Every term is
listed so the arithmetic can be checked by hand.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tipsv2_sdk.registry import get_spec, make_config
from .heads import TipsHeads

COUNTED = ("student image+text towers and temperature, student DINO (CLS) and iBOT (patch) heads, plus the EMA "
           "teacher copies (full_ema: image encoder + both heads; head_ema: both heads only); optimizer state, "
           "gradients and buffers not counted")


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_breakdown(variant: str, prototypes: int = 65536, hidden: int = 2048, bottleneck: int = 256,
                        shared_head: bool = False) -> dict[str, int]:
    """Parameter counts of every component trained for ``variant`` (a registry name)."""
    from transformers import Tipsv2Model

    spec = get_spec(variant)
    with torch.device("meta"):
        model = Tipsv2Model(make_config(spec))
        heads = TipsHeads(spec.width, prototypes, hidden, bottleneck, shared=shared_head)
    return {
        "image_encoder": _numel(model.vision_model),
        "text_encoder": _numel(model.text_model),
        "temperature": model.temperature.numel(),
        "heads": _numel(heads),
    }


def count_training_parameters(variant: str, teacher: str, prototypes: int = 65536, hidden: int = 2048,
                              bottleneck: int = 256, shared_head: bool = False,
                              include_text: bool = True) -> dict[str, Any]:
    """Student, teacher-copy and total parameters held when training ``variant`` with ``teacher``
    (``"head_ema"`` or ``"full_ema"``). ``include_text=False`` leaves the text tower out."""
    if teacher not in ("head_ema", "full_ema"):
        raise ValueError(f"unknown teacher {teacher!r} (expected head_ema or full_ema)")
    parts = parameter_breakdown(variant, prototypes, hidden, bottleneck, shared_head)
    student = parts["image_encoder"] + parts["heads"] + parts["temperature"]
    if include_text:
        student += parts["text_encoder"]
    teacher_copy = parts["heads"] + (parts["image_encoder"] if teacher == "full_ema" else 0)
    return {"variant": variant, "teacher": teacher, "student": student, "teacher_copy": teacher_copy,
            "total": student + teacher_copy, "breakdown": parts}


def training_parameter_counts(variant: str, prototypes: int = 65536, hidden: int = 2048, bottleneck: int = 256,
                              shared_head: bool = False, include_text: bool = True) -> dict[str, Any]:
    """``{"full_ema": int, "head_ema": int, "reduction": float, "counted": str}`` for ``variant``.

    ``reduction`` = 1 - head_ema / full_ema (fraction of training parameters saved).
    """
    kwargs = dict(prototypes=prototypes, hidden=hidden, bottleneck=bottleneck, shared_head=shared_head,
                  include_text=include_text)
    full = count_training_parameters(variant, "full_ema", **kwargs)["total"]
    head = count_training_parameters(variant, "head_ema", **kwargs)["total"]
    counted = COUNTED if include_text else COUNTED.replace("student image+text towers", "student image tower")
    counted += f"; heads: {'one shared' if shared_head else 'separate CLS and patch'}, {prototypes} prototypes"
    return {"full_ema": full, "head_ema": head, "reduction": 1.0 - head / full, "counted": counted}


PAPER_PROTOTYPES = 8192  # iBOT's default out_dim / patch_out_dim


def paper_parameter_counts(variant: str, prototypes: int = PAPER_PROTOTYPES, shared_head: bool = False,
                           include_text: bool = False, hidden: int = 2048, bottleneck: int = 256) -> dict[str, Any]:
    """The image-side accounting that matches the paper's ~42% for ViT-B, with every term listed.

    ``terms["full_ema"]`` / ``terms["head_ema"]`` name each counted tensor group and its size:
    the student image encoder, the student heads (CLS + patch, or one shared head), the EMA copies
    (full EMA: encoder + heads; head-only EMA: heads) and, with ``include_text``, the text tower
    (which has no EMA copy either way). ``reduction`` = 1 - head_ema / full_ema.
    """
    parts = parameter_breakdown(variant, prototypes, hidden, bottleneck, shared_head)
    common = {"student_image_encoder": parts["image_encoder"], "student_heads": parts["heads"]}
    if include_text:
        common["student_text_encoder"] = parts["text_encoder"]
    full = {**common, "teacher_image_encoder": parts["image_encoder"], "teacher_heads": parts["heads"]}
    head = {**common, "teacher_heads": parts["heads"]}
    heads = "one shared head" if shared_head else "separate CLS and patch heads"
    counted = (f"image side: student image encoder + student {heads} ({prototypes} prototypes, MLP {hidden}/"
               f"{bottleneck}) + EMA copies (full_ema: encoder + heads; head_ema: heads)"
               + ("; plus the student text tower" if include_text else "; text tower and temperature not counted"))
    total_full, total_head = sum(full.values()), sum(head.values())
    return {"full_ema": total_full, "head_ema": total_head, "reduction": 1.0 - total_head / total_full,
            "prototypes": prototypes, "shared_head": shared_head, "include_text": include_text,
            "terms": {"full_ema": full, "head_ema": head}, "counted": counted}
