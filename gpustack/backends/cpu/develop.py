"""RAW development of a Bayer mosaic: uint16 (H, W) -> planar linear float32 (3, H, W).

Twin of kernels/develop.cu, with the same float32 arithmetic in the same order:

* every mosaic sample s at (y, x), CFA position p = (y & 1, x & 1), is normalised as
  ``v = (float32(s) - black[p]) * scale[p]``, then clipped to [0, 1] (``scale[p] =
  wb[colour] / (white - black[p])``, from the host: black level, white level and white
  balance in one multiply; the clip is LibRaw's, so a saturated site stays white after
  the white balance instead of turning magenta);
* the demosaic fills the two missing colours of each pixel from the normalised samples
  ``v(di, dj)`` of its 5x5 neighbourhood (``c = v(0, 0)``):
  R site: r = c, g = CROSS, b = DIAG;  B site: b = c, g = CROSS, r = DIAG;
  G site in a red row: g = c, r = HORIZ, b = VERT;  G in a blue row: r = VERT, b = HORIZ.
  ``bilinear``: CROSS = a1 * 0.25, DIAG = d1 * 0.25, HORIZ = h1 * 0.5, VERT = u1 * 0.5;
  ``mhc`` (Malvar, He, Cutler, ICASSP 2004: the bilinear estimate corrected by the
  Laplacian of the known colour): CROSS = ((4c + 2 a1) - a2) * 0.125,
  DIAG = ((6c + 2 d1) - 1.5 a2) * 0.125, HORIZ = ((((5c + 4 h1) - d1) - h2) + 0.5 u2) * 0.125,
  VERT = ((((5c + 4 u1) - d1) - u2) + 0.5 h2) * 0.125, with
  a1 = ((v(-1,0) + v(0,-1)) + v(0,1)) + v(1,0),  a2 = ((v(-2,0) + v(0,-2)) + v(0,2)) + v(2,0),
  d1 = ((v(-1,-1) + v(-1,1)) + v(1,-1)) + v(1,1),  h1 = v(0,-1) + v(0,1),  h2 = v(0,-2) + v(0,2),
  u1 = v(-1,0) + v(1,0),  u2 = v(-2,0) + v(2,0);
* ``rcd`` (ratio corrected demosaicing, L. Sanz Rodriguez 2017, the default demosaic of
  RawTherapee and darktable; edge-directed: each missing colour is interpolated along the
  direction, vertical/horizontal or diagonal, in which the mosaic varies least, green by
  ratio-corrected neighbours, red and blue by colour differences to green): the mosaic
  padded by ``RCD_PAD`` (10) reflected samples, seven passes over it, each pass's formulas
  and the band it computes as in the RCD section of kernels/develop.cu;
* the colour matrix: ``out[k] = (r*m[k,0] + g*m[k,1]) + b*m[k,2]``, not clipped.

Borders (bilinear, mhc; rcd pads the mosaic by the same rule): reflect101 on the mosaic
grid (``_common.reflect``), which mirrors about the edge sample, an even displacement, so
every sample read keeps its CFA colour (a red site maps to a red site) for any H, W >= 2.

The CUDA kernel gathers and normalises every tap per output pixel; here a block of rows
is normalised once into a buffer padded by two reflected samples on each side, and the
demosaic reads the buffer. A sample's normalised value does not depend on who computes
it, so the results are the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F0, F1, HALF, ONE_HALF, TWO, reflect
from ._threads import run_rows

QUARTER = np.float32(0.25)
EIGHTH = np.float32(0.125)
FOUR = np.float32(4.0)
FIVE = np.float32(5.0)
SIX = np.float32(6.0)

METHODS = ("bilinear", "mhc", "rcd")
EPS = np.float32(1e-5)
EPS_SQ = np.float32(1e-10)
THREE = np.float32(3.0)
_ROWS_PER_BLOCK = 32

_R, _B, _G_RED_ROW, _G_BLUE_ROW = 0, 1, 2, 3


def red_site(cfa) -> tuple[int, int]:
    """(row parity, column parity) of the red site of a Bayer ``cfa`` ((2, 2) colour indices,
    R=0 G=1 B=2, greens on one diagonal); ValueError for anything else. Shared by both
    backends, so that both reject the same patterns with the same message."""
    a = np.asarray(cfa)
    if a.shape != (2, 2) or not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"cfa: expected a (2, 2) integer array of colour indices; got {a.dtype} {a.shape}")
    reds = np.argwhere(a == 0)
    blues = np.argwhere(a == 2)
    if len(reds) != 1 or len(blues) != 1 or not (a == 1).sum() == 2 or (reds[0] + blues[0] != 1).any():
        raise ValueError(f"cfa: expected a Bayer pattern (one R and one B on one diagonal, two G on the "
                         f"other; R=0 G=1 B=2); got {a.tolist()}")
    return int(reds[0][0]), int(reds[0][1])


def check_develop(mosaic, cfa, black, scale, matrix, method, dst) -> tuple[int, int]:
    """Validate the arguments of ``develop`` (both backends call it before dispatch);
    return the red site's parities."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
    if getattr(mosaic, "dtype", None) != np.uint16 or mosaic.ndim != 2:
        raise TypeError(f"mosaic: expected a (H, W) uint16 array; got {getattr(mosaic, 'dtype', type(mosaic))} "
                        f"{getattr(mosaic, 'shape', '')}")
    h, w = mosaic.shape
    if h < 2 or w < 2:
        raise ValueError(f"mosaic: a Bayer mosaic needs at least 2x2 samples; got {h}x{w}")
    if getattr(dst, "dtype", None) != np.float32 or tuple(dst.shape) != (3, h, w):
        raise ValueError(f"dst: expected a (3, {h}, {w}) float32 array; got {getattr(dst, 'dtype', type(dst))} "
                         f"{tuple(getattr(dst, 'shape', ()))}")
    for name, a, shape in (("black", black, (2, 2)), ("scale", scale, (2, 2)), ("matrix", matrix, (3, 3))):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.shape != shape:
            raise TypeError(f"{name}: expected a {shape} float32 NumPy array (host values); got "
                            f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    return red_site(cfa)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True, inline="always")
