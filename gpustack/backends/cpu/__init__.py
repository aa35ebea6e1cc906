"""The ``cpu`` backend: NumPy arrays and Numba kernels (compiled single-threaded, no fastmath; their rows run
on a thread pool, ``_threads``; compiled ahead of use, ``_ahead``).

Most ops a run calls once per stack, not once per frame, are NumPy, on the same row chunks and
threads: the soft finish and contrast, the collapse ``pyramid_expand_add``, ``fuse_divide``, the
depth map's weighting, column sums and ratio. Each is a pass or a few over a plane, memory-bound,
about as fast as the kernel it replaced (``bench/test_bench_ops.py``, 12 MP: the collapse 59-65
against 48-60 ms, the others within 10 %), and a kernel costs 0.2-1.3 CPU s to compile on a first
run: these together 3 of the README example's 18 CPU s (issue 14). ``encode`` stays a kernel: in
NumPy it took 3.3 times as long (a 12 MP frame 224 against 69 ms) for 0.2 CPU s of compiling. Every value is still the CUDA
twin's: one IEEE float32 operation at a time, in the kernel's order (no fused multiply-add in
NumPy), checked bit for bit like the kernels'."""

from __future__ import annotations

import numpy as np

from ... import _numba_cache  # noqa: F401 - first: a cache folder for the kernels before any is decorated
from .._reuse import ReusedBuffers
from ._common import check_copy, check_crop
from .convert import convert
from .depth import depth_finalize, depth_ratio, depth_track, depth_weight, depthmap_accumulate, depthmap_blend
from .develop import develop
from .encode import encode
from .filter import filter_box_cols, filter_box_rows
from .fuse import fuse_accumulate, fuse_divide, fuse_select, fuse_sqsum
from .pyramid import pyramid_expand_add, pyramid_expand_sub, pyramid_laplacian, pyramid_reduce
from .soft import soft_contrast, soft_finish, soft_fold, soft_score
from .warp import warp, warp_planar


class CpuBackend:
    """Every op of ``gpustack.backends.base.Backend`` on the host."""

    name = "cpu"
    xp = np
    concurrent = True  # the kernels are nogil: a frame is warped on a worker while another is folded

    def __init__(self):
        import numba

        self.device_name = f"{numba.config.NUMBA_NUM_THREADS} CPU threads (Numba {numba.__version__})"
        self._frames = ReusedBuffers(lambda nbytes: np.empty(nbytes, np.uint8))

    @staticmethod
    def compile_ahead(options, src=None, lut=None) -> None:
        """Compile on a thread the kernels a run with ``options`` will call (``_ahead``); with the first
        frame's samples ``src`` (and decoding table ``lut``), the ones that depend on them."""
        from . import _ahead

        _ahead.start(options, src, lut)

    @staticmethod
    def empty(shape, dtype):
        return np.empty(shape, dtype=dtype)

    @staticmethod
    def full(shape, value, dtype):
        if value == 0 and not np.signbit(value):
            # zeroed pages from the system, filled when first touched (by the threads of the first kernel
            # that writes them), not by this thread now: a stack's state took 0.24 s here before its first fold
            return np.zeros(shape, dtype=dtype)
        return np.full(shape, value, dtype=dtype)

    def host_buffer(self, shape, dtype):
        """A host array for a frame to be decoded into, reused once the array is gone (``_reuse``)."""
        return self._frames.array(shape, dtype)

    @staticmethod
    def to_device(host_array):
        return np.ascontiguousarray(host_array)

    @staticmethod
    def to_host(array):
        return array

    @staticmethod
    def synchronize():
        return None

    @staticmethod
    def copy(src, dst) -> None:
        check_copy(src, dst)
        np.copyto(dst, src, casting="no")

    @staticmethod
    def crop(src, row0, col0, dst) -> None:
        check_crop(src, row0, col0, dst)
        h, w = dst.shape[-2:]
        dst[...] = src[..., row0:row0 + h, col0:col0 + w]

    convert = staticmethod(convert)
    develop = staticmethod(develop)
    warp = staticmethod(warp)
    warp_planar = staticmethod(warp_planar)
    pyramid_reduce = staticmethod(pyramid_reduce)
    pyramid_expand_sub = staticmethod(pyramid_expand_sub)
    pyramid_expand_add = staticmethod(pyramid_expand_add)
    pyramid_laplacian = staticmethod(pyramid_laplacian)
    fuse_sqsum = staticmethod(fuse_sqsum)
    fuse_select = staticmethod(fuse_select)
    fuse_accumulate = staticmethod(fuse_accumulate)
    fuse_divide = staticmethod(fuse_divide)
    filter_box_rows = staticmethod(filter_box_rows)
    filter_box_cols = staticmethod(filter_box_cols)
    depth_track = staticmethod(depth_track)
    depth_finalize = staticmethod(depth_finalize)
    depth_weight = staticmethod(depth_weight)
    depth_ratio = staticmethod(depth_ratio)
    depthmap_accumulate = staticmethod(depthmap_accumulate)
    depthmap_blend = staticmethod(depthmap_blend)
    soft_score = staticmethod(soft_score)
    soft_fold = staticmethod(soft_fold)
    soft_finish = staticmethod(soft_finish)
    soft_contrast = staticmethod(soft_contrast)
    encode = staticmethod(encode)
