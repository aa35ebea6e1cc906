"""Warp a decoded frame into the reference geometry: (H, W, C) source -> planar float32 (C, H, W).

Twin of kernels/warp.cu. For each output pixel (row i, col j), the source position is
``x = a0*j + a1*i + a2``, ``y = a3*j + a4*i + a5`` (float64, in that order); the
sample is Catmull-Rom bicubic (Keys, a = -0.5) over the 4x4 neighbours of
``(floor(y), floor(x))``, indices clamped to the frame, in float32: per row
``r_m = wx0*s[.., x0-1] + wx1*s[.., x0] + wx2*s[.., x0+1] + wx3*s[.., x0+2]``, then
``v = wy0*r_0 + wy1*r_1 + wy2*r_2 + wy3*r_3`` and ``out = gain[c] * v``. Integer
samples go through the decoding table first. At integer positions the weights are
exactly (0, 1, 0, 0), so an identity warp copies the frame (times the gain).

Only the loads and the order in which pixels are computed differ from the CUDA kernel's (one
thread per pixel, 16 decoded samples each): here a block of output rows decodes every source row
it reads once, and the pixels of a run that share their four source rows read their taps from
those decoded rows. Within a run, a sub-run of pixels whose corner moves one column per pixel (at
a scale near 1, such as focus breathing, sub-runs of 1/|scale - 1| pixels) is computed a channel
at a time, every index unsigned, so its loads are contiguous and the loop vectorises; a run's
sub-runs are found first, so that each channel's rows are taken once a run, not once a sub-run
(every view of an array counts a reference, with atomic operations). Each row's corners and
weights are computed first, in four passes that vectorise (one coordinate's corner and fraction a
pass, then each one's weights). Each pixel's samples and every operation on them are the
kernel's, so the bits are too.

Per 12 MP RGB frame, one thread: 112-129 ms at a scale near 1 (the corners and weights in one
scalar loop and the rows taken a sub-run at a time: 131-157 ms; a pixel at a time with its
channels inside, an earlier version: 0.27-0.59 s); 440-467 ms at a scale of 0.5 with a rotation
of 0.2 rad, where sub-runs are a pixel or two long (634-653 ms taking the rows a sub-run at a
time). A separate pixel-at-a-time path for such transforms, which a focus stack does not have,
cost a first run 1.2 s more of compiling per sample type.

``warp_planar`` reads a planar (C, H, W) float32 source (a RAW frame developed on the
backend) through the same kernel: only the addressing differs.

Bicubic rather than bilinear: at half-pixel offsets bilinear interpolation is a
[0.5, 0.5] box filter that visibly softens the finest detail, which is what a
focus stack is for; Catmull-Rom keeps it (at 16 instead of 4 taps).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F1, HALF, NEG_HALF, ONE_HALF, TWO, decode
from ._threads import run_rows
from .convert import MAX_CHANNELS

A_HALF = NEG_HALF  # Keys' a
TWO_HALF = np.float32(2.5)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def cubic_weights(t):
    """Catmull-Rom weights of the taps at -1, 0, 1, 2 for a fraction t in [0, 1)."""
    w0 = ((A_HALF * t + F1) * t + A_HALF) * t
    w1 = (ONE_HALF * t - TWO_HALF) * t * t + F1
    w2 = ((-ONE_HALF * t + TWO) * t + HALF) * t
    w3 = (HALF * t + A_HALF) * t * t
    return w0, w1, w2, w3


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _clamp(i, n):
    return 0 if i < 0 else (n - 1 if i >= n else i)


#: decoded source rows a chunk of output rows keeps (a power of two)
ROW_SLOTS = 16
U1, U2, U3 = np.uint64(1), np.uint64(2), np.uint64(3)  # tap offsets (unsigned, as the tap index)
#: columns of edge samples either side of a decoded row: every tap of a corner clamped to
#: [-2, w + 1] (as warp.cu clamps it) lands in the row
PAD = 4


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _decode_row(src, lut, r, row):
    """``row`` (C, w + 2 PAD) = source row ``r`` in linear light, its edge samples repeated PAD times
    (a channel at a time: contiguous stores)."""
    w, c = src.shape[1], src.shape[2]
    s = src[r]
    for ch in range(c):
        q = row[ch]
        for j in range(w):
            q[j + PAD] = decode(s[j, ch], lut)
        for j in range(PAD):
            q[j] = q[PAD]
            q[w + PAD + j] = q[w + PAD - 1]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _warp_kernel(src, lut, a, gains, dst, rotated, rows, ints, floats, row0, row1):
    # The arithmetic of each output pixel is warp.cu's, in its order; only the loads differ: a chunk
    # of output rows (``_threads.run_rows``) decodes each source row it reads once (``_decode_row``,
    # ROW_SLOTS rows kept, carried over from one output row to the next), and within a run of pixels
    # that share their four source rows the taps are read from the decoded rows (the same samples: the clamped indices of every tap are the kernel's). Where an
    # output row spans more source rows than the slots hold (a large rotation), each run decodes
    # the columns it reads of its four rows instead (four look-ups per pixel and channel, not 16).
    # ``rotated`` None: no output row spans more source rows than the slots hold (``_rotated``), and the
    # large-rotation path is left out of the specialisation (Numba prunes a branch on an argument that is
    # None: a focus stack's first run compiles 0.5-0.6 CPU s less); True: each row is tested.
    # Work arrays (``_warp_work``; the kernels allocate none, ``_common``): ``rows`` (ROW_SLOTS, C, w + 2 PAD)
    # the decoded source rows; ``ints`` (5, >= max(ow + 1, ROW_SLOTS)) int64 and ``floats`` (10, >= ow)
    # float32 the per-row values below.
    h, w, c = src.shape
    ow = dst.shape[2]
    if ow == 0:
        return
    tags, slots = ints[0], ints[1]  # which source row each slot holds; the slots of a run's 4 rows
    for slot in range(ROW_SLOTS):
        tags[slot] = -1
    xs = ints[2]  # the corner's column, clamped to [-2, w + 1], plus PAD - 1
    ys = ints[3]  # the corner's row, clamped to [-2, h + 1]
    cuts = ints[4]  # a run's sub-runs
    fxs, fys = floats[0], floats[1]  # the fractions of x and of y
    wx0, wx1, wx2, wx3 = floats[2], floats[3], floats[4], floats[5]
    wy0, wy1, wy2, wy3 = floats[6], floats[7], floats[8], floats[9]
    a0, a2, a3, a5 = a[0], a[2], a[3], a[5]
    lo, hix, hiy = -2.0, w + 1.0, h + 1.0
    for i in range(row0, row1):
        # Each pixel's corner and weights, in passes that vectorise (every index unsigned; one
        # coordinate a pass: together they did not): x = a0 * j + a1 * i + a2 as warp.cu sums it,
        # a1 * i being the same product for the whole row; the corner clamped first (far outside,
        # every tap clamps to an edge anyway), as warp.cu does.
        bx, by = a[1] * i, a[4] * i
        for jj in range(ow):
            u = np.uint64(jj)
            x = a0 * np.float64(jj) + bx + a2
            fx = np.floor(x)
            fxs[u] = np.float32(x - fx)
            xs[u] = np.int64(lo if fx < lo else (hix if fx > hix else fx)) + (PAD - 1)
        for jj in range(ow):
            u = np.uint64(jj)
            y = a3 * np.float64(jj) + by + a5
            fy = np.floor(y)
            fys[u] = np.float32(y - fy)
            ys[u] = np.int64(lo if fy < lo else (hiy if fy > hiy else fy))
        for jj in range(ow):
            u = np.uint64(jj)
            wx0[u], wx1[u], wx2[u], wx3[u] = cubic_weights(fxs[u])
        for jj in range(ow):
            u = np.uint64(jj)
            wy0[u], wy1[u], wy2[u], wy3[u] = cubic_weights(fys[u])
        cached = abs(ys[ow - 1] - ys[0]) + 4 <= ROW_SLOTS  # y is linear in j: the row's span
        j0 = 0
        while j0 < ow:  # runs of pixels whose corner is on the same source row
            y0 = ys[j0]
            j1 = j0 + 1
            while j1 < ow and ys[j1] == y0:
                j1 += 1
            if rotated is None or cached:  # whole decoded rows, kept for the next output rows
                base = 0
                for m in range(4):
                    r = _clamp(y0 - 1 + m, h)
                    if tags[r % ROW_SLOTS] != r:
                        _decode_row(src, lut, r, rows[r % ROW_SLOTS])
                        tags[r % ROW_SLOTS] = r
                    slots[m] = r % ROW_SLOTS
            else:  # a large rotation: the run's columns of its rows, in slots 0-3 (no longer kept)
                xa, xb = xs[j0], xs[j1 - 1]  # x is linear in j: between the run's ends
                base = xb if xb < xa else xa  # (min and max written out: _common)
                for m in range(4):
                    r = _clamp(y0 - 1 + m, h)
                    for col in range(base, (xb if xb > xa else xa) + 4):
                        cc = _clamp(col - PAD, w)
                        for ch in range(c):
                            rows[m, ch, col - base] = decode(src[r, cc, ch], lut)
                    tags[m] = -1
                    slots[m] = m
            s0, s1, s2, s3 = slots[0], slots[1], slots[2], slots[3]
            nb = 0  # the run's sub-runs, whose corner moves one column per pixel: [cuts[b], cuts[b + 1])
            j = j0
            while j < j1:
                cuts[nb] = j
                nb += 1
                ja = j
                j += 1
                while j < j1 and xs[j] - j == xs[ja] - ja:
                    j += 1
            cuts[nb] = j1
            for ch in range(c):  # a channel at a time, its rows taken once a run (each view of an array
                q0 = rows[s0, ch]  # counts a reference: atomic operations, which cost as much as the
                q1 = rows[s1, ch]  # pixels of a short sub-run)
                q2 = rows[s2, ch]
                q3 = rows[s3, ch]
                d = dst[ch, i]
                g = gains[ch]
                for b in range(nb):
                    ja, jb = cuts[b], cuts[b + 1]
                    off = xs[ja] - base - ja  # contiguous loads: vectorises (every index unsigned: a
                    for jj in range(ja, jb):  # signed one would be tested for wrap-around, which turns
                        u = np.uint64(jj)     # each load into a gather)
                        k = np.uint64(jj + off)
                        w0, w1, w2, w3 = wx0[u], wx1[u], wx2[u], wx3[u]
                        r0 = w0 * q0[k] + w1 * q0[k + U1] + w2 * q0[k + U2] + w3 * q0[k + U3]
                        r1 = w0 * q1[k] + w1 * q1[k + U1] + w2 * q1[k + U2] + w3 * q1[k + U3]
                        r2 = w0 * q2[k] + w1 * q2[k + U1] + w2 * q2[k + U2] + w3 * q2[k + U3]
                        r3 = w0 * q3[k] + w1 * q3[k + U1] + w2 * q3[k + U2] + w3 * q3[k + U3]
                        d[u] = g * (wy0[u] * r0 + wy1[u] * r1 + wy2[u] * r2 + wy3[u] * r3)
            j0 = j1


def _rotated(a, ow: int):
    """``_warp_kernel``'s ``rotated`` for the affine ``a`` (6 float64) and an output ``ow`` pixels wide:
    None when every output row's corners span at most 10 source rows (``|a3| (ow - 1) <= 10``; the
    kernel's test on a row, its clamped corner rows at most 12 apart, then holds whatever the
    rounding: floor makes the span of the rows at most 1 more than that of the y's), else True."""
    return None if abs(float(a[3])) * max(ow - 1, 0) <= 10.0 else True


