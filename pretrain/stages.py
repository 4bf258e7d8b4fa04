"""The stage-2 (high-resolution) switch: resize the position-embedding grid when the crop grows.

TIPSv2 trains at 224 px, then adapts at 448 px with a 32x32 position grid. transformers already
interpolates position embeddings on the fly for any input size; with ``schedule.hires_resize_grid``
the stored grid itself is resized once (bilinear, antialiased - the same interpolation the model
applies at run time), so the exported model's native size is the stage-2 size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import TrainConfig


def _embedding_modules(root: torch.nn.Module):
    """Every vision-embeddings module (student, and the EMA encoder copy of ``full_ema``)."""
    return [m for m in root.modules() if hasattr(m, "position_embeddings") and hasattr(m, "patch_embeddings")]


def current_grid(root: torch.nn.Module) -> int:
    emb = _embedding_modules(root)[0]
    return int(round((emb.position_embeddings.shape[1] - 1) ** 0.5))


@torch.no_grad()
def resize_grid(root: torch.nn.Module, grid: int, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Resize every position-embedding table under ``root`` to ``grid x grid`` in place.

    Each table becomes a new parameter (autograd caches the old shape); it takes the old one's
    place in the optimizer's groups, with fresh optimizer state.
    """
    for emb in _embedding_modules(root):
        table = emb.position_embeddings
        old = int(round((table.shape[1] - 1) ** 0.5))
        if old == grid:
            continue
        cls, patches = table.data[:, :1], table.data[:, 1:]
        dim = patches.shape[-1]
        patches = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2).float()
        patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False, antialias=True)
        patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(table.dtype)
        new = torch.nn.Parameter(torch.cat([cls, patches], dim=1).contiguous(), requires_grad=table.requires_grad)
        emb.position_embeddings = new
        patch = emb.patch_embeddings.patch_size
        side = grid * int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        emb.config.image_size = side
        emb.patch_embeddings.image_size = (side, side)
        emb.patch_embeddings.num_patches = grid * grid
        if optimizer is not None:
            optimizer.state.pop(table, None)
            for group in optimizer.param_groups:
                group["params"] = [new if p is table else p for p in group["params"]]
    model = getattr(root, "model", None)
    if model is not None and hasattr(model, "config"):
        patch = model.config.vision_config.patch_size
        model.config.vision_config.image_size = grid * int(patch[0] if isinstance(patch, (tuple, list)) else patch)


def maybe_resize_grid(objective: torch.nn.Module, cfg: TrainConfig, step: int,
                      optimizer: torch.optim.Optimizer | None = None) -> bool:
    """At (or, when resuming, after) the first stage-2 step, resize the grid if configured; True if it changed."""
    s = cfg.schedule
    if s.hires_steps <= 0 or not s.hires_resize_grid or step < s.steps:
        return False
    patch = objective.model.config.vision_config.patch_size
    patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
    grid = s.hires_global_crop_size // patch
    if current_grid(objective) == grid:
        return False
    resize_grid(objective, grid, optimizer)
    return True


__all__ = ["resize_grid", "maybe_resize_grid", "current_grid"]
