"""Run per-item work (image decoding) in threads a batch ahead of the consumer, in input order."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def prefetched(task: Callable[[int], T], count: int, batch_size: int, workers: int) -> Iterator[list[T]]:
    """``[task(i) for i in batch]`` for consecutive batches of ``range(count)``.

    With ``workers >= 1`` the tasks run in a thread pool (PIL releases the GIL while decoding), at
    most one batch ahead of the batch being consumed, so memory stays bounded on huge inputs.
    ``workers=0`` runs each batch in the calling thread when it is needed (no overlap). A task's
    exception is raised when its batch is reached.
    """
    if workers < 1:
        for start in range(0, count, batch_size):
            yield [task(i) for i in range(start, min(start + batch_size, count))]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: deque = deque()
        submitted = 0
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            while submitted < min(count, stop + batch_size):
                futures.append(pool.submit(task, submitted))
                submitted += 1
            yield [futures.popleft().result() for _ in range(stop - start)]
