"""Planar linear float32 (C, H, W) -> interleaved integer samples (H, W, C) through a table.

Twin of kernels/encode.cu. index = 0 for v <= 0 or NaN, N - 1 for v >= 1,
else trunc(v * (N - 1) + 0.5), all in float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F0, F1, HALF
from ._threads import run_rows


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _encode_lut_kernel(src, lut, dst, row0, row1):
    c, h, w = src.shape
    n = lut.shape[0]
    scale = np.float32(n - 1)
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            for ch in range(c):
                v = src[ch, i, j]
                if v > F0:
                    if v < F1:
                        idx = np.int64(v * scale + HALF)  # (a cast, as int(); not a function to compile)
                    else:
                        idx = n - 1
                else:
                    idx = 0
                dst[i, j, ch] = lut[idx]


def encode(src, lut, dst):
    """Fill ``dst`` (H, W, C) uint8/uint16 from ``src`` (C, H, W) float32 through ``lut``."""
    run_rows(_encode_lut_kernel, src.shape[1], src.shape[0] * src.shape[2], src, lut, dst)