def _norm(s, b, k):
    v = (np.float32(s) - b) * k
    if v < F0:  # noqa: PLR1730 - the twin's branches, written alike
        v = F0
    if v > F1:  # noqa: PLR1730
        v = F1
    return v


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _normalise_rows(mosaic, y0, n, black, scale, buf):
    """``buf[t, 2 + x]`` = the normalised sample at (reflect(y0 + t), x), x in [-2, w + 2)."""
    h, w = mosaic.shape
    for t in range(n):
        y = reflect(y0 + t, h)
        py = y & 1
        src = mosaic[y]
        out = buf[t]
        b0, k0 = black[py, 0], scale[py, 0]
        b1, k1 = black[py, 1], scale[py, 1]
        for x in range(0, w, 2):
            out[2 + x] = _norm(src[x], b0, k0)
        for x in range(1, w, 2):
            out[2 + x] = _norm(src[x], b1, k1)
        for x in (-2, -1, w, w + 1):
            xs = reflect(x, w)
            out[2 + x] = _norm(src[xs], black[py, xs & 1], scale[py, xs & 1])


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True, inline="always")
def _taps(u2, u1, c0, d1, d2, k):
    """The sums of the header around buffer column k: c, a1, a2, d1, h1, h2, u1, u2."""
    c = c0[k]
    a1 = ((u1[k] + c0[k - 1]) + c0[k + 1]) + d1[k]
    a2 = ((u2[k] + c0[k - 2]) + c0[k + 2]) + d2[k]
    dg = ((u1[k - 1] + u1[k + 1]) + d1[k - 1]) + d1[k + 1]
    h1 = c0[k - 1] + c0[k + 1]
    h2 = c0[k - 2] + c0[k + 2]
    v1 = u1[k] + d1[k]
    v2 = u2[k] + d2[k]
    return c, a1, a2, dg, h1, h2, v1, v2


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True, inline="always")
def _interp(site, mhc, c, a1, a2, dg, h1, h2, v1, v2):
    """(r, g, b) of a pixel of kind ``site`` from its sums (bilinear or MHC)."""
    if mhc:
        cross = ((FOUR * c + TWO * a1) - a2) * EIGHTH
        diag = ((SIX * c + TWO * dg) - ONE_HALF * a2) * EIGHTH
        horiz = ((((FIVE * c + FOUR * h1) - dg) - h2) + HALF * v2) * EIGHTH
        vert = ((((FIVE * c + FOUR * v1) - dg) - v2) + HALF * h2) * EIGHTH
    else:
        cross = a1 * QUARTER
        diag = dg * QUARTER
        horiz = h1 * HALF
        vert = v1 * HALF
    if site == _R:
        return c, cross, diag
    if site == _B:
        return diag, cross, c
    if site == _G_RED_ROW:
        return horiz, c, vert
    return vert, c, horiz


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _develop_kernel(mosaic, red_row, red_col, black, scale, matrix, mhc, dst, buf, blk0, blk1):
    # buf (_ROWS_PER_BLOCK + 4, W + 4): a block's normalised rows (a work array, _common)
    h, w = mosaic.shape
    m00, m01, m02 = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    m10, m11, m12 = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    m20, m21, m22 = matrix[2, 0], matrix[2, 1], matrix[2, 2]
    for blk in range(blk0, blk1):  # a chunk of the blocks of _ROWS_PER_BLOCK rows (_threads.run_rows)
        i0 = blk * _ROWS_PER_BLOCK
        i1 = h if h < i0 + _ROWS_PER_BLOCK else i0 + _ROWS_PER_BLOCK  # (min written out: _common)
        _normalise_rows(mosaic, i0 - 2, i1 - i0 + 4, black, scale, buf)
        for i in range(i0, i1):
            t = i - i0 + 2
            u2, u1, c0, d1, d2 = buf[t - 2], buf[t - 1], buf[t], buf[t + 1], buf[t + 2]
            red_row_here = (i & 1) == red_row
            o0, o1, o2 = dst[0, i], dst[1, i], dst[2, i]
            for pj in range(2):
                red_col_here = (pj & 1) == red_col
                if red_row_here and red_col_here:
                    site = _R
                elif not red_row_here and not red_col_here:
                    site = _B
                elif red_row_here:
                    site = _G_RED_ROW
                else:
                    site = _G_BLUE_ROW
                for j in range(pj, w, 2):
                    c, a1, a2, dg, h1, h2, v1, v2 = _taps(u2, u1, c0, d1, d2, j + 2)
                    r, g, b = _interp(site, mhc, c, a1, a2, dg, h1, h2, v1, v2)
                    o0[j] = r * m00 + g * m01 + b * m02
                    o1[j] = r * m10 + g * m11 + b * m12
                    o2[j] = r * m20 + g * m21 + b * m22


