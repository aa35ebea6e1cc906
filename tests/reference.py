"""Slow, obviously-correct NumPy oracles for every backend op and for the whole fusion.

Vectorised over pixels but written straight from the definitions in the kernel
docstrings, in float32 with the same order of operations, so the backends must
match them bit for bit. NumPy never fuses multiply-adds.
"""

from __future__ import annotations

import numpy as np

F = np.float32
W = [F(0.0625), F(0.25), F(0.375), F(0.25), F(0.0625)]
E0, E1, HALF = F(0.125), F(0.75), F(0.5)


def reflect_index(i, n):
    """reflect101 of integer array ``i`` into [0, n)."""
    i = np.asarray(i)
    if n == 1:
        return np.zeros_like(i)
    m = 2 * (n - 1)
    i = np.abs(i) % m
    return np.where(i >= n, m - i, i)


def reduce(src):
    c, h, w = src.shape
    oh, ow = (h + 1) // 2, (w + 1) // 2
    rows = [reflect_index(2 * np.arange(oh) + m, h) for m in range(-2, 3)]
    cols = [reflect_index(2 * np.arange(ow) + m, w) for m in range(-2, 3)]
    out = np.empty((c, oh, ow), F)
    for ch in range(c):
        t = []
        for r in rows:
            plane = src[ch][r]  # (oh, w)
            acc = W[0] * plane[:, cols[0]]
            for k in range(1, 5):
                acc = acc + W[k] * plane[:, cols[k]]
            t.append(acc)
        acc = W[0] * t[0]
        for k in range(1, 5):
            acc = acc + W[k] * t[k]
        out[ch] = acc
    return out


def _hinterp(g, n_out):
    """Expand along the last axis to n_out samples."""
    wc = g.shape[-1]
    j = np.arange(n_out)
    k_even = j // 2
    k_odd = (j - 1) // 2
    even = (E0 * g[..., reflect_index(k_even - 1, wc)] + E1 * g[..., np.minimum(k_even, wc - 1)]
            + E0 * g[..., reflect_index(k_even + 1, wc)])
    odd = HALF * g[..., np.clip(k_odd, 0, wc - 1)] + HALF * g[..., reflect_index(k_odd + 1, wc)]
    return np.where(j % 2 == 0, even, odd).astype(F)


def expand(coarse, h, w):
    """(C, h, w) expansion of ``coarse``: rows interpolated first (along columns), then down rows."""
    hz = _hinterp(coarse, w)  # (C, hc, w)
    hc = coarse.shape[1]
    i = np.arange(h)
    k_even = i // 2
    k_odd = (i - 1) // 2
    even = (E0 * hz[:, reflect_index(k_even - 1, hc)] + E1 * hz[:, np.minimum(k_even, hc - 1)]
            + E0 * hz[:, reflect_index(k_even + 1, hc)])
    odd = HALF * hz[:, np.clip(k_odd, 0, hc - 1)] + HALF * hz[:, reflect_index(k_odd + 1, hc)]
    return np.where((i % 2 == 0)[None, :, None], even, odd).astype(F)


def box_rows(src, r):
    h, w = src.shape
    acc = np.zeros((h, w), F)
    for d in range(-r, r + 1):
        acc = acc + src[:, reflect_index(np.arange(w) + d, w)]
    return acc


def box_cols(src, r):
    return box_rows(src.T, r).T.copy()


def sqsum(lap):
    acc = lap[0] * lap[0]
    for ch in range(1, lap.shape[0]):
        acc = acc + lap[ch] * lap[ch]
    return acc


def energy(lap, r):
    return box_cols(box_rows(sqsum(lap), r), r)


def convert(frame, lut, gains=None):
    """(H, W, C) -> (C, H, W) float32, times the per-channel gains."""
    x = frame.astype(F) if frame.dtype == np.float32 else lut[frame]
    out = np.ascontiguousarray(np.moveaxis(x, -1, 0)).astype(F)
    if gains is not None:
        out = (np.asarray(gains, F)[:, None, None] * out).astype(F)
    return out


