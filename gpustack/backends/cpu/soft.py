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

from ._common import F0, F1, reflect
from ._threads import run_rows
from .filter import box_row
from .pyramid import expand_row_at, laplacian_row_at


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


@njit(cache=True)
def _laplacian_row(fine, coarse, a, lap, hx, tags, ev, od):
    """``lap`` (C, W) = row ``a`` of ``fine - expand(coarse)``, every channel (``pyramid_laplacian``'s
    arithmetic); ``hx``/``tags`` each channel's cache (``expand_row_at``)."""
    for ch in range(fine.shape[0]):
        laplacian_row_at(fine[ch, a], coarse[ch], a, lap[ch], hx[ch], tags[ch], ev, od)


@njit(cache=True)
def _squared_sum_row(lap, ch0, ch1, q):
    """``q`` = lap[ch0]^2 + ... + lap[ch1 - 1]^2, in channel order (``fuse_sqsum``'s)."""
    first = lap[ch0]
    for j in range(q.shape[0]):
        v = first[j]
        q[j] = v * v
    for ch in range(ch0 + 1, ch1):
        lr = lap[ch]
        for j in range(q.shape[0]):
            v = lr[j]
            q[j] = q[j] + v * v


@njit(cache=True)
def _score_row(ring, i, r, coarse_score, with_coarse, out, e, hx, tags, ev, od):
    """``out`` = the column sum of the row box sums of rows i - r .. i + r (``ring``, slot
    ``(row + 2r + 1) % (2r + 1)``), from the lowest row up (``filter.box_col``), plus row ``i`` of
    ``expand(coarse_score)`` if ``with_coarse`` (``pyramid_expand_add``)."""
    n = 2 * r + 1
    for j in range(out.shape[0]):
        out[j] = F0
    for d in range(-r, r + 1):
        rb = ring[(i + d + n) % n]
        for j in range(out.shape[0]):
            out[j] = out[j] + rb[j]
    if with_coarse:
        expand_row_at(coarse_score, i, e, hx, tags, ev, od)
        for j in range(out.shape[0]):
            out[j] = out[j] + e[j]


@njit(cache=True)
def _row_scratch(c, w, wc, r):
    """Each thread's rows: (ring of 2r + 1 row box sums, q, e, expanded-row caches of the C channels and
    of the coarse score, their tags, ev, od)."""
    return (np.empty((2 * r + 1, w), np.float32), np.empty(w, np.float32), np.empty(w, np.float32),
            np.empty((c + 1, 4, w), np.float32), np.full((c + 1, 4), -1, np.int64), np.empty(wc, np.float32),
            np.empty(wc, np.float32))


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_score_kernel(fine, coarse, coarse_score, with_coarse, r, out, row0, row1):
    c, h, w = fine.shape
    n = 2 * r + 1
    ring, q, e, hx, tags, ev, od = _row_scratch(c, w, coarse.shape[2], r)
    lap = np.empty((c, w), np.float32)
    for m in range(row0 - r, row1 + r):  # a chunk of range(h) (_threads.run_rows), and its window's rows
        _laplacian_row(fine, coarse, reflect(m, h), lap, hx, tags, ev, od)
        _squared_sum_row(lap, 0, c, q)
        box_row(q, w, r, ring[(m + n) % n])
        if m - r >= row0:
            _score_row(ring, m - r, r, coarse_score, with_coarse, out[m - r], e, hx[c], tags[c], ev, od)


