"""--shard i/n and --shard auto: deterministic contiguous blocks covering the input exactly once."""
from __future__ import annotations

import pytest

from tipsv2_sdk.index.shard import Shard, ShardError, parse_shard, select


@pytest.mark.parametrize("total,n", [(0, 3), (1, 4), (10, 3), (24, 5), (1000, 7)])
def test_shards_partition_the_input_in_order(total, n):
    blocks = [list(select(total, Shard(i, n))) for i in range(n)]
    assert sum(blocks, []) == list(range(total))
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1


def test_no_shard_is_everything():
    assert parse_shard(None) is None and list(select(5, None)) == [0, 1, 2, 3, 4]


def test_parse_i_of_n():
    assert parse_shard("2/4") == Shard(2, 4)
    assert str(parse_shard(" 0/1")) == "0/1"


@pytest.mark.parametrize("spec", ["4/4", "-1/3", "1/0", "a/b", "3", "1/2/3"])
def test_bad_specs_are_refused(spec):
    with pytest.raises(ShardError, match="shard"):
        parse_shard(spec)


def test_auto_reads_torchrun_env():
    assert parse_shard("auto", {"RANK": "3", "WORLD_SIZE": "8"}) == Shard(3, 8)


def test_auto_reads_slurm_array_from_its_first_task():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "3"}
    assert parse_shard("AUTO", env) == Shard(2, 4)


def test_auto_without_env_names_the_variables():
    with pytest.raises(ShardError, match="RANK and WORLD_SIZE"):
        parse_shard("auto", {})
    with pytest.raises(ShardError, match="RANK=.x"):
        parse_shard("auto", {"RANK": "x", "WORLD_SIZE": "2"})
