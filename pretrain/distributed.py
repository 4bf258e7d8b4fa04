"""Collective helpers used by the losses (no-ops on a single process).

The contrastive loss needs the *global* batch as negatives, with gradients flowing back to the
rank that produced each row; the DINO / iBOT centres must be the same on every rank. Both work
with any ``torch.distributed`` backend (gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised (even with a single rank)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process' rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends every rank's gradient of the gathered tensor home.

    Each rank computes a loss on its local rows against the global columns ("local loss"); the
    gradient of the *sum* of those losses w.r.t. this rank's rows is the sum over ranks of the
    gradients w.r.t. the gathered copy, restricted to this rank's slice. DDP then averages the
    parameter gradients, i.e. the result is the gradient of the mean of the per-rank losses.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (same shape on every rank) over ranks along dim 0, differentiably."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def _reduced(tensor: torch.Tensor, op: "dist.ReduceOp") -> torch.Tensor:
    """A detached copy of ``tensor`` reduced over ranks with ``op`` (the copy itself on one process)."""
    out = tensor.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=op)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is left untouched)."""
    out = _reduced(tensor, dist.ReduceOp.SUM)
    return out / world_size() if world_size() > 1 else out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks (a new tensor)."""
    return _reduced(tensor, dist.ReduceOp.SUM)


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of ``tensor`` over ranks (a new tensor)."""
    return _reduced(tensor, dist.ReduceOp.MAX)
