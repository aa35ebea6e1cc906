"""Warp a decoded frame into the reference geometry: (H, W, C) source -> planar float32 (C, H, W).

Twin of kernels/warp.cu. For each output pixel (row i, col j), the source position is
``x = a0*j + a1*i + a2``, ``y = a3*j + a4*i + a5`` (float64, in that order); the
sample is Catmull-Rom bicubic (Keys, a = -0.5) over the 4x4 neighbours of
``(floor(y), floor(x))``, indices clamped to the frame, in float32: per row
``r_m = wx0*s[.., x0-1] + wx1*s[.., x0] + wx2*s[.., x0+1] + wx3*s[.., x0+2]``, then
``v = wy0*r_0 + wy1*r_1 + wy2*r_2 + wy3*r_3`` and ``out = gain[c] * v``. Integer
samples go through the decoding table first. At integer positions the weights are
exactly (0, 1, 0, 0), so an identity warp copies the frame (times the gain).

``warp_planar`` reads a planar (C, H, W) float32 source (a RAW frame developed on the
backend) through the same kernel: only the addressing differs.

Bicubic rather than bilinear: at half-pixel offsets bilinear interpolation is a
[0.5, 0.5] box filter that visibly softens the finest detail, which is what a
focus stack is for; Catmull-Rom keeps it (at 16 instead of 4 taps).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._common import F1, HALF, NEG_HALF, ONE_HALF, TWO, decode
from ._threads import run_rows
from .convert import MAX_CHANNELS

A_HALF = NEG_HALF  # Keys' a
TWO_HALF = np.float32(2.5)


@njit(cache=True)
def cubic_weights(t):
    """Catmull-Rom weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1)."""
    w0 = ((A_HALF * t + F1) * t + A_HALF) * t
    w1 = (ONE_HALF * t - TWO_HALF) * t * t + F1
    w2 = ((-ONE_HALF * t + TWO) * t + HALF) * t
    w3 = (HALF * t + A_HALF) * t * t
    return w0, w1, w2, w3


@njit(cache=True)
def _clamp(i, n):
    return 0 if i < 0 else (n - 1 if i >= n else i)


@njit(cache=True)
def _row4(src, lut, r, c0, c1, c2, c3, ch, wx0, wx1, wx2, wx3):
    return (wx0 * decode(src[r, c0, ch], lut) + wx1 * decode(src[r, c1, ch], lut)
            + wx2 * decode(src[r, c2, ch], lut) + wx3 * decode(src[r, c3, ch], lut))


@njit(nogil=True, cache=True, error_model="numpy")
def _warp_kernel(src, lut, a, gains, dst, row0, row1):
    h, w, c = src.shape
    oh, ow = dst.shape[1], dst.shape[2]
    for i in range(row0, row1):  # a chunk of range(oh) (_threads.run_rows)
        for j in range(ow):
            x = a[0] * j + a[1] * i + a[2]
            y = a[3] * j + a[4] * i + a[5]
            fx = math.floor(x)
            fy = math.floor(y)
            tx = np.float32(x - fx)
            ty = np.float32(y - fy)
            x0 = int(fx)
            y0 = int(fy)
            wx0, wx1, wx2, wx3 = cubic_weights(tx)
            wy0, wy1, wy2, wy3 = cubic_weights(ty)
            c0 = _clamp(x0 - 1, w)
            c1 = _clamp(x0, w)
            c2 = _clamp(x0 + 1, w)
            c3 = _clamp(x0 + 2, w)
            r0 = _clamp(y0 - 1, h)
            r1 = _clamp(y0, h)
            r2 = _clamp(y0 + 1, h)
            r3 = _clamp(y0 + 2, h)
            for ch in range(c):
                v = (wy0 * _row4(src, lut, r0, c0, c1, c2, c3, ch, wx0, wx1, wx2, wx3)
                     + wy1 * _row4(src, lut, r1, c0, c1, c2, c3, ch, wx0, wx1, wx2, wx3)
                     + wy2 * _row4(src, lut, r2, c0, c1, c2, c3, ch, wx0, wx1, wx2, wx3)
                     + wy3 * _row4(src, lut, r3, c0, c1, c2, c3, ch, wx0, wx1, wx2, wx3))
                dst[ch, i, j] = gains[ch] * v


def check_warp(src, gains, dst, planar=False) -> None:
    """One gain per channel and matching channel counts (both backends check before dispatch: the
    kernels read ``gains[ch]`` unchecked)."""
    c = src.shape[0 if planar else 2]
    if src.ndim != 3 or dst.ndim != 3 or dst.shape[0] != c or len(gains) != c or c > MAX_CHANNELS:
        raise ValueError(f"warp: src {tuple(src.shape)} ({'C, H, W' if planar else 'H, W, C'}), dst {tuple(dst.shape)} "
                         f"(C, H, W) and {len(gains)} gain(s) must agree on C <= {MAX_CHANNELS}")


def warp(src, lut, affine, gains, dst):
    """Fill ``dst`` (C, H, W) float32 with ``src`` (H, W, C) resampled at ``affine`` (6 float64:
    the rows of the (2, 3) matrix mapping output (col, row, 1) to source (col, row)), times ``gains``
    (C float32). ``lut`` decodes integer samples (None for float32 sources)."""
    a = np.ascontiguousarray(affine, dtype=np.float64).reshape(6)
    g = np.ascontiguousarray(gains, dtype=np.float32)
    check_warp(src, g, dst)
    run_rows(_warp_kernel, dst.shape[1], 16 * dst.shape[0] * dst.shape[2], src,
             np.zeros(1, np.float32) if lut is None else lut, a, g, dst)


def warp_planar(src, affine, gains, dst):
    """``warp`` of a planar float32 source ``src`` (C, H, W) (a RAW frame developed by ``develop``):
    the same kernel, reading the source through an (H, W, C) view, so the same arithmetic."""
    if getattr(src, "dtype", None) != np.float32 or src.ndim != 3:
        raise TypeError(f"warp_planar: expected a (C, H, W) float32 source; got {getattr(src, 'dtype', '')} "
                        f"{getattr(src, 'shape', '')}")
    a = np.ascontiguousarray(affine, dtype=np.float64).reshape(6)
    g = np.ascontiguousarray(gains, dtype=np.float32)
    check_warp(src, g, dst, planar=True)
    run_rows(_warp_kernel, dst.shape[1], 16 * dst.shape[0] * dst.shape[2], np.moveaxis(src, 0, -1),
             np.zeros(1, np.float32), a, g, dst)
