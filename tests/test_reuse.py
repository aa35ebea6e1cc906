"""Host buffers reused by size (``gpustack.backends._reuse``, the backends' ``host_buffer``)."""

import gc

import numpy as np

from gpustack.backends._reuse import ReusedBuffers
from gpustack.backends.cpu import CpuBackend


def _pool():
    made = []

    def make(nbytes):
        block = np.empty(nbytes, np.uint8)
        made.append(block)
        return block

    return ReusedBuffers(make), made


def test_a_buffer_is_reused_once_its_array_is_gone():
    pool, made = _pool()
    a = pool.array((30, 40, 3), np.uint16)
    a[:] = 7
    address = a.ctypes.data
    del a
    gc.collect()
    assert pool.spare() == 1
    b = pool.array((30, 40, 3), np.uint16)
    assert b.ctypes.data == address and len(made) == 1 and pool.spare() == 0
    c = pool.array((30, 40, 3), np.uint16)  # the first still in use: a new one
    assert c.ctypes.data != b.ctypes.data and len(made) == 2


def test_a_view_keeps_the_buffer_from_reuse():
    """A view (a crop, a channel, a reshaped copy of the header) outliving the array still owns the
    memory: the next buffer is another, and the view's samples stay as they were."""
    pool, made = _pool()
    a = pool.array((20, 10), np.float32)
    a[:] = 1.5
    views = [a[2:5, 3:7], a.reshape(-1)[::2], a.T, a[:, 1].view(np.uint32)]
    del a
    gc.collect()
    assert pool.spare() == 0
    b = pool.array((20, 10), np.float32)
    b[:] = -3.0
    assert len(made) == 2
    np.testing.assert_array_equal(views[0], 1.5)
    np.testing.assert_array_equal(views[1], 1.5)
    np.testing.assert_array_equal(views[2], 1.5)
    np.testing.assert_array_equal(views[3], np.float32(1.5).view(np.uint32))
    del views
    gc.collect()
    assert pool.spare() == 1  # the first comes back only now


def test_sizes_do_not_share_and_shapes_of_one_size_do():
    pool, made = _pool()
    a = pool.array((8, 8), np.float32)
    del a
    gc.collect()
    b = pool.array((8, 8), np.uint16)  # 128 bytes, not 256
    assert len(made) == 2
    c = pool.array((64,), np.float32)  # 256 bytes: the first block
    assert len(made) == 2 and c.shape == (64,) and c.dtype == np.float32
    assert b.flags.c_contiguous and b.flags.writeable and c.flags.c_contiguous and c.flags.writeable


def test_empty_shapes():
    pool, made = _pool()
    a = pool.array((0, 5, 3), np.uint16)
    assert a.shape == (0, 5, 3) and a.dtype == np.uint16 and not made


def test_the_cpu_backends_frames_reuse_their_buffers():
    be = CpuBackend()
    a = be.host_buffer((6, 7, 3), np.uint16)
    address = a.ctypes.data
    del a
    gc.collect()
    assert be.host_buffer((6, 7, 3), np.uint16).ctypes.data == address


def test_an_array_freed_by_a_collection_inside_the_pool_does_not_deadlock():
    """A cycle holding a buffer, collected while the pool's lock is held on this thread (a
    collection can start on any allocation), gives the buffer back without waiting for itself."""
    pool, made = _pool()

    class Cycle:
        pass

    holder = Cycle()
    holder.me = holder
    holder.buffer = pool.array((16, 16), np.float32)
    del holder
    with pool._lock:  # as inside array() or _give_back
        gc.collect()
    assert pool.spare() == 1
