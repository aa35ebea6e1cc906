"""The ``soft`` fusion's per-pixel fold and finish. Twin of kernels/soft.cu.

Per pixel, every frame gets the weight ``((score + floor) / max)^power`` against the best
score at that pixel over the whole stack; the fold keeps it streaming by scaling what was
accumulated by ``(old max / new max)^power`` whenever a frame beats the best score so far.
A ratio below ``rmin`` counts as 0, so that no weight is a denormal float. The power is an
integer, raised by squaring (``soft_pow``), the same multiplications in the same order as
``gs_soft_pow``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F0, F1, reflect
from ._threads import run_rows
from .filter import box_row
from .pyramid import expand_row_at


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
def _soft_score_kernel(fine, coarse, coarse_score, with_coarse, r, out, row0, row1):
    c, h, w = fine.shape
    wc = coarse.shape[2]
    n = 2 * r + 1
    ring = np.empty((n, w), np.float32)  # row box sums of the rows i - r .. i + r, slot (row + n) % n
    q = np.empty(w, np.float32)
    e = np.empty(w, np.float32)
    hx = np.empty((c + 1, 4, w), np.float32)  # expanded coarse rows of each channel, and of coarse_score
    tags = np.full((c + 1, 4), -1, np.int64)
    ev = np.empty(wc, np.float32)
    od = np.empty(wc, np.float32)
    for m in range(row0 - r, row1 + r):  # a chunk of range(h) (_threads.run_rows), and its window's rows
        a = reflect(m, h)
        for ch in range(c):  # q = the squared sum over channels of lap = fine - expand(coarse), row a
            expand_row_at(coarse[ch], a, e, hx[ch], tags[ch], ev, od)
            src = fine[ch, a]
            if ch == 0:
                for j in range(w):
                    v = src[j] - e[j]
                    q[j] = v * v
            else:
                for j in range(w):
                    v = src[j] - e[j]
                    q[j] = q[j] + v * v
        box_row(q, w, r, ring[(m + n) % n])
        i = m - r
        if i < row0:
            continue
        o = out[i]  # the column sum of the 2r + 1 row sums, from the lowest row up (filter.box_col)
        for j in range(w):
            o[j] = F0
        for d in range(-r, r + 1):
            rb = ring[(i + d + n) % n]
            for j in range(w):
                o[j] = o[j] + rb[j]
        if with_coarse:
            expand_row_at(coarse_score, i, e, hx[c], tags[c], ev, od)
            for j in range(w):
                o[j] = o[j] + e[j]


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_fold_kernel(frame, coarse, score, max_s, den, depth_num, sum_s, acc, acc_lap, floor_s, kf, power, rmin,
                      row0, row1):
    c, h, w = frame.shape
    wc = coarse.shape[2]
    lap = np.empty((c, w), np.float32)  # row i of the finest Laplacian level, frame - expand(coarse)
    e = np.empty(w, np.float32)
    hx = np.empty((c, 4, w), np.float32)
    tags = np.full((c, 4), -1, np.int64)
    ev = np.empty(wc, np.float32)
    od = np.empty(wc, np.float32)
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for ch in range(c):
            expand_row_at(coarse[ch], i, e, hx[ch], tags[ch], ev, od)
            src, lr = frame[ch, i], lap[ch]
            for j in range(w):
                lr[j] = src[j] - e[j]
        for j in range(w):
            s = score[i, j] + floor_s
            sum_s[i, j] = sum_s[i, j] + s
            m = max_s[i, j]
            if s > m:
                r = m / s
                if r < rmin:
                    for ch in range(c):
                        acc[ch, i, j] = frame[ch, i, j]
                        acc_lap[ch, i, j] = lap[ch, j]
                    den[i, j] = F1
                    depth_num[i, j] = kf
                else:
                    sc = soft_pow(r, power)
                    for ch in range(c):
                        acc[ch, i, j] = acc[ch, i, j] * sc + frame[ch, i, j]
                        acc_lap[ch, i, j] = acc_lap[ch, i, j] * sc + lap[ch, j]
                    den[i, j] = den[i, j] * sc + F1
                    depth_num[i, j] = depth_num[i, j] * sc + kf
                max_s[i, j] = s
            else:
                r = s / m if m > F0 else F1
                if r >= rmin:
                    wgt = soft_pow(r, power)
                    for ch in range(c):
                        acc[ch, i, j] = acc[ch, i, j] + wgt * frame[ch, i, j]
                        acc_lap[ch, i, j] = acc_lap[ch, i, j] + wgt * lap[ch, j]
                    den[i, j] = den[i, j] + wgt
                    depth_num[i, j] = depth_num[i, j] + wgt * kf


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_finish_kernel(acc, acc_lap, den, depth_num, max_s, sum_s, depth, conf, nf, row0, row1):
    c, h, w = acc.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            d = den[i, j]
            for ch in range(c):
                acc[ch, i, j] = acc[ch, i, j] / d
                acc_lap[ch, i, j] = acc_lap[ch, i, j] / d
            depth[i, j] = depth_num[i, j] / d
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


def soft_score(fine, coarse, coarse_score, r, out):
    """``out`` (H, W) = one pyramid level's focus score: the squared Laplacian coefficients
    ``fine - expand(coarse)`` (``fine`` (C, H, W) a Gaussian level, ``coarse`` (C, (H+1)//2, (W+1)//2)
    the next one) summed over the channels, then over (2r+1) x (2r+1) windows (along the rows, then
    down the columns), plus ``expand(coarse_score)`` (the next level's score, (H+1)//2 x (W+1)//2) unless
    it is None. The arithmetic, in order, of ``pyramid_laplacian``, ``fuse_sqsum``,
    ``filter_box_rows``, ``filter_box_cols`` and ``pyramid_expand_add``, in one pass without their
    full-size intermediates."""
    check_soft_score(fine, coarse, coarse_score, r, out)
    with_coarse = coarse_score is not None
    if not with_coarse:
        coarse_score = out  # not read (an array of the same type: the same specialisation)
    run_rows(_soft_score_kernel, out.shape[0], fine.shape[2] * (12 * fine.shape[0] + 2 * r + 6), fine, coarse,
             coarse_score, with_coarse, int(r), out)


def check_soft_score(fine, coarse, coarse_score, r, out) -> None:
    """``soft_score``'s arguments (both backends): the shapes of a level and the next, a radius >= 0."""
    c, h, w = fine.shape
    half = ((h + 1) // 2, (w + 1) // 2)
    if tuple(coarse.shape) != (c, *half):
        raise ValueError(f"soft_score: coarse is {tuple(coarse.shape)}; expected {(c, *half)} for a fine level "
                         f"of {tuple(fine.shape)}")
    if coarse_score is not None and tuple(coarse_score.shape) != half:
        raise ValueError(f"soft_score: coarse_score is {tuple(coarse_score.shape)}; expected {half}")
    if tuple(out.shape) != (h, w):
        raise ValueError(f"soft_score: out is {tuple(out.shape)}; expected {(h, w)}")
    if int(r) != r or r < 0:
        raise ValueError(f"soft_score: r must be an integer >= 0; got {r}")


def soft_fold(frame, coarse, score, state, k, floor, power, rmin):
    """Fold frame ``k`` (``frame`` (C, H, W), its next pyramid level ``coarse`` (C, (H+1)//2, (W+1)//2),
    from which the finest Laplacian level ``frame - expand(coarse)`` is made row by row, with
    ``pyramid_laplacian``'s arithmetic; its focus ``score``, (H, W)) into ``state``
    (``stages.soft.SoftState``) with the noise ``floor``, the integer ``power`` and the cut-off ratio
    ``rmin`` (float32 scalars but ``power``)."""
    run_rows(_soft_fold_kernel, frame.shape[1], 6 * frame.shape[0] * frame.shape[2], frame, coarse, score,
             state.max_s, state.den, state.depth_num, state.sum_s, state.acc, state.acc_lap, floor, np.float32(k),
             power, rmin)  # frame index: exact in float32


def soft_finish(state, n, depth, conf):
    """In place, ``state.acc`` and ``state.acc_lap`` become weighted means (divided by ``state.den``);
    ``depth`` = the weighted mean frame index, ``conf`` = (max - mean score) / max, clipped to [0, 1)."""
    run_rows(_soft_finish_kernel, depth.shape[0], 2 * state.acc.shape[0] * depth.shape[1], state.acc, state.acc_lap,
             state.den, state.depth_num, state.max_s, state.sum_s, depth, conf, n)
