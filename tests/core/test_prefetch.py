"""``prefetched``: input order, batches, bounded look-ahead, errors at their batch."""
from __future__ import annotations

import threading

import pytest

from tipsv2_sdk.prefetch import prefetched


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_batches_keep_input_order(workers):
    batches = list(prefetched(lambda i: i * i, 10, 4, workers))
    assert batches == [[0, 1, 4, 9], [16, 25, 36, 49], [64, 81]]


def test_at_most_one_batch_is_decoded_ahead():
    started: list[int] = []
    lock = threading.Lock()

    def task(i):
        with lock:
            started.append(i)
        return i

    batches = prefetched(task, 100, 5, 2)
    first = next(batches)
    assert first == [0, 1, 2, 3, 4]
    assert max(started) < 10  # the current batch and the next one, never the whole input
    assert sum(len(b) for b in batches) == 95


def test_without_workers_nothing_runs_before_its_batch_is_asked_for():
    started: list[int] = []
    batches = prefetched(lambda i: started.append(i) or i, 6, 2, 0)
    assert started == []
    next(batches)
    assert started == [0, 1]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failing_task_raises_when_its_batch_is_reached(workers):
    def task(i):
        if i == 5:
            raise ValueError("item 5 is broken")
        return i

    batches = prefetched(task, 8, 4, workers)
    assert next(batches) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="item 5"):
        next(batches)