@njit(nogil=True, cache=True, error_model="numpy")
def _soft_fold_kernel(frame, coarse, coarse_score, with_coarse, focus, r, score, max_s, den, depth_den, depth_num,
                      sum_s, acc, acc_lap, floor_s, dshift, kf, power, dpower, rmin, row0, row1):
    c, h, w = frame.shape
    n = 2 * r + 1
    ring, q, e, hx, tags, ev, od = _row_scratch(c, w, coarse.shape[2], r)
    laps = np.empty((n, c, w), np.float32)  # the finest Laplacian level's rows m - 2r .. m, all channels
    row = (np.empty((6, w), np.float32), np.empty((2, w), np.int8))  # _fold_row's scratch
    ch0, ch1 = (0, c) if focus < 0 else (focus, focus + 1)
    for m in range(row0 - r, row1 + r):  # a chunk of range(h) (_threads.run_rows), and its window's rows
        lap = laps[(m + n) % n]
        _laplacian_row(frame, coarse, reflect(m, h), lap, hx, tags, ev, od)
        _squared_sum_row(lap, ch0, ch1, q)
        box_row(q, w, r, ring[(m + n) % n])
        i = m - r
        if i < row0:
            continue
        _score_row(ring, i, r, coarse_score, with_coarse, score[i], e, hx[c], tags[c], ev, od)
        _fold_row(frame, laps[(i + n) % n], score[i], max_s, den, depth_den, depth_num, sum_s, acc, acc_lap, i,
                  floor_s, dshift, kf, power, dpower, rmin, row)


#: what ``_fold_row`` does at a pixel
RESTART, RESCALE, ADD, KEEP = 0, 1, 2, 3


@njit(cache=True)
def _pow_row(rv, e, pv, bv):
    """``pv[j]`` = soft_pow(rv[j], e) for every j: its multiplications, the exponent's bits in the
    outer loop; ``bv`` is scratch."""
    for j in range(rv.shape[0]):
        pv[j] = F1
        bv[j] = rv[j]
    while e > 0:
        if e & 1:
            for j in range(rv.shape[0]):
                pv[j] = pv[j] * bv[j]
        for j in range(rv.shape[0]):
            bv[j] = bv[j] * bv[j]
        e >>= 1


@njit(cache=True)
def _fold_row(frame, lap, score, max_s, den, depth_den, depth_num, sum_s, acc, acc_lap, i, floor_s, dshift, kf, power,
              dpower, rmin, row):
    """Row ``i`` of the fold (``soft_fold``), its Laplacian row ``lap`` (C, W) and scores ``score`` (W)
    given. In passes over the row that vectorise: the case of every pixel (restart, rescale, add or
    keep) and its ratio, for the image's weights and for the depth's, the ratios' powers
    (``_pow_row``), then each sum takes the expression of its pixel's case (selected, not branched
    on: a pixel's case is as unpredictable as its neighbour's). Every value is the one
    gs_soft_fold computes; ``row`` (6, W) float32 and (2, W) int8 are scratch."""
    c, h, w = frame.shape
    sv, rv, pv, bv, tv, qv = row[0][0], row[0][1], row[0][2], row[0][3], row[0][4], row[0][5]
    case, dcase = row[1][0], row[1][1]
    ms, ss, dd, ddn, dp = max_s[i], sum_s[i], den[i], depth_den[i], depth_num[i]
    for j in range(w):
        s = score[j] + floor_s
        ss[j] = ss[j] + s
        m = ms[j]
        sv[j] = s
        t = s - dshift  # the depth's weights: score + floor - dshift against max_s - dshift
        mt = m - dshift
        r_new = m / s  # (any of these divisions may be by 0: its value is then not selected)
        r_old = s / m if m > F0 else F1
        rt_new = mt / t
        rt_old = t / mt if mt > F0 else F1
        if s > m:
            rv[j] = r_new
            case[j] = RESTART if r_new < rmin else RESCALE
            tv[j] = rt_new
            dcase[j] = RESCALE if rt_new >= rmin else RESTART  # (the first frame, mt = -dshift, and NaN restart)
        else:
            rv[j] = r_old
            case[j] = ADD if r_old >= rmin else KEEP
            tv[j] = rt_old
            dcase[j] = ADD if rt_old >= rmin else KEEP
    _pow_row(rv, power, pv, bv)
    _pow_row(tv, dpower, qv, bv)
    for ch in range(c):
        a, al, f, lr = acc[ch, i], acc_lap[ch, i], frame[ch, i], lap[ch]
        for j in range(w):
            k, p, x, y = case[j], pv[j], a[j], f[j]
            a[j] = y if k == RESTART else (x * p + y if k == RESCALE else (x + p * y if k == ADD else x))
            x, y = al[j], lr[j]
            al[j] = y if k == RESTART else (x * p + y if k == RESCALE else (x + p * y if k == ADD else x))
    for j in range(w):
        k, p, x = case[j], pv[j], dd[j]
        dd[j] = F1 if k == RESTART else (x * p + F1 if k == RESCALE else (x + p if k == ADD else x))
        ms[j] = sv[j] if k <= RESCALE else ms[j]
        k, p, x, y = dcase[j], qv[j], ddn[j], dp[j]
        ddn[j] = F1 if k == RESTART else (x * p + F1 if k == RESCALE else (x + p if k == ADD else x))
        dp[j] = kf if k == RESTART else (y * p + kf if k == RESCALE else (y + p * kf if k == ADD else y))


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


