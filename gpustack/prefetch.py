"""Ordered, bounded read-ahead on worker threads."""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(fn: Callable[[T], R], items: Iterable[T], *, workers: int, ahead: int) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in order, computed on ``workers`` threads.

    At most ``ahead`` results are computed or being computed beyond the one the
    caller holds, so memory is bounded whatever the number of items. An
    exception in ``fn`` is raised at that item's turn; closing the generator
    (or an exception in the caller) cancels what has not started and waits for
    what has.
    """
    it = iter(items)
    pending: deque = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gpustack-read")
    try:
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            for item in it:
                pending.append(pool.submit(fn, item))
                break
            yield result
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
