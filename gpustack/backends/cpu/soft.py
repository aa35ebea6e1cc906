"""The ``soft`` fusion's per-pixel fold and finish. Twin of kernels/soft.cu.

Per pixel, every frame gets the weight ``((score + floor) / max)^power`` against the best
score at that pixel over the whole stack; the fold keeps it streaming by scaling what was
accumulated by ``(old max / new max)^power`` whenever a frame beats the best score so far.
A ratio below ``rmin`` counts as 0, so that no weight is a denormal float. The depth map's
weights have a lower floor and their own power: ``((score + floor - dshift) / (max - dshift))^dpower``,
their own sums and their own rescaling, so that the depth index follows the sharpest frames more
closely than the image's weights, which the floor spreads to average noise. The power is an
integer, raised by squaring (``soft_pow``), the same multiplications in the same order as
``gs_soft_pow``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F0, F1
from ._threads import run_rows


@njit(cache=True)
def soft_pow(r, e):
    """r**e for an integer e >= 0 by binary exponentiation (gs_soft_pow)."""
    result = F1
    b = r
    while e > 0:
        if e & 1:
            result = result * b
        b = b * b
        e >>= 1
    return result


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_fold_kernel(frame, lap, score, max_s, den, depth_den, depth_num, sum_s, acc, acc_lap, floor_s, dshift, kf,
                      power, dpower, rmin, row0, row1):
    c, h, w = frame.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            s = score[i, j] + floor_s
            sum_s[i, j] = sum_s[i, j] + s
            m = max_s[i, j]
            t = s - dshift  # the depth's weights: score + floor - dshift against max_s - dshift
            mt = m - dshift
            if s > m:
                r = m / s
                if r < rmin:
                    for ch in range(c):
                        acc[ch, i, j] = frame[ch, i, j]
                        acc_lap[ch, i, j] = lap[ch, i, j]
                    den[i, j] = F1
                else:
                    sc = soft_pow(r, power)
                    for ch in range(c):
                        acc[ch, i, j] = acc[ch, i, j] * sc + frame[ch, i, j]
                        acc_lap[ch, i, j] = acc_lap[ch, i, j] * sc + lap[ch, i, j]
                    den[i, j] = den[i, j] * sc + F1
                rt = mt / t
                if rt >= rmin:
                    sc = soft_pow(rt, dpower)
                    depth_den[i, j] = depth_den[i, j] * sc + F1
                    depth_num[i, j] = depth_num[i, j] * sc + kf
                else:  # (also the first frame, mt = -dshift, and a NaN ratio)
                    depth_den[i, j] = F1
                    depth_num[i, j] = kf
                max_s[i, j] = s
            else:
                r = s / m if m > F0 else F1
                if r >= rmin:
                    wgt = soft_pow(r, power)
                    for ch in range(c):
                        acc[ch, i, j] = acc[ch, i, j] + wgt * frame[ch, i, j]
                        acc_lap[ch, i, j] = acc_lap[ch, i, j] + wgt * lap[ch, i, j]
                    den[i, j] = den[i, j] + wgt
                rt = t / mt if mt > F0 else F1
                if rt >= rmin:
                    wgt = soft_pow(rt, dpower)
                    depth_den[i, j] = depth_den[i, j] + wgt
                    depth_num[i, j] = depth_num[i, j] + wgt * kf


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_finish_kernel(acc, acc_lap, den, depth_den, depth_num, max_s, sum_s, depth, conf, nf, row0, row1):
    c, h, w = acc.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            d = den[i, j]
            for ch in range(c):
                acc[ch, i, j] = acc[ch, i, j] / d
                acc_lap[ch, i, j] = acc_lap[ch, i, j] / d
            depth[i, j] = depth_num[i, j] / depth_den[i, j]
            m = max_s[i, j]
            if m > F0:
                cf = (m - sum_s[i, j] / nf) / m
                if cf < F0:
                    cf = F0
                conf[i, j] = cf
            else:
                conf[i, j] = F0


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_contrast_kernel(max_s, sum_s, out, nf, floor_s, row0, row1):
    h, w = max_s.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            num = max_s[i, j] - sum_s[i, j] / nf
            den = num + floor_s
            out[i, j] = num / den if den > F0 else F0


def soft_contrast(state, n, floor, out):
    """``out`` (H, W) = the best frame's score above the mean score, over that plus the noise
    ``floor``: 0 where only noise, towards 1 where a frame stands out (the height map's confidence)."""
    run_rows(_soft_contrast_kernel, out.shape[0], out.shape[1], state.max_s, state.sum_s, out, n, floor)


def soft_fold(frame, lap, score, state, k, floor, dshift, power, dpower, rmin):
    """Fold frame ``k`` (``frame`` and its finest Laplacian level ``lap``, (C, H, W); its focus
    ``score``, (H, W)) into ``state`` (``stages.soft.SoftState``) with the noise ``floor``, the
    depth weights' ``dshift`` (their floor is ``floor - dshift``), the integer powers of the image's
    and of the depth's weights ``power`` and ``dpower``, and the cut-off ratio ``rmin`` (float32
    scalars but the powers)."""
    run_rows(_soft_fold_kernel, frame.shape[1], 4 * frame.shape[0] * frame.shape[2], frame, lap, score, state.max_s,
             state.den, state.depth_den, state.depth_num, state.sum_s, state.acc, state.acc_lap, floor, dshift,
             np.float32(k), power, dpower, rmin)  # frame index: exact in float32


def soft_finish(state, n, depth, conf):
    """In place, ``state.acc`` and ``state.acc_lap`` become weighted means (divided by ``state.den``);
    ``depth`` = the mean frame index under the depth weights (``state.depth_num / state.depth_den``),
    ``conf`` = (max - mean score) / max, clipped to [0, 1)."""
    run_rows(_soft_finish_kernel, depth.shape[0], 2 * state.acc.shape[0] * depth.shape[1], state.acc, state.acc_lap,
             state.den, state.depth_den, state.depth_num, state.max_s, state.sum_s, depth, conf, n)
