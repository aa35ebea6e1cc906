"""Input frames (H, W, C) uint8/uint16/float32 -> planar linear float32 (C, H, W).

Twin of kernels/convert.cu: ``dst[ch, i, j] = gains[ch] * lut[src[i, j, ch]]`` (or times the
float32 sample), one multiply, so a gained frame that does not move costs no warp, and gains
of 1 leave every value as it is.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._threads import run_rows


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _convert_lut_kernel(src, lut, gains, dst, row0, row1):
    h, w, c = src.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            for ch in range(c):
                dst[ch, i, j] = gains[ch] * lut[src[i, j, ch]]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _convert_f32_kernel(src, gains, dst, row0, row1):
    h, w, c = src.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            for ch in range(c):
                dst[ch, i, j] = gains[ch] * src[i, j, ch]


def convert(src: np.ndarray, lut: np.ndarray | None, dst: np.ndarray, gains=None) -> None:
    """Fill ``dst`` (C, H, W) float32 from ``src`` (H, W, C): through ``lut`` for integer
    samples, copied for float32 samples (already linear); times ``gains`` (C float32; None: 1)."""
    g = gains_or_ones(gains, src.shape[2])
    if src.dtype == np.float32:
        run_rows(_convert_f32_kernel, src.shape[0], src.shape[1] * src.shape[2], src, g, dst)
    else:
        run_rows(_convert_lut_kernel, src.shape[0], src.shape[1] * src.shape[2], src, lut, g, dst)


#: Channels a frame may have (the CUDA kernels take the gains as eight float scalars, GS_MAX_CHANNELS).
MAX_CHANNELS = 8


def gains_or_ones(gains, c: int) -> np.ndarray:
    """(C,) float32 host gains, checked: one per channel, at most ``MAX_CHANNELS`` (both backends)."""
    if c > MAX_CHANNELS:
        raise ValueError(f"gains: frames may have at most {MAX_CHANNELS} channels; got {c}")
    if gains is None:
        return np.ones(c, np.float32)
    g = np.ascontiguousarray(gains, dtype=np.float32).reshape(-1)
    if g.size != c:
        raise ValueError(f"gains: expected one per channel ({c}); got {g.size}")
    return g
