"""The pipeline's loading stage (``pipeline._loaded``): on a concurrent backend the next frame is
taken from the stream and loaded on a worker thread while the caller folds the current one, in
order, with at most one frame beyond the caller's taken, and an error of the stream raised at its
turn."""

import threading

import numpy as np
import pytest

from gpustack import pipeline


class _Backend:
    def __init__(self, concurrent):
        self.concurrent = concurrent

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)


class _Loader:
    def __init__(self):
        self.loaded = []

    def load(self, frame, fa, buf):
        buf[...] = frame.value
        self.loaded.append(frame.value)


class _Frame:
    def __init__(self, value):
        self.value = value
        self.data = np.zeros((2, 2, 1), np.uint8)


def _stream(n, log, fail_at=None):
    for k in range(n):
        log.append((k, threading.current_thread() is threading.main_thread()))
        if k == fail_at:
            raise ValueError(f"frame {k} is broken")
        yield _Frame(float(k)), None


@pytest.mark.parametrize("concurrent", [True, False])
def test_frames_come_in_order_each_in_a_buffer_the_caller_holds(concurrent):
    log, loader = [], _Loader()
    loaded = pipeline._loaded(_Backend(concurrent), loader, _stream(6, log), np.empty((1, 2), np.float32))
    held = []
    for k, (frame, fa, buf, seconds) in enumerate(loaded):
        assert frame.value == k and np.all(buf == k) and seconds >= 0
        # taken from the stream: this frame and, when concurrent, at most the next one
        assert len(log) <= k + (2 if concurrent else 1)
        held.append(buf)
    assert loader.loaded == [float(k) for k in range(6)]
    assert len({id(b) for b in held}) == (2 if concurrent else 1)  # two buffers in turn, or the one


def test_the_worker_takes_the_stream_beside_the_caller():
    """The stream's own work (compose, brightness, waiting for an estimate) runs on the worker,
    not on the thread that folds."""
    log = []
    loaded = pipeline._loaded(_Backend(True), _Loader(), _stream(4, log), np.empty((1, 2), np.float32))
    assert len(list(loaded)) == 4
    assert [on_main for _, on_main in log] == [False] * 4


def test_an_error_of_the_stream_is_raised_at_its_turn_and_closing_leaves_the_stream_open():
    log = []
    stream = _stream(5, log, fail_at=2)
    loaded = pipeline._loaded(_Backend(True), _Loader(), stream, np.empty((1, 2), np.float32))
    got = []
    with pytest.raises(ValueError, match="frame 2 is broken"):
        for frame, *_ in loaded:
            got.append(frame.value)
    assert got == [0.0, 1.0]
    loaded.close()


def test_closing_early_waits_for_the_load_under_way_and_takes_no_more():
    log = []
    stream = _stream(10, log)
    loaded = pipeline._loaded(_Backend(True), _Loader(), stream, np.empty((1, 2), np.float32))
    next(loaded)
    loaded.close()
    taken = len(log)
    assert taken <= 2
    # the stream is not closed by the loader, and nobody is running it: the caller can close it
    stream.close()
    assert len(log) == taken
