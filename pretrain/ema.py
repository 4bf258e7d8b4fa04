"""Exponential-moving-average teachers.

TIPSv2's *head-only EMA* keeps an EMA copy of the projection heads only; the teacher reuses the
student encoder (its targets are computed on the unmasked view without gradient). ``full_ema``
is the classic DINO / iBOT teacher: an EMA copy of the image encoder and of the heads.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with ``requires_grad=False`` everywhere (the EMA teacher's initial state)."""
    teacher = copy.deepcopy(module)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update_tensors(teacher: list[torch.Tensor], student: list[torch.Tensor], momentum: float) -> None:
    r"""In place, pairwise: :math:`\theta_t \leftarrow m\,\theta_t + (1-m)\,\theta_s`."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
    if len(teacher) != len(student):
        raise ValueError(f"{len(teacher)} teacher tensors but {len(student)} student tensors")
    if not teacher:
        return
    student = [s.detach().to(t.dtype) for t, s in zip(teacher, student)]
    # one fused kernel per list instead of one per tensor (hundreds of tensors for a full encoder)
    torch._foreach_mul_(teacher, momentum)
    torch._foreach_add_(teacher, student, alpha=1.0 - momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float, skip: tuple[str, ...] = ()) -> None:
    r"""EMA of ``student``'s parameters into ``teacher`` (matched by name); buffers are copied.

    ``skip``: names of student sub-modules without a teacher counterpart (e.g. ``"in_proj"``, a
    distillation student's input projection); their parameters are left out.
    """
    t_params = dict(teacher.named_parameters())
    s_params = {n: p for n, p in student.named_parameters() if not set(n.split(".")) & set(skip)}
    if t_params.keys() != s_params.keys():
        missing = sorted(set(t_params) ^ set(s_params))[:5]
        raise ValueError(f"teacher and student modules have different parameters (e.g. {missing})")
    names = list(t_params)
    ema_update_tensors([t_params[n] for n in names], [s_params[n] for n in names], momentum)
    s_buffers = dict(student.named_buffers())
    for name, buffer in teacher.named_buffers():
        buffer.copy_(s_buffers[name])
