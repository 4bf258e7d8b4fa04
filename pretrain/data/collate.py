"""From examples to the objective's batch dict, deterministically.

The global data stream is a sequence of *positions* 0, 1, 2, ... Step ``s`` consumes the next
``batch_size`` positions; they are split into ``accum_steps`` micro-batches and each micro-batch
into ``world_size`` equal rank shares. Position ``p`` maps to a dataset index (identity for an
infinite stream, a per-epoch permutation for a finite dataset) and seeds its own crops, so a batch
is a pure function of ``(seed, step, micro, rank)``: the same with any number of data-loader
workers, after a resume, and - concatenated over ranks - for any world size.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from tipsv2_sdk.errors import ImageLoadError
from tipsv2_sdk.tokenizer import TipsTokenizer
from ..captions import CaptionSampler
from ..crops import MultiCrop

MAX_SUBSTITUTES = 16  # consecutive unreadable examples tolerated before giving up on a position


@dataclass(frozen=True)
class Stage:
    """Shape of the batches of one training stage."""

    first_step: int
    steps: int
    batch_size: int  # global, per optimizer step
    global_size: int
    local_size: int


class StagePlan:
    """Which stage a step belongs to and where its data positions start."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages

    def stage(self, step: int) -> Stage:
        for stage in self.stages:
            if step < stage.first_step + stage.steps:
                return stage
        return self.stages[-1]

    def first_position(self, step: int) -> int:
        """Number of positions consumed before ``step``."""
        pos = 0
        for stage in self.stages:
            done = min(max(step - stage.first_step, 0), stage.steps)
            pos += done * stage.batch_size
            if step < stage.first_step + stage.steps:
                break
        return pos

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


class PositionOrder:
    """Position -> dataset index: identity for infinite data, a seeded permutation per epoch otherwise."""

    def __init__(self, length: int | None, seed: int, cache: int = 4):
        self.length, self.seed, self.cache = length, seed, cache
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def __call__(self, position: int) -> int:
        if self.length is None:
            return position
        epoch, offset = divmod(position, self.length)
        perm = self._perms.get(epoch)
        if perm is None:
            perm = np.random.default_rng([self.seed, 0x5EED, epoch]).permutation(self.length)
            self._perms[epoch] = perm
            while len(self._perms) > self.cache:
                self._perms.popitem(last=False)
        return int(perm[offset])


class BatchBuilder:
    """Turns dataset examples at given positions into the objective's batch dict."""

    def __init__(self, dataset, tokenizer: TipsTokenizer, captions: CaptionSampler, *, seed: int,
                 n_local: int, global_scale=(0.4, 1.0), local_scale=(0.05, 0.4), flip: bool = True,
                 max_text_len: int | None = None):
        self.dataset, self.tokenizer, self.captions = dataset, tokenizer, captions
        self.seed, self.n_local = seed, n_local
        self.global_scale, self.local_scale, self.flip = tuple(global_scale), tuple(local_scale), flip
        self.max_text_len = max_text_len
        self.order = PositionOrder(_length(dataset), seed)
        self._crops: dict[tuple[int, int], MultiCrop] = {}
        self.bad: set[int] = set()  # dataset indices known to be unreadable (per process)

    def _multicrop(self, global_size: int, local_size: int) -> MultiCrop:
        key = (global_size, local_size)
        if key not in self._crops:
            self._crops[key] = MultiCrop(global_size, local_size, self.n_local, self.global_scale,
                                         self.local_scale, self.flip)
        return self._crops[key]

    def example(self, position: int) -> tuple[dict, int]:
        """The example at ``position`` and how many unreadable ones were skipped to find it.

        An unreadable image is replaced by the next dataset index (deterministically), so every
        rank still gets the same number of rows; the skip is counted, never fatal.
        """
        index = self.order(position)
        length = _length(self.dataset)
        skipped = 0
        for _ in range(MAX_SUBSTITUTES):
            if index not in self.bad:
                try:
                    return self.dataset[index], skipped
                except ImageLoadError:
                    self.bad.add(index)
            skipped += 1
            index = index + 1 if length is None else (index + 1) % length
        raise ImageLoadError(f"dataset position {position}", f"{MAX_SUBSTITUTES} consecutive examples are unreadable")

    def build(self, positions: list[int], step: int, global_size: int, local_size: int) -> dict[str, torch.Tensor]:
        """Batch dict for the examples at ``positions`` (see the objective's contract)."""
        crops = self._multicrop(global_size, local_size)
        globals_, locals_, alts, caps = [], [], [], []
        bad = 0
        for pos in positions:
            ex, skipped = self.example(pos)
            bad += skipped
            rng = np.random.default_rng([self.seed, 0xC209, pos])
            g, loc = crops(ex["image"], rng)
            globals_.append(g)
            locals_.append(loc)
            alts.append(ex["alt_text"])
            caps.append(self.captions.sample(ex.get("captions") or {}, index=pos, step=step, fallback=ex["alt_text"]))
        alt_ids, alt_mask = self.tokenizer.encode(alts, max_length=self.max_text_len)
        cap_ids, cap_mask = self.tokenizer.encode(caps, max_length=self.max_text_len)
        return {
            "global_crops": torch.from_numpy(np.stack(globals_)),
            "local_crops": torch.from_numpy(np.stack(locals_)),
            "alt_input_ids": torch.from_numpy(alt_ids),
            "alt_attention_mask": torch.from_numpy(alt_mask),
            "caption_input_ids": torch.from_numpy(cap_ids),
            "caption_attention_mask": torch.from_numpy(cap_mask),
            "index": torch.tensor(positions, dtype=torch.int64),
            "bad_images": torch.tensor(bad, dtype=torch.int64),
        }


class MicroBatches(torch.utils.data.Dataset):
    """Item ``k`` = micro-batch ``k % accum`` of step ``k // accum``, this rank's share."""

    def __init__(self, builder: BatchBuilder, plan: StagePlan, accum_steps: int = 1, rank: int = 0,
                 world_size: int = 1):
        for stage in plan.stages:
            if stage.batch_size % (accum_steps * world_size):
                raise ValueError(
                    f"batch size {stage.batch_size} is not divisible by accum_steps x world_size = "
                    f"{accum_steps} x {world_size}"
                )
        self.builder, self.plan = builder, plan
        self.accum, self.rank, self.world = accum_steps, rank, world_size

    def __len__(self) -> int:
        return self.plan.total_steps * self.accum

    def positions(self, k: int) -> list[int]:
        step, micro = divmod(k, self.accum)
        stage = self.plan.stage(step)
        per_micro = stage.batch_size // self.accum
        share = per_micro // self.world
        start = self.plan.first_position(step) + micro * per_micro + self.rank * share
        return list(range(start, start + share))

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        step = k // self.accum
        stage = self.plan.stage(step)
        return self.builder.build(self.positions(k), step, stage.global_size, stage.local_size)


def _worker_init(_: int) -> None:
    # Workers only decode and crop: one thread each keeps them from fighting the training process.
    torch.set_num_threads(1)


def make_loader(batches: MicroBatches, start: int = 0, num_workers: int = 0, prefetch: int = 2):
    """A DataLoader over micro-batches ``start, start+1, ...`` (in order; no shuffling here)."""
    kwargs = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": max(1, prefetch), "worker_init_fn": _worker_init, "persistent_workers": False}
    return torch.utils.data.DataLoader(
        batches, batch_size=None, sampler=range(start, len(batches)), num_workers=num_workers, **kwargs
    )


def _length(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


__all__ = ["Stage", "StagePlan", "PositionOrder", "BatchBuilder", "MicroBatches", "make_loader"]