# ---------------------------------------------------------------------------------------------
# RCD (ratio corrected demosaicing) on the mosaic padded by RCD_PAD reflected samples, by blocks
# of output rows. Each of the seven passes of the RCD section of kernels/develop.cu runs over its
# band of the block's padded window (local row t is padded row i0 + t, i.e. image row
# i0 + t - RCD_PAD; local column x is image column x - RCD_PAD; RCD_PAD is even, so the parities
# are those of i0 + t and x). The squared high-passes and the low-pass are computed once per
# position into buffers (the kernels recompute them for every reader): the same values, so the
# same bits.

RCD_PAD = 10
_RCD_ROWS = 128


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _ratio(a, b):
    """a / (a + b) with both floored at EPS_SQ (the share of one direction's high-pass energy)."""
    if a < EPS_SQ:  # noqa: PLR1730 - the twin's branches, written alike
        a = EPS_SQ
    if b < EPS_SQ:  # noqa: PLR1730
        b = EPS_SQ
    return a / (a + b)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _disc(d, t, x):
    """The direction at (t, x): its own value, or the mean of its four diagonal neighbours when
    that is the more decided one (further from 0.5)."""
    centre = d[t, x]
    near = (((d[t - 1, x - 1] + d[t - 1, x + 1]) + d[t + 1, x - 1]) + d[t + 1, x + 1]) * QUARTER
    return near if abs(HALF - near) > abs(HALF - centre) else centre


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _hp(v, t, x, dt, dx):
    """Squared 7-tap high-pass of ``v`` along (dt, dx) at (t, x)."""
    u = ((v[t - 3 * dt, x - 3 * dx] - v[t - dt, x - dx]) - v[t + dt, x + dx]) + v[t + 3 * dt, x + 3 * dx]
    u = (u - THREE * (v[t - 2 * dt, x - 2 * dx] + v[t + 2 * dt, x + 2 * dx])) + SIX * v[t, x]
    return u * u


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _first(lo, parity):
    """The first column >= lo of the given parity."""
    return lo + ((parity - lo) & 1)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _rcd_block(mosaic, i0, n, red_row, red_col, black, scale, matrix, dst, work):
    """Output rows [i0, i0 + n) from ``work``: (7, >= n + 2 RCD_PAD, W + 2 RCD_PAD) float32
    planes, reused from block to block (fresh ones would be page-faulted in every time)."""
    h, w = mosaic.shape
    pad = RCD_PAD
    hp, wp = n + 2 * pad, w + 2 * pad
    v = work[0]  # normalised samples
    d = work[1]  # VH, then PQ at the R and B sites
    g = work[2]
    rb = work[3:5]  # red, blue
    a = work[5]  # squared high-passes, low-pass
    b = work[6]
    for t in range(hp):
        y = reflect(i0 + t - pad, h)
        py = y & 1
        for x in range(wp):
            xs = reflect(x - pad, w)
            v[t, x] = _norm(mosaic[y, xs], black[py, xs & 1], scale[py, xs & 1])
    # pass 1: VH at [4, end - 4)
    for t in range(3, hp - 3):
        for x in range(4, wp - 4):
            a[t, x] = _hp(v, t, x, 1, 0)
    for t in range(4, hp - 4):
        for x in range(3, wp - 3):
            b[t, x] = _hp(v, t, x, 0, 1)
    for t in range(4, hp - 4):
        for x in range(4, wp - 4):
            d[t, x] = _ratio((a[t - 1, x] + a[t, x]) + a[t + 1, x], (b[t, x - 1] + b[t, x]) + b[t, x + 1])
    # pass 2: green at [5, end - 5); the low-pass of the R and B sites at [3, end - 3) into a
    for t in range(3, hp - 3):
        rb_col = red_col if ((i0 + t) & 1) == red_row else 1 - red_col  # parity of its R/B columns
        for x in range(_first(3, rb_col), wp - 3, 2):
            a[t, x] = (v[t, x] + HALF * (((v[t - 1, x] + v[t + 1, x]) + v[t, x - 1]) + v[t, x + 1])) \
                + QUARTER * (((v[t - 1, x - 1] + v[t - 1, x + 1]) + v[t + 1, x - 1]) + v[t + 1, x + 1])
    for t in range(5, hp - 5):
        rb_col = red_col if ((i0 + t) & 1) == red_row else 1 - red_col
        for x in range(_first(5, 1 - rb_col), wp - 5, 2):
            g[t, x] = v[t, x]
        for x in range(_first(5, rb_col), wp - 5, 2):
            c = v[t, x]
            n1, s1, w1, e1 = v[t - 1, x], v[t + 1, x], v[t, x - 1], v[t, x + 1]
            n2, s2, w2, e2 = v[t - 2, x], v[t + 2, x], v[t, x - 2], v[t, x + 2]
            ng = (((EPS + abs(n1 - s1)) + abs(c - n2)) + abs(n1 - v[t - 3, x])) + abs(n2 - v[t - 4, x])
            sg = (((EPS + abs(n1 - s1)) + abs(c - s2)) + abs(s1 - v[t + 3, x])) + abs(s2 - v[t + 4, x])
            wg = (((EPS + abs(w1 - e1)) + abs(c - w2)) + abs(w1 - v[t, x - 3])) + abs(w2 - v[t, x - 4])
            eg = (((EPS + abs(w1 - e1)) + abs(c - e2)) + abs(e1 - v[t, x + 3])) + abs(e2 - v[t, x + 4])
            lc = a[t, x]
            l2 = lc + lc
            ne = (n1 * l2) / ((EPS + lc) + a[t - 2, x])
            se = (s1 * l2) / ((EPS + lc) + a[t + 2, x])
            we = (w1 * l2) / ((EPS + lc) + a[t, x - 2])
            ee = (e1 * l2) / ((EPS + lc) + a[t, x + 2])
            vest = (sg * ne + ng * se) / (ng + sg)
            hest = (wg * ee + eg * we) / (eg + wg)
            g[t, x] = _disc(d, t, x) * (hest - vest) + vest
    # pass 3: PQ at the R and B sites of [4, end - 4); the diagonal high-passes at [3, end - 3)
    for t in range(3, hp - 3):
        rb_col = red_col if ((i0 + t) & 1) == red_row else 1 - red_col
        for x in range(_first(3, rb_col), wp - 3, 2):
            a[t, x] = _hp(v, t, x, 1, 1)
            b[t, x] = _hp(v, t, x, 1, -1)
    for t in range(4, hp - 4):
        rb_col = red_col if ((i0 + t) & 1) == red_row else 1 - red_col
        for x in range(_first(4, rb_col), wp - 4, 2):
            d[t, x] = _ratio((a[t - 1, x - 1] + a[t, x]) + a[t + 1, x + 1],
                             (b[t - 1, x + 1] + b[t, x]) + b[t + 1, x - 1])
    # pass 4: the missing one of red and blue at the R and B sites of [7, end - 7)
    for t in range(7, hp - 7):
        red_here = ((i0 + t) & 1) == red_row
        own, other = (0, 1) if red_here else (1, 0)
        rb_col = red_col if red_here else 1 - red_col
        for x in range(_first(7, rb_col), wp - 7, 2):
            rb[own, t, x] = v[t, x]
            g0 = g[t, x]
            x_nw, x_ne, x_sw, x_se = v[t - 1, x - 1], v[t - 1, x + 1], v[t + 1, x - 1], v[t + 1, x + 1]
            nwg = ((EPS + abs(x_nw - x_se)) + abs(x_nw - v[t - 3, x - 3])) + abs(g0 - g[t - 2, x - 2])
            neg = ((EPS + abs(x_ne - x_sw)) + abs(x_ne - v[t - 3, x + 3])) + abs(g0 - g[t - 2, x + 2])
            swg = ((EPS + abs(x_ne - x_sw)) + abs(x_sw - v[t + 3, x - 3])) + abs(g0 - g[t + 2, x - 2])
            seg = ((EPS + abs(x_nw - x_se)) + abs(x_se - v[t + 3, x + 3])) + abs(g0 - g[t + 2, x + 2])
            nwe = x_nw - g[t - 1, x - 1]
            nee = x_ne - g[t - 1, x + 1]
            swe = x_sw - g[t + 1, x - 1]
            see = x_se - g[t + 1, x + 1]
            pest = (nwg * see + seg * nwe) / (nwg + seg)
            qest = (neg * swe + swg * nee) / (neg + swg)
            rb[other, t, x] = g0 + (_disc(d, t, x) * (qest - pest) + pest)
    # pass 5: red and blue at the G sites of [10, end - 10) = the block's own pixels
    for t in range(pad, hp - pad):
        rb_col = red_col if ((i0 + t) & 1) == red_row else 1 - red_col
        for x in range(_first(pad, 1 - rb_col), wp - pad, 2):
            disc = _disc(d, t, x)
            g0 = g[t, x]
            gn, gs, gw, ge = g[t - 1, x], g[t + 1, x], g[t, x - 1], g[t, x + 1]
            n1 = EPS + abs(g0 - g[t - 2, x])
            s1 = EPS + abs(g0 - g[t + 2, x])
            w1 = EPS + abs(g0 - g[t, x - 2])
            e1 = EPS + abs(g0 - g[t, x + 2])
            for k in range(2):
                p = rb[k]
                xn, xs, xw, xe = p[t - 1, x], p[t + 1, x], p[t, x - 1], p[t, x + 1]
                sn = abs(xn - xs)
                ew = abs(xw - xe)
                ng = (n1 + sn) + abs(xn - p[t - 3, x])
                sg = (s1 + sn) + abs(xs - p[t + 3, x])
                wg = (w1 + ew) + abs(xw - p[t, x - 3])
                eg = (e1 + ew) + abs(xe - p[t, x + 3])
                vest = (ng * (xs - gs) + sg * (xn - gn)) / (ng + sg)
                hest = (eg * (xw - gw) + wg * (xe - ge)) / (eg + wg)
                p[t, x] = g0 + (disc * (hest - vest) + vest)
    # pass 6: the colour matrix, into the block's rows of dst
    m00, m01, m02 = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    m10, m11, m12 = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    m20, m21, m22 = matrix[2, 0], matrix[2, 1], matrix[2, 2]
    for t in range(pad, hp - pad):
        i = i0 + t - pad
        for j in range(w):
            r, gg, bb = rb[0, t, j + pad], g[t, j + pad], rb[1, t, j + pad]
            dst[0, i, j] = r * m00 + gg * m01 + bb * m02
            dst[1, i, j] = r * m10 + gg * m11 + bb * m12
            dst[2, i, j] = r * m20 + gg * m21 + bb * m22


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _rcd_kernel(mosaic, red_row, red_col, black, scale, matrix, dst, work, blk0, blk1):
    h, w = mosaic.shape
    # a chunk of the blocks of _RCD_ROWS rows (_threads.run_rows), in one set of work planes (_rcd_work)
    for blk in range(blk0, blk1):
        i0 = blk * _RCD_ROWS
        n = h - i0 if h - i0 < _RCD_ROWS else _RCD_ROWS  # (min written out: _common)
        _rcd_block(mosaic, i0, n, red_row, red_col, black, scale, matrix, dst, work)


