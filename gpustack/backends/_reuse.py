"""Host buffers for decoded frames, reused by size (the backends' ``host_buffer``).

The frames of a stack are all one size, so after the first few frames no buffer is allocated: a
buffer goes back to its pool when the array handed out (and every view of it) is gone, and the
next frame is decoded into it. The ``cuda`` backend's buffers are pinned memory (a frame decoded
into one is uploaded without a copy into the staging buffer); the ``cpu`` backend's are plain
memory, which the system would otherwise map and zero again for every frame (a 12 MP 16-bit RGB
frame: about 10 ms of a reader's time in 20).

The array handed out is made by ``np.frombuffer`` on a non-array buffer object, so every view of
it keeps it, not the block under it, alive: the block is reused only when nothing can read it.
A pool lives as long as its backend object (one run); it keeps the buffers freed so far, as many
as were in use at once.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np


class ReusedBuffers:
    """Host arrays over blocks made by ``make(nbytes)`` and viewed through ``wrap(block)`` (an object
    with the buffer protocol that is not an ndarray), each block reused once its array is gone."""

    def __init__(self, make, wrap=memoryview):
        self._make = make
        self._wrap = wrap
        self._free: dict[int, list] = {}
        # reentrant: a collection that frees an array (hence calls _give_back) can start on any
        # allocation, also on this thread while it holds the lock
        self._lock = threading.RLock()

    def array(self, shape, dtype) -> np.ndarray:
        """A C-contiguous writable array of ``shape`` and ``dtype`` (contents undefined)."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        if nbytes == 0:
            return np.empty(shape, dtype)
        with self._lock:
            spare = self._free.get(nbytes)
            block = spare.pop() if spare else None
        if block is None:
            block = self._make(nbytes)
        base = np.frombuffer(self._wrap(block), dtype, count)
        weakref.finalize(base, self._give_back, nbytes, block)
        return base.reshape(shape)

    def _give_back(self, nbytes, block) -> None:
        with self._lock:
            self._free.setdefault(nbytes, []).append(block)

    def spare(self) -> int:
        """How many blocks are free for reuse (for tests)."""
        with self._lock:
            return sum(len(blocks) for blocks in self._free.values())
