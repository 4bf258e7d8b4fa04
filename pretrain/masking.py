"""Patch masks for the student's global view (``bool_masked_pos`` of ``Tipsv2VisionModel``).

Every image gets exactly ``round(ratio * N)`` masked patches, either uniformly at random
(``mode="random"``, TIPS v1) or as rectangular blocks (``mode="block"``, BEiT / iBOT style; blocks
are drawn until the budget is reached, then the last overshoot is trimmed at random). Each image's
mask depends only on a seed, so masks do not change with the batch layout or the number of ranks.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

MASK_MODES = ("random", "block")


def example_seed(*parts: int) -> int:
    """A 63-bit seed mixing integers (seed, step, example index, ...) with numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class MaskGenerator:
    """Masks for a ``grid = (rows, cols)`` of patches."""

    def __init__(self, grid: tuple[int, int], ratio: float = 0.75, mode: str = "random",
                 min_block: int = 4, max_aspect: float = 3.0):
        if mode not in MASK_MODES:
            raise ValueError(f"unknown mask mode {mode!r} (expected one of {', '.join(MASK_MODES)})")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"mask ratio must be in [0, 1], got {ratio}")
        self.rows, self.cols = int(grid[0]), int(grid[1])
        self.ratio, self.mode = ratio, mode
        self.min_block, self.max_aspect = min_block, max_aspect

    @property
    def num_patches(self) -> int:
        return self.rows * self.cols

    @property
    def num_masked(self) -> int:
        return int(round(self.ratio * self.num_patches))

    def __call__(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, N) bool masks drawn from one generator."""
        return torch.stack([self.one(generator) for _ in range(batch_size)]) if batch_size else \
            torch.zeros(0, self.num_patches, dtype=torch.bool)

    def for_examples(self, seeds: Sequence[int]) -> torch.Tensor:
        """(len(seeds), N) bool masks, one generator per example seed (see ``example_seed``)."""
        rows = [self.one(torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(rows) if rows else torch.zeros(0, self.num_patches, dtype=torch.bool)

    def one(self, generator: torch.Generator) -> torch.Tensor:
        """A single (N,) mask with exactly ``num_masked`` True entries."""
        target = self.num_masked
        if self.mode == "random" or target in (0, self.num_patches):
            order = torch.randperm(self.num_patches, generator=generator)
            mask = torch.zeros(self.num_patches, dtype=torch.bool)
            mask[order[:target]] = True
            return mask
        return self._block(target, generator)

    def _block(self, target: int, generator: torch.Generator) -> torch.Tensor:
        grid = torch.zeros(self.rows, self.cols, dtype=torch.bool)
        log_aspect = math.log(self.max_aspect)
        count = 0
        for _ in range(100 * self.num_patches):  # far more attempts than any ratio < 1 needs
            if count >= target:
                break
            u = torch.rand(2, generator=generator).tolist()
            area = self.min_block + u[0] * max(target - count - self.min_block, 0)
            aspect = math.exp((2.0 * u[1] - 1.0) * log_aspect)
            h = max(1, min(self.rows, int(round(math.sqrt(area * aspect)))))
            w = max(1, min(self.cols, int(round(math.sqrt(area / aspect)))))
            top = int(torch.randint(self.rows - h + 1, (1,), generator=generator))
            left = int(torch.randint(self.cols - w + 1, (1,), generator=generator))
            block = torch.zeros_like(grid)
            block[top : top + h, left : left + w] = True
            new = (block & ~grid).flatten().nonzero().flatten()
            if count + new.numel() > target:  # the last block only partly fits the budget
                new = new[torch.randperm(new.numel(), generator=generator)[: target - count]]
            grid.view(-1)[new] = True
            count += new.numel()
        mask = grid.flatten()
        if count < target:  # only reachable with pathological grids: fill at random
            free = (~mask).nonzero().flatten()
            mask[free[torch.randperm(free.numel(), generator=generator)[: target - count]]] = True
        return mask
