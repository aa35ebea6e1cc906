"""Input frames (H, W, C) uint8/uint16/float32 -> planar linear float32 (C, H, W).

Twin of kernels/convert.cu.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, nogil=True, cache=True)
def _convert_lut_kernel(src, lut, dst):
    h, w, c = src.shape
    for i in prange(h):
        for j in range(w):
            for ch in range(c):
                dst[ch, i, j] = lut[src[i, j, ch]]


@njit(parallel=True, nogil=True, cache=True)
def _convert_f32_kernel(src, dst):
    h, w, c = src.shape
    for i in prange(h):
        for j in range(w):
            for ch in range(c):
                dst[ch, i, j] = src[i, j, ch]


def convert(src: np.ndarray, lut: np.ndarray | None, dst: np.ndarray) -> None:
    """Fill ``dst`` (C, H, W) float32 from ``src`` (H, W, C): through ``lut`` for integer
    samples, copied for float32 samples (already linear)."""
    if src.dtype == np.float32:
        _convert_f32_kernel(src, dst)
    else:
        _convert_lut_kernel(src, lut, dst)
