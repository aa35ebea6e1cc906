"""Depth map: sub-frame argmax, confidence, smoothing, and the depthmap-method blend.

Twin of kernels/depth.cu.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F0, F1, HALF, NEG_HALF
from ._threads import run_rows
from .filter import box_col


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _depth_track_kernel(rowbox, best_s, prev_s, best_k, prev_of_best, next_of_best, sum_s, r, kf, side, srow,
                        row0, row1):
    h, w = rowbox.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows); srow (W,): work row
        box_col(rowbox, i, r, srow)
        for j in range(w):
            s = srow[j]
            sum_s[i, j] = sum_s[i, j] + s
            if s > best_s[i, j]:
                best_s[i, j] = s
                best_k[i, j] = kf
                if side > 0:
                    prev_of_best[i, j] = prev_s[i, j]
                    next_of_best[i, j] = -F1
                elif side < 0:
                    prev_of_best[i, j] = -F1
                    next_of_best[i, j] = prev_s[i, j]
                else:
                    prev_of_best[i, j] = -F1
                    next_of_best[i, j] = -F1
            elif best_k[i, j] == kf - F1:
                next_of_best[i, j] = s
            elif best_k[i, j] == kf + F1:
                prev_of_best[i, j] = s
            prev_s[i, j] = s


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _depth_finalize_kernel(best_s, best_k, prev_of_best, next_of_best, sum_s, n, depth, conf, row0, row1):
    h, w = best_s.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            b = best_s[i, j]
            d = best_k[i, j]
            sp = prev_of_best[i, j]
            sn = next_of_best[i, j]
            if sp >= F0 and sn >= F0:
                a = sp - b
                c = sn - b
                den = a + c
                if den < F0:
                    off = HALF * (a - c) / den
                    if off > HALF:
                        off = HALF
                    elif off < NEG_HALF:
                        off = NEG_HALF
                    d = d + off
            depth[i, j] = d
            if b > F0:
                mean = sum_s[i, j] / n
                cf = (b - mean) / b
                if cf < F0:
                    cf = F0
                conf[i, j] = cf
            else:
                conf[i, j] = F0


def _weight_rows(depth, conf, num, row0, row1):
    """Rows ``row0 .. row1`` of ``depth_weight``, in NumPy (once per stack: not worth a kernel to
    compile, ``backends.cpu``)."""
    with np.errstate(all="ignore"):  # (inf and NaN as on the GPU)
        np.multiply(depth[row0:row1], conf[row0:row1], out=num[row0:row1])


def _ratio_rows(num, den, fallback, out, row0, row1):
    """Rows ``row0 .. row1`` of ``depth_ratio``, in NumPy (once per stack); ``out`` may be any of the
    others, as in the kernel, which reads a pixel's values before it writes it."""
    keep = den[row0:row1] > F0
    o = out[row0:row1]
    with np.errstate(all="ignore"):
        np.divide(num[row0:row1], den[row0:row1], out=o, where=keep)
    np.copyto(o, fallback[row0:row1], where=~keep)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _depthmap_accumulate_kernel(frame, depth, acc, k, row0, row1):
    c, h, w = frame.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            wgt = F1 - abs(depth[i, j] - k)
            if wgt > F0:
                for ch in range(c):
                    acc[ch, i, j] = acc[ch, i, j] + wgt * frame[ch, i, j]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _depthmap_blend_kernel(acc, pyr, conf, lo, inv_width, out, row0, row1):
    c, h, w = acc.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            m = (conf[i, j] - lo) * inv_width
            if m < F0:
                m = F0
            elif m > F1:
                m = F1
            for ch in range(c):
                p = pyr[ch, i, j]
                out[ch, i, j] = p + m * (acc[ch, i, j] - p)


def depth_track(rowbox, state, r, k, side):
    """Fold frame ``k``'s focus scores (column sums over 2r+1 rows of ``rowbox``) into the depth
    state: the best score and its frame, the scores of the frames before and after it (-1: none),
    the sum of all scores (``stages.fuse.DepthState``). ``state.prev_s`` holds the score of frame
    k-1 (``side`` 1), of frame k+1 (``side`` -1) or nothing (``side`` 0) on entry, and frame k's on exit."""
    run_rows(_depth_track_kernel, rowbox.shape[0], rowbox.shape[1] * (2 * r + 2), rowbox, state.best_s, state.prev_s,
             state.best_k, state.prev_of_best, state.next_of_best, state.sum_s, r, np.float32(k),
             side, work=(((rowbox.shape[1],), np.float32),))  # frame index: exact in float32


def depth_finalize(best_s, best_k, prev_of_best, next_of_best, sum_s, n, depth, conf):
    """Depth = best frame + parabola offset in [-0.5, 0.5] (through the best score and its
    two neighbours, when both exist); confidence = (best - mean) / best, clipped to [0, 1)."""
    run_rows(_depth_finalize_kernel, depth.shape[0], depth.shape[1], best_s, best_k, prev_of_best, next_of_best,
             sum_s, n, depth, conf)


def depth_weight(depth, conf, num):
    """``num = depth * conf``."""
    run_rows(_weight_rows, depth.shape[0], depth.shape[1], depth, conf, num)


def depth_ratio(num, den, fallback, out):
    """``out = num / den`` where ``den > 0``, else ``fallback``."""
    run_rows(_ratio_rows, num.shape[0], num.shape[1], num, den, fallback, out)


def depthmap_accumulate(frame, depth, acc, k):
    """``acc += max(0, 1 - |depth - k|) * frame``: frame ``k``'s share of every pixel."""
    run_rows(_depthmap_accumulate_kernel, frame.shape[1], frame.shape[0] * frame.shape[2], frame, depth, acc, k)


def depthmap_blend(acc, pyr, conf, lo, inv_width, out):
    """``out = pyr + m * (acc - pyr)``, ``m = clip((conf - lo) * inv_width, 0, 1)``."""
    run_rows(_depthmap_blend_kernel, acc.shape[1], acc.shape[0] * acc.shape[2], acc, pyr, conf, lo, inv_width, out)
