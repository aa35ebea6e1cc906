"""The ``soft`` fusion's per-pixel fold and finish. Twin of kernels/soft.cu.

Per pixel, every frame gets the weight ``((score + floor) / max)^power`` against the best
score at that pixel over the whole stack; the fold keeps it streaming by scaling what was
accumulated by ``(old max / new max)^power`` whenever a frame beats the best score so far.
A ratio below ``rmin`` counts as 0, so that no weight is a denormal float. The depth map's
weights have a lower floor and their own power: ``((score + floor - dshift) / (max - dshift))^dpower``,
their own sums and their own rescaling, so that the depth index follows the sharpest frames more
closely than the image's weights, which the floor spreads to average noise. The power is an
integer, raised by squaring in the fold's kernel, the same multiplications in the same order as
``gs_soft_pow``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import E0, E1, F0, F1, HALF, reflect
from ._threads import run_rows
from .filter import box_row
from .pyramid import _expand_row


#: what the fold does at a pixel: 2 * (the frame beats max_s) + (its ratio's power is used)
KEEP, ADD, RESTART, RESCALE = 0, 1, 2, 3


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _coarse_rows(coarse, y, w, hx, tags, ev, od):
    """The expanded coarse rows fine row ``y`` of expand(``coarse``) combines, ``(r(k-1), r(k), r(k+1))``,
    ``k = y // 2`` (the first only for an even ``y``; reflect101 rows): each coarse row of the 2-D
    ``coarse`` expanded along the row (``pyramid._expand_row``) to ``w`` samples, from the cache ``hx``
    (4, w), slot ``row % 4``, whose ``tags`` (4,) say which coarse row each slot holds (-1: none), or
    computed into it (the rows a fine row needs are within 2 of each other, so never the same slot;
    rows in any order); ``ev``, ``od`` (wc) are scratch."""
    hc, wc = coarse.shape
    k = y // 2
    ka = reflect(k - 1, hc) if y % 2 == 0 else k
    for kk in (k, reflect(k + 1, hc), ka):
        if tags[kk % 4] != kk:
            _expand_row(coarse[kk], wc, hx[kk % 4], w, ev, od)
            tags[kk % 4] = kk
    return hx[ka % 4], hx[k % 4], hx[reflect(k + 1, hc) % 4]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _soft_fold_kernel(frame, coarse, coarse_score, with_coarse, fold, maps, focus, r, score, max_s, den, depth_den,
                      depth_num, sum_s, acc, acc_lap, floor_s, dshift, kf, power, dpower, rmin, laps, hx, tags, ring,
                      rows, cases, row0, row1):
    """Rows ``row0 .. row1`` of ``soft_fold`` or, without ``fold``, of ``soft_score`` (``score`` the
    output, the state's arrays not read).

    One kernel for both, its passes written out in it rather than in helpers: on a first run Numba
    compiles every helper on its own and again inside each caller, which cost more than these
    kernels' run time on a small stack. Per row ``m`` of the window (a chunk of range(h),
    ``_threads.run_rows``, and its 2r rows around): the Laplacian row ``frame - expand(coarse)`` of
    every channel (``pyramid_laplacian``'s arithmetic), the squared sum of the focus channels
    (``fuse_sqsum``'s order) and its row box sum (``filter.box_row``) into a ring of 2r + 1 rows; then
    for row ``i = m - r`` the column sum of the ring from the lowest row up (``filter.box_col``) plus
    row ``i`` of ``expand(coarse_score)`` if ``with_coarse`` (``pyramid_expand_add``), which is its
    score; then the fold of row ``i`` (below): without ``maps``, only of the image's sums (``sum_s``,
    ``depth_den`` and ``depth_num`` are not read or written: stand-ins of the same type)."""
    c, h, w = frame.shape
    n = 2 * r + 1
    ch0, ch1 = (0, c) if focus < 0 else (focus, focus + 1)
    # work arrays (``_fold_work``): laps, the Laplacian rows m - 2r .. m, all channels; hx, the expanded
    # coarse rows of each channel and of the coarse score, and tags, which coarse row each slot holds;
    # ring, the row box sums of rows m - 2r .. m, slot row % n; rows and cases, a row's values
    for ch in range(c + 1):
        for slot in range(4):
            tags[ch, slot] = -1
    q, rv, pv, tv, qv, ev, od = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5], rows[6]  # (ev, od: _expand_row's)
    case, dcase = cases[0], cases[1]
    for m in range(row0 - r, row1 + r):
        a = reflect(m, h)
        lap = laps[(m + n) % n]
        for ch in range(c):
            ha, hb, hn = _coarse_rows(coarse[ch], a, w, hx[ch], tags[ch], ev, od)
            f, lr = frame[ch, a], lap[ch]
            if a % 2 == 0:
                for j in range(w):
                    lr[j] = f[j] - (E0 * ha[j] + E1 * hb[j] + E0 * hn[j])
            else:
                for j in range(w):
                    lr[j] = f[j] - (HALF * hb[j] + HALF * hn[j])
        first = lap[ch0]
        for j in range(w):
            v = first[j]
            q[j] = v * v
        for ch in range(ch0 + 1, ch1):
            lr = lap[ch]
            for j in range(w):
                v = lr[j]
                q[j] = q[j] + v * v
        box_row(q, w, r, ring[(m + n) % n])
        i = m - r
        if i < row0:
            continue
        out = score[i]
        for j in range(w):
            out[j] = F0
        for d in range(-r, r + 1):
            rb = ring[(i + d + n) % n]
            for j in range(w):
                out[j] = out[j] + rb[j]
        if with_coarse:
            ha, hb, hn = _coarse_rows(coarse_score, i, w, hx[c], tags[c], ev, od)
            if i % 2 == 0:
                for j in range(w):
                    out[j] = out[j] + (E0 * ha[j] + E1 * hb[j] + E0 * hn[j])
            else:
                for j in range(w):
                    out[j] = out[j] + (HALF * hb[j] + HALF * hn[j])
        if not fold:
            continue
        # The fold of row i (soft_fold), in passes over the row that vectorise: the case of every pixel
        # (restart, rescale, add or keep) and its ratio, for the image's weights and for the depth's,
        # the ratios' powers, then each sum takes the expression of its pixel's case (selected, not
        # branched on: a pixel's case is as unpredictable as its neighbour's). Every value is the one
        # gs_soft_fold computes: each ratio is one division of the operands its case selects (1 / 1
        # where gs_soft_fold takes 1); a ratio whose power is not used is 1 instead, since its powers
        # could be denormal, which costs the processor about a hundred cycles a multiplication.
        ms, ss, dd, ddn, dp = max_s[i], sum_s[i], den[i], depth_den[i], depth_num[i]
        if maps:  # the depth's case and ratio first (max_s is updated below), and the sum of the scores
            for j in range(w):
                s = out[j] + floor_s
                ss[j] = ss[j] + s
                mx = ms[j]
                t = s - dshift  # the depth's weights: score + floor - dshift against max_s - dshift
                mt = mx - dshift
                up = s > mx
                to = mt > F0
                rt = (mt if up else (t if to else F1)) / (t if up else (mt if to else F1))
                duse = 1 if rt >= rmin else 0
                dcase[j] = (RESTART if up else KEEP) + duse
                tv[j] = rt if duse == 1 else F1
        for j in range(w):
            s = out[j] + floor_s
            mx = ms[j]
            up = s > mx
            ro = mx > F0
            rs = (mx if up else (s if ro else F1)) / (s if up else (mx if ro else F1))  # m / s, s / m or 1
            # whether the ratio's power is used: rescale unless rs < rmin, add if rs >= rmin (they
            # differ on NaN); in integer arithmetic, since the same as selects on up made LLVM fall
            # back to its scalar loop
            use = (1 if rs >= rmin else 0) | ((1 if up else 0) & (0 if rs < rmin else 1))
            case[j] = (RESTART if up else KEEP) + use
            rv[j] = rs if use == 1 else F1
            ms[j] = s if up else mx
        # pv = rv ** power, qv = tv ** dpower (the maps') by squaring: gs_soft_pow's multiplications, the
        # exponent's bits outside
        for which in range(2 if maps else 1):
            bx, e, px = (rv, power, pv) if which == 0 else (tv, dpower, qv)
            one = True  # px is 1, not stored yet (no pass that writes 1s); bx is squared in place
            while e > 0:
                if e & 1:
                    if one:
                        for j in range(w):
                            px[j] = F1 * bx[j]  # (gs_soft_pow's result * b with result = 1)
                    else:
                        for j in range(w):
                            px[j] = px[j] * bx[j]
                    one = False
                if e > 1:  # (the last b * b is not used)
                    for j in range(w):
                        bx[j] = bx[j] * bx[j]
                e >>= 1
            if one:
                for j in range(w):
                    px[j] = F1
        li = laps[(i + n) % n]
        for ch in range(c):
            ac, al, f, lr = acc[ch, i], acc_lap[ch, i], frame[ch, i], li[ch]
            for j in range(w):
                k, p, x, y = case[j], pv[j], ac[j], f[j]
                ac[j] = y if k == RESTART else (x * p + y if k == RESCALE else (x + p * y if k == ADD else x))
            for j in range(w):
                k, p, x, y = case[j], pv[j], al[j], lr[j]
                al[j] = y if k == RESTART else (x * p + y if k == RESCALE else (x + p * y if k == ADD else x))
        for j in range(w):
            k, p, x = case[j], pv[j], dd[j]
            dd[j] = F1 if k == RESTART else (x * p + F1 if k == RESCALE else (x + p if k == ADD else x))
        if maps:
            for j in range(w):
                k, p, x, y = dcase[j], qv[j], ddn[j], dp[j]
                ddn[j] = F1 if k == RESTART else (x * p + F1 if k == RESCALE else (x + p if k == ADD else x))
                dp[j] = kf if k == RESTART else (y * p + kf if k == RESCALE else (y + p * kf if k == ADD else y))


def _finish_rows(acc, acc_lap, den, depth_den, depth_num, max_s, sum_s, depth, conf, nf, row0, row1):
    """Rows ``row0 .. row1`` of ``soft_finish`` (``_threads.run_rows``), in NumPy: once per stack, so not
    worth a kernel to compile (``backends.cpu``); every value is ``gs_soft_finish``'s, one IEEE float32
    operation at a time. ``depth`` None: the means only (``depth_den``, ``depth_num``, ``sum_s``, ``conf``
    not read)."""
    with np.errstate(all="ignore"):  # inf and NaN, as on the GPU
        d = den[row0:row1]
        for a in (acc, acc_lap):
            rows = a[:, row0:row1]
            np.divide(rows, d, out=rows)
        if depth is None:
            return
        np.divide(depth_num[row0:row1], depth_den[row0:row1], out=depth[row0:row1])
        m, cf = max_s[row0:row1], conf[row0:row1]
        np.divide(sum_s[row0:row1], nf, out=cf)
        np.subtract(m, cf, out=cf)
        np.divide(cf, m, out=cf)  # (m - sum_s / nf) / m
        np.copyto(cf, F0, where=cf < F0)  # (NaN kept)
        np.copyto(cf, F0, where=~(m > F0))


def _contrast_rows(max_s, sum_s, out, nf, floor_s, row0, row1):
    """Rows ``row0 .. row1`` of ``soft_contrast``, in NumPy (once per stack): ``gs_soft_contrast``'s values."""
    with np.errstate(all="ignore"):
        num = np.divide(sum_s[row0:row1], nf)
        np.subtract(max_s[row0:row1], num, out=num)  # max_s - sum_s / nf
        den = np.add(num, floor_s)
        o = out[row0:row1]
        np.divide(num, den, out=o)
        np.copyto(o, F0, where=~(den > F0))


def _fold_work(shape, r) -> tuple:
    """The work arrays of ``_soft_fold_kernel`` for a frame of ``shape`` (C, H, W) and radius ``r``
    (``_threads.run_rows``): laps, hx, tags, ring, rows, cases."""
    c, _, w = shape
    n = 2 * int(r) + 1
    return (((n, c, w), np.float32), ((c + 1, 4, w), np.float32), ((c + 1, 4), np.int64), ((n, w), np.float32),
            ((7, w), np.float32), ((2, w), np.int8))


def soft_contrast(state, n, floor, out):
    """``out`` (H, W) = the best frame's score above the mean score, over that plus the noise
    ``floor``: 0 where only noise, towards 1 where a frame stands out (the height map's confidence)."""
    run_rows(_contrast_rows, out.shape[0], out.shape[1], state.max_s, state.sum_s, out, n, floor)


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
    # the fold's kernel without the fold (one specialisation to compile for both): ``out`` and ``fine``
    # stand in for the state, which it does not read
    f0 = np.float32(0.0)
    run_rows(_soft_fold_kernel, out.shape[0], fine.shape[2] * (12 * fine.shape[0] + 2 * r + 6), fine, coarse,
             coarse_score if with_coarse else out, with_coarse, False, False, -1, int(r), out, out, out, out, out, out,
             fine, fine, f0, f0, f0, 0, 0, f0, work=_fold_work(fine.shape, r))


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


def check_soft_fold(frame, coarse, coarse_score, focus, r, score) -> None:
    """``soft_fold``'s arguments (both backends): ``check_soft_score``'s, and a focus channel of the
    frame or None."""
    check_soft_score(frame, coarse, coarse_score, r, score)
    c = frame.shape[0]
    if focus is not None and (int(focus) != focus or not 0 <= focus < c):
        raise ValueError(f"soft_fold: focus channel {focus} of a frame of {c} channel(s)")


def soft_fold(frame, coarse, coarse_score, focus, r, score, state, k, floor, dshift, power, dpower, rmin):
    """Score frame ``k`` and fold it into ``state`` (``stages.soft.SoftState``) in one pass; a state
    without the depth map's sums (``sum_s``, ``depth_den`` and ``depth_num`` None) gets only the image's.

    ``frame`` (C, H, W) and its next pyramid level ``coarse`` (C, (H+1)//2, (W+1)//2): the finest
    Laplacian level ``frame - expand(coarse)`` is made row by row (``pyramid_laplacian``'s
    arithmetic). ``score`` (H, W) gets the frame's focus score, ``soft_score`` of that level on the
    channel ``focus`` (None: every channel) with radius ``r`` and the next level's score
    ``coarse_score`` (or None); then every pixel is folded with the noise ``floor``, the depth
    weights' ``dshift`` (their floor is ``floor - dshift``), the integer powers of the image's and
    of the depth's weights ``power`` and ``dpower``, and the cut-off ratio ``rmin`` (float32
    scalars but the powers)."""
    check_soft_fold(frame, coarse, coarse_score, focus, r, score)
    c = frame.shape[0]
    with_coarse = coarse_score is not None
    maps = check_maps(state.depth_den, state.depth_num, state.sum_s)
    stand_in = state.max_s  # for the sums a state without maps has not (not read)
    run_rows(_soft_fold_kernel, frame.shape[1], frame.shape[2] * ((18 if maps else 15) * c + 2 * r + 6), frame,
             coarse, coarse_score if with_coarse else score, with_coarse, True, maps,
             -1 if focus is None else int(focus), int(r), score, state.max_s, state.den,
             *((state.depth_den, state.depth_num, state.sum_s) if maps else (stand_in,) * 3), state.acc,
             state.acc_lap, floor, dshift, np.float32(k), power, dpower, rmin,  # frame index: exact in float32
             work=_fold_work(frame.shape, r))


def check_maps(*planes) -> bool:
    """Whether a soft state keeps the depth map's sums (both backends): ``planes``, its ``depth_den``,
    ``depth_num`` and ``sum_s`` (and the finish's ``depth`` and ``conf``), all arrays or all None."""
    kept = [a is not None for a in planes]
    if any(kept) != all(kept):
        raise ValueError("soft state: depth_den, depth_num and sum_s (and the finish's depth and conf) are all "
                         "arrays (with the maps) or all None")
    return all(kept)


def soft_finish(state, n, depth, conf):
    """In place, ``state.acc`` and ``state.acc_lap`` become weighted means (divided by ``state.den``);
    ``depth`` = the mean frame index under the depth weights (``state.depth_num / state.depth_den``),
    ``conf`` = (max - mean score) / max, clipped to [0, 1). A state without the maps' sums: the means
    only, ``depth`` and ``conf`` None."""
    maps = check_maps(state.depth_den, state.depth_num, state.sum_s, depth, conf)
    c, h, w = state.acc.shape
    run_rows(_finish_rows, h, (2 * c + (3 if maps else 0)) * w, state.acc, state.acc_lap, state.den, state.depth_den,
             state.depth_num, state.max_s, state.sum_s, depth, conf, n)
