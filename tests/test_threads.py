"""The CPU kernels' rows on a thread pool (gpustack.backends.cpu._threads)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpustack.backends.cpu import _threads

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, work, threads", [(1, 10, 2), (7, 1 << 20, 2), (1000, 1 << 12, 4), (5, 0, 1)])
def test_chunks_cover_the_rows_once_in_order(n, work, threads):
    parts = _threads.chunks(n, work, threads)
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(parts, parts[1:]))
    assert len(parts) <= max(1, _threads.CHUNKS_PER_THREAD * threads)


def test_run_rows_covers_every_row_and_raises_a_chunks_error():
    seen = []
    _threads.run_rows(lambda tag, lo, hi: seen.extend(range(lo, hi)), 4096, 1 << 16, "x")
    assert sorted(seen) == list(range(4096))

    def fail(lo, hi):
        if lo > 0:
            raise ValueError("chunk failed")

    with pytest.raises(ValueError, match="chunk failed"):
        _threads.run_rows(fail, 4096, 1 << 16)


def test_a_launch_does_not_wait_for_a_pool_busy_with_another_launch(monkeypatch):
    """Two threads launch kernels at once (the pipeline folds one frame while it warps the next):
    when the pool's threads are busy with the other launch, the caller runs every chunk itself and
    returns, instead of waiting for a pool thread that would find nothing left to do."""
    import threading

    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)
    release = threading.Event()
    busy = _threads._workers(_threads.threads() - 1).submit(release.wait, 10)  # the one pool thread, held
    try:
        done = threading.Event()
        rows = []

        def launch():
            _threads.run_rows(lambda lo, hi: rows.extend(range(lo, hi)), 4096, 1 << 16)
            done.set()

        t = threading.Thread(target=launch)
        t.start()
        assert done.wait(5), "the launch waited for the busy pool"
        assert sorted(rows) == list(range(4096))
        t.join()
    finally:
        release.set()
        busy.result()


def test_limit_threads_holds_every_calling_thread_to_its_count(monkeypatch):
    """A batch worker's cap covers the kernels run from any thread of the process (the pipeline
    loads frames on a second thread), and lifting it gives Numba's count back."""
    import threading

    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 4)
    callers = []

    def record(lo, hi):
        callers.append(threading.get_ident())

    try:
        _threads.limit_threads(1)
        assert _threads.threads() == 1
        for _ in range(2):  # from this thread and from another
            t = threading.Thread(target=_threads.run_rows, args=(record, 4096, 1 << 16))
            t.start()
            t.join()
        _threads.run_rows(record, 4096, 1 << 16)
        assert len(callers) == 3, "one chunk per launch: no pool thread took a share"
        _threads.limit_threads(None)
        assert _threads.threads() == 4
        callers.clear()
        _threads.run_rows(record, 4096, 1 << 16)
        assert len(callers) == 4
    finally:
        _threads.limit_threads(None)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX fork")
def test_a_forked_child_runs_kernels():
    """After a fork the pool's threads are gone; the child makes its own instead of waiting forever
    for them."""
    code = r"""
import os, sys, numpy as np
from gpustack.backends.cpu import CpuBackend
be = CpuBackend()
lap = np.ones((3, 512, 512), np.float32); q = np.empty((512, 512), np.float32)
be.fuse_sqsum(lap, q)  # the pool starts
pid = os.fork()
if pid == 0:
    be.fuse_sqsum(lap * 2, q)
    os._exit(0 if (q == 12).all() else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
