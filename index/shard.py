"""Deterministic 1/n splits of the input list for sharded builds.

Shard ``i`` of ``n`` takes one contiguous block of the sorted input list. Every image keeps the id
it would have in a single build (its position in the full list), so merging the shards in order
gives the same ids, in the same insertion order, as building everything in one go.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tipsv2_sdk.errors import TipsV2Error


class ShardError(TipsV2Error, ValueError):
    """A ``--shard`` value (or the environment behind ``--shard auto``) is malformed."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count} is out of range: need 0 <= i < n and n >= 1")

    def bounds(self, total: int) -> tuple[int, int]:
        """``[start, stop)`` of this shard's block in a list of ``total`` items (sizes differ by at most 1)."""
        return total * self.index // self.count, total * (self.index + 1) // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ShardError(f"environment variable {name}={env[name]!r} is not an integer") from None


def shard_from_env(env: Mapping[str, str] | None = None) -> Shard:
    """The shard of this process: ``RANK``/``WORLD_SIZE`` (torchrun), else a SLURM job array.

    For a SLURM array the task id is counted from ``SLURM_ARRAY_TASK_MIN``, so ``--array=1-8`` works.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return Shard(_env_int(env, "RANK"), _env_int(env, "WORLD_SIZE"))
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = _env_int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        return Shard(_env_int(env, "SLURM_ARRAY_TASK_ID") - first, _env_int(env, "SLURM_ARRAY_TASK_COUNT"))
    raise ShardError("--shard auto needs RANK and WORLD_SIZE (set by torchrun) or a SLURM job array in the environment")


def parse_shard(spec: str | None, env: Mapping[str, str] | None = None) -> Shard | None:
    """``None`` → no sharding; ``"i/n"`` → shard i of n (0-based); ``"auto"`` → from the environment."""
    if spec is None or spec == "":
        return None
    if spec.strip().lower() == "auto":
        return shard_from_env(env)
    parts = spec.split("/")
    if len(parts) != 2:
        raise ShardError(f"--shard {spec!r}: expected i/n (e.g. 0/4) or auto")
    try:
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise ShardError(f"--shard {spec!r}: i and n must be integers (e.g. 0/4)") from None
    return Shard(index, count)


def select(total: int, shard: Shard | None) -> range:
    """The positions (= ids) of the full input list that ``shard`` embeds."""
    if shard is None:
        return range(total)
    start, stop = shard.bounds(total)
    return range(start, stop)


__all__ = ["Shard", "ShardError", "parse_shard", "select", "shard_from_env"]