def _rcd_work(h: int, w: int) -> tuple:
    """``_rcd_kernel``'s work planes for an (H, W) mosaic (``_rcd_block``)."""
    return (((7, min(h, _RCD_ROWS) + 2 * RCD_PAD, w + 2 * RCD_PAD), np.float32),)


def develop(mosaic, cfa, black, scale, matrix, method, dst) -> None:
    """Develop ``mosaic`` (H, W) uint16 into ``dst`` (3, H, W) float32: normalise with ``black``
    and ``scale`` ((2, 2) float32 per CFA position), demosaic (``method`` "bilinear", "mhc" or
    "rcd") by the Bayer pattern ``cfa`` ((2, 2) colour indices, R=0 G=1 B=2), then apply
    ``matrix`` ((3, 3) float32, camera RGB -> output RGB). See the module docstring for the
    arithmetic."""
    red_row, red_col = check_develop(mosaic, cfa, black, scale, matrix, method, dst)
    h, w = mosaic.shape
    if method == "rcd":
        run_rows(_rcd_kernel, -(-h // _RCD_ROWS), _RCD_ROWS * w * 24, mosaic, red_row, red_col, black, scale, matrix,
                 dst, work=_rcd_work(h, w))
    else:
        run_rows(_develop_kernel, -(-h // _ROWS_PER_BLOCK), _ROWS_PER_BLOCK * w * 3, mosaic, red_row, red_col, black,
                 scale, matrix, method == "mhc", dst, work=(((_ROWS_PER_BLOCK + 4, w + 4), np.float32),))
