"""Process-group setup and model wrapping for ``torchrun`` launches (single process otherwise).

``torchrun --nproc_per_node N -m tipsv2_sdk.pretrain --config CFG`` sets ``RANK`` / ``WORLD_SIZE``
/ ``LOCAL_RANK``; we then join the process group (gloo on CPU, nccl on CUDA) and wrap the objective
in DDP (default) or FSDP. Without those variables everything runs in one process, unwrapped.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import DistributedConfig


@dataclass
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we created the process group (and destroy it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` = this rank's CUDA device when available, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but CUDA is not available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: str, cfg: DistributedConfig) -> DistEnv:
    """Join the process group described by torchrun's environment variables, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistEnv(0, 1, 0, dev, owns_group=False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        backend = cfg.backend or ("nccl" if dev.type == "cuda" else "gloo")
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistEnv(rank, world, local_rank, dev, owns_group=owns)


def wrap(module: torch.nn.Module, env: DistEnv, strategy: str) -> torch.nn.Module:
    """DDP or FSDP around ``module`` on several ranks; the module itself on one."""
    if not env.distributed:
        return module
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # The towers (and the EMA encoder copy, so its EMA update meets identically sharded
        # tensors) are sharded; the small rest (heads, temperature) stays replicated and its
        # gradients are averaged by ``reduce_replicated_grads``.
        fully_shard(module.model.vision_model)
        fully_shard(module.model.text_model)
        if getattr(module, "teacher_encoder", None) is not None:
            fully_shard(module.teacher_encoder)
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    # broadcast_buffers=False: the objective keeps its centres in sync with its own all-reduce.
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)


def is_sharded(tensor: torch.Tensor) -> bool:
    """True for FSDP's DTensor parameters / gradients."""
    return hasattr(tensor, "full_tensor")


def reduce_replicated_grads(params: list[torch.Tensor], env: DistEnv, strategy: str) -> None:
    """Under FSDP, average the gradients of the parameters it does not manage (DDP does its own)."""
    if not (env.distributed and strategy == "fsdp"):
        return
    for p in params:
        if p.grad is not None and not is_sharded(p):
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(env.world_size)


def no_sync(module: torch.nn.Module, skip: bool):
    """DDP's ``no_sync`` for accumulation micro-steps that must not all-reduce gradients yet."""
    if skip and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def export_network(module: torch.nn.Module, env: DistEnv, strategy: str):
    """The student ``Tipsv2Model`` with full (unsharded) weights on rank 0; ``None`` elsewhere.

    Every rank must call this: under FSDP the full weights are gathered collectively and loaded
    into a fresh, unsharded copy of the network.
    """
    network = unwrap(module).model
    if not (env.distributed and strategy == "fsdp"):
        return network if env.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import Tipsv2Model

    state = get_model_state_dict(network, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not env.is_main:
        return None
    full = Tipsv2Model(network.config)
    full.load_state_dict(state)
    return full


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if ``flag`` is true on any (e.g. "the time budget is spent")."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average logged scalars over ranks (the same keys on every rank)."""
    if not env.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, (t / env.world_size).tolist()))


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def shutdown(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["DistEnv", "init_distributed", "wrap", "no_sync", "unwrap", "any_rank", "mean_over_ranks",
           "barrier", "shutdown", "resolve_device", "export_network", "reduce_replicated_grads",
           "is_sharded"]
