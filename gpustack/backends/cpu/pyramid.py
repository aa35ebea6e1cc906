"""Gaussian/Laplacian pyramid operators on planar float32 (C, H, W) arrays.

Twin of kernels/pyramid.cu: the same taps, summed in the same order.
reduce:  t_m = W0*s[r_m, 2j-2] + W1*s[r_m, 2j-1] + W2*s[r_m, 2j] + W1*s[r_m, 2j+1] + W0*s[r_m, 2j+2]
         out[i, j] = W0*t_0 + W1*t_1 + W2*t_2 + W1*t_3 + W0*t_4,  r_m = 2i - 2 + m,
         W = [1, 4, 6, 4, 1] / 16.
expand:  along a row, even outputs 2k take E0*g[k-1] + E1*g[k] + E0*g[k+1] ((1, 6, 1) / 8),
         odd outputs 2k+1 take HALF*g[k] + HALF*g[k+1]; the rows so expanded are then
         combined down the columns with the same weights.
Borders: reflect101 on the grid being read.

The loops work row by row (the horizontal pass into a small buffer, then the
vertical one), deinterleave even and odd samples into contiguous buffers and
split the border columns off, so that the interior loops vectorise; the value
of every output sample is still the expression above, in that order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import E0, E1, HALF, W0, W1, W2, reflect, reflected_rows
from ._threads import run_rows


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _reduce_row(row, w, out, ow, ev, od):
    # ev[k] = row[2k], od[k] = row[2k+1]
    ne = (w + 1) // 2; no = w // 2
    for k in range(no):
        ev[k] = row[2 * k]; od[k] = row[2 * k + 1]
    if ne > no:
        ev[ne - 1] = row[w - 1]
    jhi = (w - 3) // 2 if (w - 3) // 2 < ow - 1 else ow - 1  # (min and max written out: _common)
    n = jhi  # j = 1..jhi
    if n > 0:
        a = ev[0:n]; b = od[0:n]; c = ev[1:n + 1]; d = od[1:n + 1]; e = ev[2:n + 2]
        o = out[1:n + 1]
        for j in range(n):
            o[j] = W0 * a[j] + W1 * b[j] + W2 * c[j] + W1 * d[j] + W0 * e[j]
    lo, hi = ow if ow < 1 else 1, jhi + 1 if jhi + 1 > 1 else 1
    for t in range(lo + (ow - hi if ow - hi > 0 else 0)):  # the border samples, whose taps may cross it: j == 0,
        # and j > jhi
        j = t if t < lo else hi + t - lo
        bb = 2 * j
        out[j] = (W0 * row[reflect(bb - 2, w)] + W1 * row[reflect(bb - 1, w)] + W2 * row[reflect(bb, w)]
                  + W1 * row[reflect(bb + 1, w)] + W0 * row[reflect(bb + 2, w)])


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _pyramid_reduce_kernel(src, dst, rows, tags, row0, row1):
    c, h, w = src.shape
    oh, ow = dst.shape[1], dst.shape[2]
    # work arrays (``reduce_work``): rows 0-7 of ``rows`` hold the row-reduced input rows, slot row % 8,
    # ``tags`` which one (ch * h + row): output row i reads rows 2i-2 .. 2i+2 (reflected: within 4 of each
    # other, so never one slot), and i + 1 reuses three of them; rows 8 and 9 are _reduce_row's
    hr = rows
    for slot in range(8):
        tags[slot] = -1
    ev, od = rows[8], rows[9]
    for p in range(row0, row1):  # a chunk of range(c * oh) (_threads.run_rows)
        ch = p // oh
        i = p - ch * oh
        for m in range(5):
            a = reflect(2 * i - 2 + m, h)
            if tags[a % 8] != ch * h + a:
                _reduce_row(src[ch, a], w, hr[a % 8], ow, ev, od)
                tags[a % 8] = ch * h + a
        t0, t1, t2 = hr[reflect(2 * i - 2, h) % 8], hr[reflect(2 * i - 1, h) % 8], hr[(2 * i) % 8]
        t3, t4, o = hr[reflect(2 * i + 1, h) % 8], hr[reflect(2 * i + 2, h) % 8], dst[ch, i]
        for j in range(ow):  # the vertical pass (not a helper: a helper compiles on its own, and again in here)
            o[j] = W0 * t0[j] + W1 * t1[j] + W2 * t2[j] + W1 * t3[j] + W0 * t4[j]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _expand_row(g, wc, out, w, ev, od):
    khi = (w - 2) // 2 if (w - 2) // 2 < wc - 2 else wc - 2  # (min and max written out: _common)
    n = khi
    if n > 0:
        a = g[0:n]; b = g[1:n + 1]; c = g[2:n + 2]
        e = ev[0:n]; o = od[0:n]
        for k in range(n):
            e[k] = E0 * a[k] + E1 * b[k] + E0 * c[k]
            o[k] = HALF * b[k] + HALF * c[k]
        for k in range(n):
            out[2 * k + 2] = e[k]; out[2 * k + 3] = o[k]
    lo, hi = w if w < 2 else 2, 2 * khi + 2 if 2 * khi + 2 > 2 else 2
    for t in range(lo + (w - hi if w - hi > 0 else 0)):  # the border samples, whose taps may cross it: k == 0,
        # and k > khi
        j = t if t < lo else hi + t - lo
        k = j // 2
        if j % 2 == 0:
            out[j] = E0 * g[reflect(k - 1, wc)] + E1 * g[k] + E0 * g[reflect(k + 1, wc)]
        else:
            out[j] = HALF * g[k] + HALF * g[reflect(k + 1, wc)]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _pyramid_expand_kernel(fine, coarse, sign, out, rows, row0, row1):
    """``out = fine + sign * expand(coarse)`` (``out`` may be ``fine``: each sample is read, then written);
    ``rows`` (5, W): work rows (the three expanded coarse rows, and _expand_row's)."""
    c, h, w = fine.shape
    hc, wc = coarse.shape[1], coarse.shape[2]
    ha, hb, hcr, ev, od = rows[0], rows[1], rows[2], rows[3], rows[4]
    for p in range(row0, row1):  # a chunk of range(c * hc) (_threads.run_rows)
        ch = p // hc
        k = p - ch * hc
        _expand_row(coarse[ch, reflect(k - 1, hc)], wc, ha, w, ev, od)
        _expand_row(coarse[ch, k], wc, hb, w, ev, od)
        _expand_row(coarse[ch, reflect(k + 1, hc)], wc, hcr, w, ev, od)
        src, dst = fine[ch, 2 * k], out[ch, 2 * k]
        if sign > 0:
            for j in range(w):
                dst[j] = src[j] + (E0 * ha[j] + E1 * hb[j] + E0 * hcr[j])
        else:
            for j in range(w):
                dst[j] = src[j] - (E0 * ha[j] + E1 * hb[j] + E0 * hcr[j])
        if 2 * k + 1 < h:
            src, dst = fine[ch, 2 * k + 1], out[ch, 2 * k + 1]
            if sign > 0:
                for j in range(w):
                    dst[j] = src[j] + (HALF * hb[j] + HALF * hcr[j])
            else:
                for j in range(w):
                    dst[j] = src[j] - (HALF * hb[j] + HALF * hcr[j])


def _expand(fine, coarse, sign, out):
    run_rows(_pyramid_expand_kernel, fine.shape[0] * coarse.shape[1], 12 * fine.shape[2], fine, coarse, sign, out,
             work=(((5, fine.shape[2]), np.float32),))


def pyramid_reduce(src, dst):
    """``dst`` (C, (H+1)//2, (W+1)//2) = blur-and-decimate of ``src`` (C, H, W)."""
    run_rows(_pyramid_reduce_kernel, dst.shape[0] * dst.shape[1], 10 * dst.shape[2], src, dst,
             work=reduce_work(dst.shape))


def reduce_work(shape) -> tuple:
    """The work arrays of ``_pyramid_reduce_kernel`` for an output of ``shape`` (C, H, W): rows, tags."""
    return (((10, shape[-1]), np.float32), ((8,), np.int64))


def pyramid_expand_sub(fine, coarse):
    """In place: ``fine -= expand(coarse)`` (a Gaussian level becomes a Laplacian level)."""
    _expand(fine, coarse, -1, fine)


#: Coarse rows the collapse expands at a time (``_collapse_rows``): its temporaries stay in the cache.
COLLAPSE_ROWS = 32


def _expand_rows_np(g, out):
    """``out`` (n, w) = each row of ``g`` (n, wc) expanded along the row (``_expand_row``'s values), in NumPy."""
    wc, w = g.shape[1], out.shape[1]
    gp = np.empty((g.shape[0], wc + 2), np.float32)  # g with one reflect101 sample each side: gp[:, k + 1] = g[:, k]
    gp[:, 1:wc + 1] = g
    gp[:, 0] = g[:, reflect.py_func(-1, wc)]
    gp[:, wc + 1] = g[:, reflect.py_func(wc, wc)]
    ne, no = (w + 1) // 2, w // 2
    t = np.multiply(gp[:, 0:ne], E0)
    u = np.multiply(gp[:, 1:ne + 1], E1)
    np.add(t, u, out=t)
    np.multiply(gp[:, 2:ne + 2], E0, out=u)
    np.add(t, u, out=out[:, 0::2])  # E0 * g[k-1] + E1 * g[k] + E0 * g[k+1]
    t = np.multiply(gp[:, 1:no + 1], HALF)
    np.multiply(gp[:, 2:no + 2], HALF, out=u[:, :no])
    np.add(t, u[:, :no], out=out[:, 1::2])  # HALF * g[k] + HALF * g[k+1]


def _collapse_rows(fine, coarse, row0, row1):
    """``fine += expand(coarse)`` over the coarse rows ``row0 .. row1`` of ``range(C * Hc)`` (the fine
    rows 2k and 2k + 1 of each), in NumPy, ``COLLAPSE_ROWS`` at a time: ``_pyramid_expand_kernel``'s
    values with ``sign`` 1, one IEEE float32 operation at a time, in its order."""
    _, h, w = fine.shape
    hc = coarse.shape[1]
    p = row0
    while p < row1:
        ch = p // hc
        k0 = p - ch * hc
        k1 = min(hc, k0 + COLLAPSE_ROWS, k0 + row1 - p)
        nb = k1 - k0
        ex = np.empty((nb + 2, w), np.float32)  # the coarse rows k0 - 1 .. k1, expanded along the row
        with np.errstate(all="ignore"):  # inf and NaN, as in the kernel
            _expand_rows_np(reflected_rows(coarse[ch], k0 - 1, k1 + 1), ex)
            t = np.multiply(ex[0:nb], E0)
            u = np.multiply(ex[1:nb + 1], E1)
            np.add(t, u, out=t)
            np.multiply(ex[2:nb + 2], E0, out=u)
            np.add(t, u, out=t)
            even = fine[ch, 2 * k0:2 * k1:2]
            np.add(even, t, out=even)  # fine[2k] + (E0 * ex[k-1] + E1 * ex[k] + E0 * ex[k+1])
            no = min(k1, h // 2) - k0  # the odd rows 2k + 1 < h
            if no > 0:
                np.multiply(ex[1:no + 1], HALF, out=t[:no])
                np.multiply(ex[2:no + 2], HALF, out=u[:no])
                np.add(t[:no], u[:no], out=t[:no])
                odd = fine[ch, 2 * k0 + 1:2 * (k0 + no):2]
                np.add(odd, t[:no], out=odd)  # fine[2k+1] + (HALF * ex[k] + HALF * ex[k+1])
        p += nb


def pyramid_expand_add(fine, coarse):
    """In place: ``fine += expand(coarse)`` (collapse one level). In NumPy, not the expand's kernel:
    the collapse runs once per stack (the ``soft`` method's at the finest level alone), where the
    kernel's compiling would cost a first run far more than it saves (``backends.cpu``); the
    per-frame ``pyramid_expand_sub`` and ``pyramid_laplacian`` keep it. The same values."""
    run_rows(_collapse_rows, fine.shape[0] * coarse.shape[1], 12 * fine.shape[2], fine, coarse)


def pyramid_laplacian(fine, coarse, out):
    """``out = fine - expand(coarse)``: the Laplacian level, the Gaussian ``fine`` kept (``out`` is
    neither ``fine`` nor ``coarse``)."""
    _expand(fine, coarse, -1, out)
