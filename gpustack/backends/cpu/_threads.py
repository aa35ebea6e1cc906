"""Running a kernel's rows on several threads.

The CPU kernels are compiled single-threaded (``@njit(nogil=True, cache=True,
error_model="numpy", ...)``, ``_common``, no ``parallel=True``) and take the range of rows ``[row0, row1)`` they
compute as their last two arguments; ``run_rows`` splits a kernel's rows into chunks and runs them
on this thread and a pool of worker threads (the kernels release the GIL), each chunk taken by
whichever thread is free. A pool thread that has not started by the time the caller has run out of
chunks is not waited for: when two threads launch kernels at once (the pipeline folds one frame
while it warps the next), the pool may be busy with the other launch, and waiting for it would
make each launch wait for the other's chunk.

Why not Numba's ``parallel=True``: a ``prange`` loop costs about 0.3-1 s more to compile per
kernel (Numba compiles its body a second time, as a gufunc, plus the launcher), which on a
2-core machine was more than half of a first run (issue 14: 12.3 CPU s of compiling for the
README's example with ``parallel=True``, 5.8 without). The rows are independent, so who computes
which row changes no bit of the result: the parity contract holds. ``error_model="numpy"`` is the
one a ``prange`` body had: a float division by zero gives inf or NaN, as on the GPU, instead of
raising ``ZeroDivisionError``.

Threads: ``numba.config.NUMBA_NUM_THREADS`` (the ``NUMBA_NUM_THREADS`` environment variable, else
the number of cores), the same count ``parallel=True`` used, or fewer where ``limit_threads``
says. Small launches (less than ``MIN_CHUNK`` samples in all) run on the calling thread alone.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Samples (rows times the work per row) below which a chunk is not worth a thread.
MIN_CHUNK = 1 << 16
#: Chunks per thread. One, as the static schedule of ``parallel=True`` had: every chunk costs its
#: thread a GIL hand-over, and while another thread holds the GIL (compiling a kernel, the
#: alignment's Python) that can take the switch interval (5 ms). Measured on 2 cores, 10 reduces
#: and row box sums of a 3 MP frame beside a GIL-bound thread: 506/461 ms with 1 chunk per thread,
#: 517/529 with 2, 548/561 with 4 (``parallel=True``: 618); alone the same within the noise.
CHUNKS_PER_THREAD = 1

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


#: A process-wide cap set by ``limit_threads`` (None: Numba's thread count).
_limit: int | None = None


def threads() -> int:
    import numba

    n = int(numba.config.NUMBA_NUM_THREADS)
    return max(1, n if _limit is None else min(n, _limit))


def limit_threads(n: int | None) -> None:
    """Run kernels on at most ``n`` threads in this process (None: Numba's count again). For a
    process that shares the machine's cores with others, such as a ``gpustack batch`` worker: it
    covers every thread of the process, the pipeline's loading thread included (no kernel uses
    Numba's own threads, so ``numba.set_num_threads`` would not reach them)."""
    global _limit
    _limit = None if n is None else max(1, int(n))


def _workers(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_threads
    with _lock:
        if _pool is None or _pool_threads != n:
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="gpustack-cpu")
            _pool_threads = n
        return _pool


def _forget_pool() -> None:
    """In a forked child: the parent's worker threads are not there, and a pool that thinks it has
    them would never run what is submitted to it."""
    global _pool, _pool_threads
    _pool, _pool_threads = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def chunks(n: int, row_work: int, nthreads: int | None = None) -> list[tuple[int, int]]:
    """``[lo, hi)`` ranges covering ``0..n`` in order: one per ``MIN_CHUNK`` samples of work, at
    most ``CHUNKS_PER_THREAD`` per thread, at least one."""
    t = threads() if nthreads is None else nthreads
    k = max(1, min(n, CHUNKS_PER_THREAD * t if t > 1 else 1, (n * max(1, row_work)) // MIN_CHUNK))
    step, extra = divmod(n, k)
    out, lo = [], 0
    for i in range(k):
        hi = lo + step + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def scratch(spec) -> list:
    """A kernel's work arrays: one uninitialised array per (shape, dtype) of ``spec``."""
    return [np.empty(shape, dtype) for shape, dtype in spec]


def run_rows(kernel, n: int, row_work: int, *args, work=()) -> None:
    """``kernel(*args, *arrays, lo, hi)`` over ``0 <= lo < hi <= n`` in chunks, on this thread and the
    pool; returns once every row is done; the first exception of a chunk is raised here. ``work``:
    the (shape, dtype) of each work array the kernel takes after ``args`` (``scratch``), allocated
    once by each thread that runs a chunk (the kernels allocate none themselves: ``_common``)."""
    parts = chunks(n, row_work)
    if len(parts) == 1:
        if n > 0:
            kernel(*args, *scratch(work), 0, n)
        return
    todo = iter(parts)  # shared: each thread takes the next chunk (next() holds the GIL)

    def run():
        arrays = None
        for lo, hi in todo:
            if arrays is None:
                arrays = scratch(work)
            kernel(*args, *arrays, lo, hi)

    helpers = [_workers(threads() - 1).submit(run) for _ in range(min(threads(), len(parts)) - 1)]
    try:
        run()
    finally:
        for f in helpers:
            if not f.cancel():  # one that has not started would find no chunk left: not waited for
                f.result()