def _warp_work(src_hw, dst_shape) -> tuple:
    """``_warp_kernel``'s work arrays for a source of (H, W) ``src_hw`` and an output of ``dst_shape``
    (C, H, W): rows, ints, floats."""
    c, ow, w = dst_shape[0], dst_shape[2], src_hw[1]
    return (((ROW_SLOTS, c, w + 2 * PAD), np.float32), ((5, max(ow + 1, ROW_SLOTS)), np.int64),
            ((10, ow), np.float32))


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
    _launch(src, np.zeros(1, np.float32) if lut is None else lut, a, g, dst)


def warp_planar(src, affine, gains, dst):
    """``warp`` of a planar float32 source ``src`` (C, H, W) (a RAW frame developed by ``develop``):
    the same kernel, reading the source through an (H, W, C) view, so the same arithmetic."""
    if getattr(src, "dtype", None) != np.float32 or src.ndim != 3:
        raise TypeError(f"warp_planar: expected a (C, H, W) float32 source; got {getattr(src, 'dtype', '')} "
                        f"{getattr(src, 'shape', '')}")
    a = np.ascontiguousarray(affine, dtype=np.float64).reshape(6)
    g = np.ascontiguousarray(gains, dtype=np.float32)
    check_warp(src, g, dst, planar=True)
    _launch(np.moveaxis(src, 0, -1), np.zeros(1, np.float32), a, g, dst)


def _launch(src, lut, a, gains, dst):
    """``_warp_kernel`` over ``dst``'s rows for an (H, W, C) ``src`` (or view): the specialisation
    ``_rotated`` picks, and its work arrays."""
    run_rows(_warp_kernel, dst.shape[1], 16 * dst.shape[0] * dst.shape[2], src, lut, a, gains, dst,
             _rotated(a, dst.shape[2]), work=_warp_work(src.shape[:2], dst.shape))