def encode(planar, lut):
    n = lut.shape[0]
    v = planar
    scaled = (v * F(n - 1) + HALF).astype(F)
    idx = np.where(v > 0, np.where(v < 1, np.trunc(np.clip(np.nan_to_num(scaled), 0, n)).astype(np.int64), n - 1), 0)
    return np.ascontiguousarray(np.moveaxis(lut[idx], 0, -1))


def depth_from_scores(scores, order=None):
    """(depth, confidence) from the (N, H, W) finest-level scores, as the streaming fold defines them
    (the scores summed for the confidence in processing ``order``, shot order by default)."""
    n = scores.shape[0]
    best = np.argmax(scores, axis=0)  # first maximum: the streaming fold keeps the first on ties
    b = np.take_along_axis(scores, best[None], 0)[0]
    sp = np.take_along_axis(scores, np.maximum(best - 1, 0)[None], 0)[0]
    sn = np.take_along_axis(scores, np.minimum(best + 1, n - 1)[None], 0)[0]
    has = (best > 0) & (best < n - 1)
    a = sp - b
    c = sn - b
    den = a + c
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.clip(HALF * (a - c) / den, F(-0.5), F(0.5)).astype(F)
    depth = np.where(has & (den < 0), best.astype(F) + off, best.astype(F)).astype(F)
    order = list(range(n)) if order is None else list(order)
    total = scores[order[0]].copy()
    for k in order[1:]:
        total = total + scores[k]
    mean = total / F(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = np.where(b > 0, np.maximum((b - mean) / b, F(0)), F(0)).astype(F)
    return depth, conf


def pyramid_fusion(frames_planar, levels, r, depth_r, order=None):
    """Batch (non-streaming) Laplacian-pyramid fusion of a list of (C, H, W) float32 frames, the
    coarsest level and the scores summed in processing ``order`` (shot order by default).

    Returns (fused (C, H, W), depth (H, W), confidence (H, W))."""
    pyrs = []
    for f in frames_planar:
        g = [f.astype(F)]
        for _ in range(levels - 1):
            g.append(reduce(g[-1]))
        lap = [g[k] - expand(g[k + 1], *g[k].shape[1:]) for k in range(levels - 1)] + [g[-1]]
        pyrs.append(lap)
    n = len(pyrs)
    fused = []
    scores0 = None
    for lv in range(levels - 1):
        e = np.stack([energy(p[lv], r) for p in pyrs])
        if lv == 0:
            scores0 = np.stack([energy(p[lv], depth_r) for p in pyrs])
        idx = np.argmax(e, axis=0)
        lv_stack = np.stack([p[lv] for p in pyrs])  # (N, C, h, w)
        fused.append(np.take_along_axis(lv_stack, idx[None, None], 0)[0])
    order = list(range(n)) if order is None else list(order)
    acc = pyrs[order[0]][-1].copy()
    for k in order[1:]:
        acc = acc + pyrs[k][-1]
    g = acc / F(n)
    for lv in range(levels - 2, -1, -1):
        g = fused[lv] + expand(g, *fused[lv].shape[1:])
    depth, conf = depth_from_scores(scores0, order)
    return g.astype(F), depth, conf


def smooth_depth(depth, conf, r):
    """Confidence-weighted box^2 smoothing: (box^2(depth * conf) / box^2(conf), box^2(conf))."""
    def box2(x):
        x = box_cols(box_rows(x, r), r)
        return box_cols(box_rows(x, r), r)

    num = box2((depth * conf).astype(F))
    den = box2(conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / den, depth).astype(F)
    return out, den


def depthmap_fusion(frames_planar, depth, pyr, conf_sum, lo, inv_width):
    """The depthmap method's pass 2: per pixel the frames nearest its depth, blended linearly, mixed
    with the pyramid result by the confidence mask."""
    acc = np.zeros_like(pyr)
    for k, f in enumerate(frames_planar):
        wgt = (F(1) - np.abs(depth - F(k))).astype(F)
        acc = np.where((wgt > 0)[None], acc + wgt[None] * f, acc).astype(F)
    m = np.clip((conf_sum - lo) * inv_width, F(0), F(1)).astype(F)
    return (pyr + m[None] * (acc - pyr)).astype(F)


def cubic_weights(t):
    """Catmull-Rom weights (taps -1, 0, 1, 2) for float32 fractions t, in the kernels' order."""
    a, one, h = F(-0.5), F(1), F(0.5)
    w0 = ((a * t + one) * t + a) * t
    w1 = (F(1.5) * t - F(2.5)) * t * t + one
    w2 = ((F(-1.5) * t + F(2.0)) * t + h) * t
    w3 = (h * t + a) * t * t
    return w0, w1, w2, w3


def warp(src, lut, affine, gains, out_shape):
    """(C, H, W) float32: ``src`` (H, W, C) sampled bicubically at affine(col, row), times gains."""
    h, w, c = src.shape
    oh, ow = out_shape
    a = np.asarray(affine, np.float64).reshape(6)
    jj, ii = np.meshgrid(np.arange(ow, dtype=np.float64), np.arange(oh, dtype=np.float64))
    x = a[0] * jj + a[1] * ii + a[2]
    y = a[3] * jj + a[4] * ii + a[5]
    fx, fy = np.floor(x), np.floor(y)
    tx, ty = (x - fx).astype(F), (y - fy).astype(F)
    x0, y0 = fx.astype(np.int64), fy.astype(np.int64)
    wx, wy = cubic_weights(tx), cubic_weights(ty)
    lin = src.astype(F) if lut is None else lut[src]
    out = np.empty((c, oh, ow), F)
    for ch in range(c):
        plane = lin[:, :, ch]
        v = None
        for m in range(4):
            r = np.clip(y0 - 1 + m, 0, h - 1)
            row = None
            for n in range(4):
                col = np.clip(x0 - 1 + n, 0, w - 1)
                term = (wx[n] * plane[r, col]).astype(F)
                row = term if row is None else (row + term).astype(F)
            term = (wy[m] * row).astype(F)
            v = term if v is None else (v + term).astype(F)
        out[ch] = gains[ch] * v
    return out


def laplacian(fine, coarse):
    """``fine - expand(coarse)`` (a Laplacian level, out of place)."""
    return (fine - expand(coarse, *fine.shape[1:])).astype(F)


def soft_pow(r, e):
    """r**e by binary exponentiation on float32 arrays (the kernels' gs_soft_pow)."""
    result = np.ones_like(r)
    b = r.copy()
    while e > 0:
        if e & 1:
            result = (result * b).astype(F)
        b = (b * b).astype(F)
        e >>= 1
    return result


def soft_score(frame, levels=4, r=1, weights=(1.0, 1.0, 1.0, 0.375)):
    """(score (H, W), q0 (H, W)) of a (C, H, W) frame: E0 + expand(E1 + expand(E2 + expand(E3 /
    (8/3)))), E_l the 3x3 box sums of the squared level-l Laplacian (all channels), each divided by
    float32(1 / its level's weight), and the finest level's squared sums."""
    g = [frame]
    for _ in range(levels):
        g.append(reduce(g[-1]))
    laps = [laplacian(g[lv], g[lv + 1]) for lv in range(levels)]
    q0 = sqsum(laps[0])
    score = None
    for lv in range(levels - 1, -1, -1):
        e = box_cols(box_rows(sqsum(laps[lv]), r), r)
        if weights[lv] != 1:  # divided by float32(1 / weight), as the fusion does (fuse_divide)
            e = (e / F(1.0 / weights[lv])).astype(F)
        if score is not None:
            e = (e + expand(score[None], *e.shape)[0]).astype(F)
        score = e
    return score, q0, laps[0]


def soft_fold_step(frame, lap, score, state, k, floor, dshift, power, dpower, rmin):
    """One frame ``k`` folded into the soft state ``(max_s, den, dden, dnum, sum_s, acc, acc_lap)``
    (kernels/soft.cu gs_soft_fold with its Laplacian level ``lap`` given); the new state. The depth's
    weights are ``((s - dshift) / (max_s - dshift))^dpower``, with their own sums ``dden``, ``dnum``."""
    max_s, den, dden, dnum, sum_s, acc, acc_lap = state
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kf = F(k)
        s = (score + floor).astype(F)
        sum_s = (sum_s + s).astype(F)
        new = s > max_s
        r_new = (max_s / s).astype(F)
        restart = new & (r_new < rmin)
        rescale = new & ~restart
        sc = soft_pow(r_new, power)
        r_old = np.where(max_s > 0, s / max_s, F(1)).astype(F)
        add = ~new & (r_old >= rmin)
        wgt = soft_pow(r_old, power)
        acc = np.where(restart, frame, np.where(rescale, acc * sc + frame,
                                                np.where(add, acc + wgt * frame, acc))).astype(F)
        acc_lap = np.where(restart, lap, np.where(rescale, acc_lap * sc + lap,
                                                  np.where(add, acc_lap + wgt * lap, acc_lap))).astype(F)
        den = np.where(restart, F(1), np.where(rescale, den * sc + F(1), np.where(add, den + wgt, den))).astype(F)
        t = (s - dshift).astype(F)
        mt = (max_s - dshift).astype(F)
        rt_new = (mt / t).astype(F)
        d_rescale = new & (rt_new >= rmin)
        d_restart = new & ~d_rescale  # (a NaN ratio too)
        d_sc = soft_pow(rt_new, dpower)
        rt_old = np.where(mt > 0, t / mt, F(1)).astype(F)
        d_add = ~new & (rt_old >= rmin)
        d_wgt = soft_pow(rt_old, dpower)
        dden = np.where(d_restart, F(1), np.where(d_rescale, dden * d_sc + F(1),
                                                  np.where(d_add, dden + d_wgt, dden))).astype(F)
        dnum = np.where(d_restart, kf, np.where(d_rescale, dnum * d_sc + kf,
                                                np.where(d_add, dnum + d_wgt * kf, dnum))).astype(F)
        max_s = np.where(new, s, max_s).astype(F)
    return max_s, den, dden, dnum, sum_s, acc, acc_lap


def soft_fusion(frames_planar, order, floor, dshift, power, dpower, rmin):
    """The soft fusion of (C, H, W) frames folded in ``order`` (frame indices), written from
    kernels/soft.cu with NumPy arrays: (fused (C, H, W), depth (H, W), confidence (H, W))."""
    c, h, w = frames_planar[0].shape
    max_s, den, dden, dnum, sum_s = (np.zeros((h, w), F) for _ in range(5))
    acc, acc_lap = np.zeros((c, h, w), F), np.zeros((c, h, w), F)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k in order:
            frame = frames_planar[k]
            score, _, lap = soft_score(frame)
            max_s, den, dden, dnum, sum_s, acc, acc_lap = soft_fold_step(
                frame, lap, score, (max_s, den, dden, dnum, sum_s, acc, acc_lap), k, floor, dshift, power, dpower, rmin)
        mean = (acc / den).astype(F)
        fused = ((acc_lap / den) + expand(reduce(mean), h, w)).astype(F)
        depth = (dnum / dden).astype(F)
        conf = np.where(max_s > 0, np.maximum((max_s - sum_s / F(len(order))) / max_s, F(0)), F(0)).astype(F)
    return fused, depth, conf