def soft_score(fine, coarse, coarse_score, r, out):
    """``out`` (H, W) = one pyramid level's focus score: the squared Laplacian coefficients
    ``fine - expand(coarse)`` (``fine`` (C, H, W) a Gaussian level, ``coarse`` (C, (H+1)//2, (W+1)//2)
    the next one) summed over the channels, then over (2r+1) x (2r+1) windows (along the rows, then
    down the columns), plus ``expand(coarse_score)`` (the next level's score, (H+1)//2 x (W+1)//2) unless
    it is None. The arithmetic, in order, of ``pyramid_laplacian``, ``fuse_sqsum``,
    ``filter_box_rows``, ``filter_box_cols`` and ``pyramid_expand_add``, in one pass without their
    full-size intermediates."""
    check_soft_score(fine, coarse, coarse_score, r, out)
    with_coarse = coarse_score is not None  # else ``out`` stands in (not read: an array of the same type)
    run_rows(_soft_score_kernel, out.shape[0], fine.shape[2] * (12 * fine.shape[0] + 2 * r + 6), fine, coarse,
             coarse_score if with_coarse else out, with_coarse, int(r), out)


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


def soft_fold(frame, coarse, coarse_score, focus, r, score, state, k, floor, dshift, power, dpower, rmin):
    """Score frame ``k`` and fold it into ``state`` (``stages.soft.SoftState``) in one pass.

    ``frame`` (C, H, W) and its next pyramid level ``coarse`` (C, (H+1)//2, (W+1)//2): the finest
    Laplacian level ``frame - expand(coarse)`` is made row by row (``pyramid_laplacian``'s
    arithmetic). ``score`` (H, W) gets the frame's focus score, ``soft_score`` of that level on the
    channel ``focus`` (None: every channel) with radius ``r`` and the next level's score
    ``coarse_score`` (or None); then every pixel is folded with the noise ``floor``, the depth
    weights' ``dshift`` (their floor is ``floor - dshift``), the integer powers of the image's and
    of the depth's weights ``power`` and ``dpower``, and the cut-off ratio ``rmin`` (float32
    scalars but the powers)."""
    check_soft_score(frame, coarse, coarse_score, r, score)
    c = frame.shape[0]
    if focus is not None and not 0 <= focus < c:
        raise ValueError(f"soft_fold: focus channel {focus} of a frame of {c} channel(s)")
    with_coarse = coarse_score is not None
    run_rows(_soft_fold_kernel, frame.shape[1], frame.shape[2] * (18 * c + 2 * r + 6), frame, coarse,
             coarse_score if with_coarse else score, with_coarse, -1 if focus is None else int(focus), int(r), score,
             state.max_s, state.den, state.depth_den, state.depth_num, state.sum_s, state.acc, state.acc_lap, floor,
             dshift, np.float32(k), power, dpower, rmin)  # frame index: exact in float32


def soft_finish(state, n, depth, conf):
    """In place, ``state.acc`` and ``state.acc_lap`` become weighted means (divided by ``state.den``);
    ``depth`` = the mean frame index under the depth weights (``state.depth_num / state.depth_den``),
    ``conf`` = (max - mean score) / max, clipped to [0, 1)."""
    run_rows(_soft_finish_kernel, depth.shape[0], 2 * state.acc.shape[0] * depth.shape[1], state.acc, state.acc_lap,
             state.den, state.depth_den, state.depth_num, state.max_s, state.sum_s, depth, conf, n)
