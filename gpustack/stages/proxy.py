"""Alignment inputs computed on the host reader threads, ahead of the backend.

The proxy is the frame's luminance in linear light, halved (pyramid reduce)
until it holds at most ``PROXY_MAX_PIXELS``. The channel means, measured once the
frame's transform is known, drive the brightness gains. Both run on the host for either backend, in the reader
threads (plain single-threaded Numba, releasing the GIL), so the estimates that
come from them are the same whatever the backend, and they never stall the device.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..backends.cpu._common import W0, W1, W2, decode, reflect
from ..backends.cpu._threads import scratch
from ..backends.cpu.pyramid import _pyramid_reduce_kernel, _reduce_row, reduce_work
from .estimate import MIN_SIDE

PROXY_MAX_PIXELS = 1_500_000
LUMA = (np.float32(0.2126), np.float32(0.7152), np.float32(0.0722))  # Rec. 709 / sRGB primaries
LR, LG, LB = LUMA


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _luma_kernel(src, lut, out):
    h, w, c = src.shape
    for i in range(h):
        for j in range(w):
            if c == 3:
                out[i, j] = (LR * decode(src[i, j, 0], lut) + LG * decode(src[i, j, 1], lut)
                             + LB * decode(src[i, j, 2], lut))
            else:
                out[i, j] = decode(src[i, j, 0], lut)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _luma_reduce_kernel(src, lut, dst, rows, have):
    """The pyramid reduction of the frame's luminance, without the full-size luminance plane: the
    luminance of each source row is made on the fly and reduced along the row once, into a ring of
    five such rows (slot ``row % 5``: output row ``i`` reads rows ``2i - 2 .. 2i + 2``, reflected, so
    within 4 of each other, and ``i + 1`` reuses three of them), which the vertical pass combines.
    The same values, so the same bits, as ``_luma_kernel`` then ``pyramid_reduce``. The luminance row
    and the vertical pass are written out here: a reader thread compiles this kernel on a first run
    while the first frame waits, and each helper would be compiled on its own too. Work arrays
    (``_luma_work``; the kernels allocate none, ``backends.cpu._common``): ``rows`` (8, W), the luminance
    row, then the row-reduced luminance rows in rows 1-5, slot row % 5 (``have``: which source row each
    holds), then _reduce_row's two."""
    h, w, c = src.shape
    ow = dst.shape[1]
    row, ev, od = rows[0], rows[6], rows[7]
    for slot in range(5):
        have[slot] = -1
    for i in range(dst.shape[0]):
        for m in range(5):
            r = reflect(2 * i - 2 + m, h)
            if have[r % 5] != r:
                for j in range(w):
                    if c == 3:
                        row[j] = (LR * decode(src[r, j, 0], lut) + LG * decode(src[r, j, 1], lut)
                                  + LB * decode(src[r, j, 2], lut))
                    else:
                        row[j] = decode(src[r, j, 0], lut)
                _reduce_row(row, w, rows[1 + r % 5], ow, ev, od)
                have[r % 5] = r
        t0, t1, t2 = rows[1 + reflect(2 * i - 2, h) % 5], rows[1 + reflect(2 * i - 1, h) % 5], rows[1 + (2 * i) % 5]
        t3, t4, o = rows[1 + reflect(2 * i + 1, h) % 5], rows[1 + reflect(2 * i + 2, h) % 5], dst[i]
        for j in range(ow):
            o[j] = W0 * t0[j] + W1 * t1[j] + W2 * t2[j] + W1 * t3[j] + W0 * t4[j]


def _luma_work(w: int) -> tuple:
    """``_luma_reduce_kernel``'s work arrays for a frame ``w`` pixels wide: rows, have."""
    return ((8, w), np.float32), ((5,), np.int64)


def luma_kernel(shape, max_pixels: int = PROXY_MAX_PIXELS):
    """The kernel ``make_proxy`` makes the luminance of a frame of ``shape`` (H, W, C) with: the
    reducing one when the frame is reduced at all (then ``_pyramid_reduce_kernel`` for any further
    halving), else the full-size one."""
    h, w = shape[:2]
    return _luma_kernel if h * w <= max_pixels or min(h, w) < 2 * MIN_SIDE else _luma_reduce_kernel


def make_proxy(data: np.ndarray, lut: np.ndarray | None, max_pixels: int = PROXY_MAX_PIXELS):
    """(proxy, scale): luminance of ``data`` (H, W, C) reduced by 2 until <= ``max_pixels``, never
    below the estimator's ``MIN_SIDE`` on the short side (so a frame of at least ``MIN_SIDE``
    pixels always gives a proxy the estimator accepts); ``scale`` is full-resolution pixels per
    proxy pixel (a power of two). The first reduction makes the luminance row by row, so no
    full-size plane is allocated."""
    h, w, _ = data.shape
    lut = np.zeros(1, np.float32) if lut is None else lut
    if luma_kernel(data.shape, max_pixels) is _luma_kernel:
        luma = np.empty((h, w), np.float32)
        _luma_kernel(data, lut, luma)
        return luma, 1
    luma = np.empty(((h + 1) // 2, (w + 1) // 2), np.float32)
    _luma_reduce_kernel(data, lut, luma, *scratch(_luma_work(w)))
    scale = 2
    while luma.size > max_pixels and min(luma.shape) >= 2 * MIN_SIDE:
        out = np.empty((1, (luma.shape[0] + 1) // 2, (luma.shape[1] + 1) // 2), np.float32)
        # the backend's reduce kernel on this thread alone (the fold compiles the same specialisation)
        _pyramid_reduce_kernel(luma[None], out, *scratch(reduce_work(out.shape)), 0, out.shape[1])
        luma = out[0]
        scale *= 2
    return luma, scale


def channel_means(data: np.ndarray, lut: np.ndarray | None, affine=None, *, full_shape=None, pitch: int = 1,
                  offset: float = 0.0) -> np.ndarray:
    """float64 (C,) mean linear value of each channel over the central half of the reference canvas
    (every 4th pixel), read from ``data`` through ``affine`` (reference (col, row, 1) -> frame
    (col, row); nearest sample, clamped; None for the identity). Measured where the reference is
    measured, a frame's gains compare the same part of the subject, however far it moved.

    ``data`` (h, w, C) may be a reduced image of the (H, W) = ``full_shape`` frame: its pixel
    (i, j) is centred on the frame's (``pitch * i + offset``, ``pitch * j + offset``) (a 2x2-binned
    RAW frame: pitch 2, offset 0.5).
    """
    h, w = data.shape[:2] if full_shape is None else full_shape
    c = data.shape[2]
    rows = np.arange(h // 4, h - h // 4, 4, dtype=np.float64)
    cols = np.arange(w // 4, w - w // 4, 4, dtype=np.float64)
    if affine is None:
        x, y = cols[None, :] + 0 * rows[:, None], rows[:, None] + 0 * cols[None, :]
    else:
        a = np.asarray(affine, np.float64)
        x = a[0, 0] * cols[None, :] + a[0, 1] * rows[:, None] + a[0, 2]
        y = a[1, 0] * cols[None, :] + a[1, 1] * rows[:, None] + a[1, 2]
    xi = np.clip(np.rint((x - offset) / pitch), 0, data.shape[1] - 1).astype(np.intp)
    yi = np.clip(np.rint((y - offset) / pitch), 0, data.shape[0] - 1).astype(np.intp)
    centre = data[yi, xi]
    if lut is not None:
        centre = lut[centre]
    return centre.reshape(-1, c).astype(np.float64).mean(axis=0)
