"""Pairwise motion between neighbouring focus frames, robust to their different blur.

Focus-stack frames are never registered: focus breathing changes the
magnification by 1-3 % across a stack, and the camera shifts and turns a
little. The pipeline aligns each frame to its neighbour on small grayscale
proxies and chains the results; this module estimates one pair,
:func:`estimate_pair`.

Why not plain intensity matching
--------------------------------
Two neighbours are focused at different depths, so much of each is blurred
differently. A symmetric blur moves no edge, but under a least-squares match
the residual it leaves (sharp minus blurred) correlates with the warp
Jacobian: a region sharp in one frame and blurred in the other reads as a
local magnification, and where the blur changes across the image (a tilted
surface) as a shift. Intensity ECC therefore reports motion between
motionless frames and mis-estimates breathing.

Method
------
1. Both proxies go down a 2x pyramid (5-tap binomial, sample ``i`` centred on
   input sample ``2 i``), stopping at a short side of about 40 px. The work
   stops at the first level of at most ``MAX_WORK_PIXELS`` pixels (level 0 for
   a 512x768 proxy, level 1 for 1024x1536).
2. Each level is turned into a band-pass image (difference of Gaussians,
   sigma 1.5 and 3 px: coarse enough that blur differences of a few px
   matter less, fine enough for a few thousandths of a px). Both frames'
   band images are read as the coefficients of a cubic B-spline, ``fixed``
   at its integer points and ``moving`` at the warped points: both sides of
   each comparison are the same smooth function family, so sub-pixel shifts
   come out without interpolation bias (no spline prefilter is needed, the
   band holds nothing near the Nyquist frequency). On the finest level,
   blurred copies (``BANK``: extra Gaussian sigma of 0.6 to 2.4 px in 0.6 px
   steps) are added: **blur matching**. Per pixel, the sharper frame is
   compared through the copy whose local band energy matches the blurrier
   frame's, so that both sides of each comparison carry about the same blur.
   (Neighbouring focus frames differ by less than the old 1.2 px steps; the
   finer bank lowered the composed corner error on 10 of the 12 synthetic
   stacks tried, four scenes by three seeds, e.g. coffee/steps 0.133 -> 0.115
   px; steps of 0.4 px gained nothing more.)
3. Weights favour detail present in both frames: the matched band energy
   (saturating, so bright highlights in linear light do not dominate),
   capped at the 95th percentile, times a **blur coherence** factor that
   lowers points where the blur difference between the frames (which bank
   copy matched) varies within about 10 px: occlusion boundaries and the
   edges of defocused objects, whose content moves with the focus rather
   than with the camera (``_blur_coherence``; it lowered the composed corner
   error on 11 of 12 synthetic stacks, coffee/steps 0.115 -> 0.099 px). The strongest ``MAX_POINTS`` pixels of a
   stride-2 grid are kept. (An extra sharpness factor -- band energy against
   the next coarser band's -- was tried and dropped: on the synthetic stacks it
   favoured the occlusion edges where a defocused near object spreads over the
   far one, and raised the composed error by a third.)
4. The coarsest level is seeded by phase correlation (translation, on top of
   ``init``), keeping the seed only if it matches better.
5. Each level runs inverse-compositional Gauss-Newton (Lucas-Kanade) for the
   chosen model, parameterised about the image centre in units of half the
   long side, with Cauchy reweighting of the residual (scaled by the local
   band energy) against occlusion and highlights that differ. For "affine",
   the nearest similarity is refined too on the finest level and replaces the
   affine unless the affine's cost is lower by ``AFFINE_GAIN`` (1 %): on
   motionless synthetic pairs the two extra degrees of freedom gain 0-0.7 %
   (fitting noise, which composed along a chain of ten pairs moved corners by
   0.4 px), on a real 0.3 % stretch 3-27 %.
6. Identity gate: the weighted, normalised cost ``sum w (I - T)^2 /
   sum w (I^2 + T^2)`` (0 = equal, 1 = unrelated) is computed for the estimate
   and for the identity on the same points. The estimate is kept only if it is
   not higher, and below ``MAX_SCORE`` (so pairs with no common content stay
   unaligned).

Conventions
-----------
``PairEstimate.affine`` maps (col, row, 1) pixel coordinates of ``fixed`` to
(col, row) in ``moving``: ``moving(A @ [x, y, 1]) ~ fixed(x, y)``; pixel centres
are at integer coordinates. It is in full-resolution pixels: a proxy pixel
``p`` is the full-resolution coordinate ``p * scale`` (no half-pixel offset, as
the pyramid's sample ``i`` is centred on input sample ``2 i``), so the linear
part is unchanged and the translation is multiplied by ``scale``. The same
convention holds for ``init``. No parameter is rounded or snapped: each is the
continuous estimate of its model.

Limits
------
What blur matching cannot remove is the apparent motion of blur that varies
across the image: where one frame gets sharper and the other blurrier along x
(the boundary between their in-focus regions, a tilted surface), edges there
really look shifted by some thousandths of a px. The freer models feel it
most: on the test pairs (halves blurred by sigma 2.5 in opposite frames,
512x768) the corner error is below 0.01 px for every model on motionless
pairs and below 0.013 px with motion; on ``gpustack.synth`` stacks (12
frames, 512x768, disc defocus of 6 px half a stack away, occlusion) the RMS
per pair is 0.004-0.018 px for translation, 0.011-0.08 px for similarity and
0.02-0.17 px for affine, the most where little of the frame is sharp in both
(then prefer a model with fewer degrees of freedom).

Everything is NumPy/SciPy plus one small single-threaded Numba loop (the
spline sampling, which releases the GIL so that several pairs can be estimated
at once on threads), in float32 images and float64 arithmetic, with no threads
of its own and no BLAS reductions: the same inputs give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .. import _numba_cache  # noqa: F401 - before any kernel is decorated: a cache folder for them
from ..errors import InputError


class _Ndimage:
    """``scipy.ndimage``, imported on first use: on a frame reader thread, while the run's kernels
    compile (about 0.26 CPU s off the start of every run; none with ``--align none``)."""

    def __getattr__(self, name):
        from scipy import ndimage

        return getattr(ndimage, name)


ndi = _Ndimage()

__all__ = ["MODELS", "PairEstimate", "ProxyFeatures", "estimate_pair", "prepare_proxy"]

#: Motion models, from none to the freest: degrees of freedom 0, 2, 3, 4, 6.
MODELS = ("none", "translation", "scale", "similarity", "affine")

MAX_WORK_PIXELS = 1 << 19  # finest level used: the first with at most this many pixels
MIN_COARSE_SIDE = 40  # the pyramid stops before a level's short side would drop below this
MIN_SIDE = 16  # smallest proxy side accepted
MAX_POINTS = 40_000  # points used on the finest level (the strongest of a stride-2 grid)
MAX_POINTS_COARSE = 10_000  # points used on the coarser levels (of all pixels)
MARGIN = 4  # px left out at the border of ``fixed``
SIGMA1, SIGMA2 = 1.5, 3.0  # difference-of-Gaussians band
BANK = (0.0, 0.6, 1.2, 1.8, 2.4)  # blur matching: extra Gaussian sigmas of the finest level's copies
ENERGY_SIZE = 7  # box (px) of the local band energy
SATURATION = 0.05  # weight = e / (e + SATURATION * mean e)
WEIGHT_CAP = 95.0  # percentile at which weights are capped
BLUR_WINDOW = 5  # grid points (10 px on the finest level's stride-2 grid) of the blur-coherence window
BLUR_VARIANCE = 0.1  # weight = 1 / (1 + local variance of the blur step (bank copies^2) / this)
CAUCHY = 0.05  # Cauchy scale of |residual| / sqrt(local energy of both frames)
MAX_SCORE = 0.75  # an estimate whose cost is not below this is rejected (no common content)
AFFINE_GAIN = 0.01  # affine keeps its 2 extra degrees of freedom only if they lower the cost by this fraction
MAXIT_COARSE, MAXIT_FINE = 10, 8  # Gauss-Newton iterations per level
TOL_COARSE, TOL_FINE = 1e-2, 5e-4  # stop when a step moves no corner by more (level px)

_UNIT_CORNERS = np.array([[-1.0, 1.0, 1.0, -1.0], [-1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])


@dataclass
class PairEstimate:
    """The motion of one pair of neighbouring frames.

    Attributes
    ----------
    affine : (2, 3) float64 ndarray
        Maps (col, row, 1) pixel coordinates of ``fixed`` to (col, row) in
        ``moving`` (``moving(affine @ [x, y, 1]) ~ fixed(x, y)``), pixel centres
        at integer coordinates, in full-resolution pixels. The identity when
        not ``accepted``.
    score : float
        Match cost of ``affine``: weighted ``sum (I - T)^2 / sum (I^2 + T^2)`` of
        the band-pass images on the blur-matched points; 0 is a perfect match,
        about 1 unrelated content. Lower is better.
    identity_score : float
        The same cost for the identity (no warp), on the same points and weights.
    accepted : bool
        False when the estimate matched worse than the identity, or matched
        too poorly to be trusted (cost >= ``MAX_SCORE``): ``affine`` is then the
        identity and ``score`` equals ``identity_score``.
    iterations : int
        Gauss-Newton iterations, all levels together.
    rejected : (2, 3) float64 ndarray or None
        When not ``accepted``: the estimate that was turned down (same convention).
    model : str
        The model ``affine`` was estimated with: the one asked for, or "similarity" when
        "affine" was asked for and its shear and anisotropic scale did not lower the cost by
        ``AFFINE_GAIN`` (they were fitting the estimator's noise).
    """

    affine: np.ndarray
    score: float
    identity_score: float
    accepted: bool
    iterations: int
    rejected: np.ndarray | None = None
    model: str = ""


# ---------------------------------------------------------------- images


def _reduce_rows(a):
    """Binomial 5-tap filter along axis 0 and keep every second row (output row i centred on input row 2 i)."""
    n = (a.shape[0] + 1) // 2
    p = np.pad(a, ((2, 2), (0, 0)), mode="reflect")
    out = p[0:2 * n:2] + p[4:2 * n + 4:2]
    out += 4 * (p[1:2 * n + 1:2] + p[3:2 * n + 3:2])
    out += 6 * p[2:2 * n + 2:2]
    out *= np.float32(1 / 16)
    return out


def _reduce(a):
    """One pyramid level down: (H, W) -> ((H + 1) // 2, (W + 1) // 2)."""
    return np.ascontiguousarray(_reduce_rows(np.ascontiguousarray(_reduce_rows(a).T)).T)


def _gauss_kernel(sigma):
    r = max(1, int(3.0 * sigma + 0.5))
    x = np.arange(-r, r + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _sep(img, kernel, out=None):
    """Separable correlation with a symmetric 1-D kernel, mirror boundaries, float32."""
    k = kernel.astype(np.float32)
    tmp = ndi.correlate1d(img, k, axis=1, mode="mirror")
    return ndi.correlate1d(tmp, k, axis=0, mode="mirror", output=out)


def _bank(img, nb):
    """The band-pass image and ``nb - 1`` blurred copies of it: (nb, H, W) float32.

    The band is ``G(SIGMA1) - G(SIGMA2)``, built as ``A - G(sqrt(SIGMA2^2 -
    SIGMA1^2)) A`` with ``A = G(SIGMA1) img``. Each image is used as the
    coefficients of a cubic B-spline (see the module docstring).
    """
    out = np.empty((nb,) + img.shape, np.float32)
    a = _sep(img, _gauss_kernel(SIGMA1))
    _sep(a, _gauss_kernel(np.sqrt(SIGMA2 ** 2 - SIGMA1 ** 2)), out=out[0])
    np.subtract(a, out[0], out=out[0])
    for k in range(1, nb):
        _sep(out[k - 1], _gauss_kernel(np.sqrt(BANK[k] ** 2 - BANK[k - 1] ** 2)), out=out[k])
    return out


def _energy(bank):
    """Local band energy (box mean of the squared band image) of each bank image."""
    e = np.empty_like(bank)
    for k in range(bank.shape[0]):
        ndi.uniform_filter(bank[k] * bank[k], ENERGY_SIZE, output=e[k], mode="mirror")
    return e


def _at(energy, ys, xs):
    """Energy map ``energy`` (.., h, w) at the nearest pixels to (ys, xs), clamped."""
    h, w = energy.shape[-2:]
    iy = np.clip(np.rint(ys).astype(np.intp), 0, h - 1)
    ix = np.clip(np.rint(xs).astype(np.intp), 0, w - 1)
    return energy[..., iy, ix].astype(np.float64)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _sample_kernel(flat, offsets, a, xs, ys, h, w, out, inside):
    """Cubic B-spline samples of the bank ``flat`` at the points (xs, ys) warped by ``a`` (2, 3):
    positions clamped to [1, w - 3] x [1, h - 3] (``inside`` says which were not), 4x4 taps from
    ``offsets[i] + row * w + col``. Single-threaded, without the GIL: estimator threads run in
    parallel."""
    for i in range(xs.size):
        x = a[0, 0] * xs[i] + a[0, 1] * ys[i] + a[0, 2]
        y = a[1, 0] * xs[i] + a[1, 1] * ys[i] + a[1, 2]
        inside[i] = x >= 1 and x <= w - 3 and y >= 1 and y <= h - 3
        # min(max(x, 1.0), w - 3.0) as Numba computes it (NaN kept), without its functions to compile
        x = 1.0 if 1.0 > x else x
        x = w - 3.0 if w - 3.0 < x else x
        y = 1.0 if 1.0 > y else y
        y = h - 3.0 if h - 3.0 < y else y
        ix = np.floor(x)
        iy = np.floor(y)
        fx = x - ix
        fy = y - iy
        gx = 1.0 - fx
        gy = 1.0 - fy
        wx0, wx1 = gx * gx * gx / 6.0, ((3.0 * fx - 6.0) * fx * fx + 4.0) / 6.0
        wx2, wx3 = ((3.0 * gx - 6.0) * gx * gx + 4.0) / 6.0, fx * fx * fx / 6.0
        wy0, wy1 = gy * gy * gy / 6.0, ((3.0 * fy - 6.0) * fy * fy + 4.0) / 6.0
        wy2, wy3 = ((3.0 * gy - 6.0) * gy * gy + 4.0) / 6.0, fy * fy * fy / 6.0
        base = offsets[i] + np.int64(iy) * w + np.int64(ix)
        acc = 0.0
        for r in range(4):
            wr = wy0 if r == 0 else (wy1 if r == 1 else (wy2 if r == 2 else wy3))
            row = base + r * w
            acc += wr * (wx0 * flat[row] + wx1 * flat[row + 1] + wx2 * flat[row + 2] + wx3 * flat[row + 3])
        out[i] = acc


# ---------------------------------------------------------------- models


def _warp_matrix(model, p):
    """3x3 warp (normalised coordinates) of the parameter vector ``p``; the zero vector is the identity."""
    m = np.eye(3)
    if model == "translation":
        m[0, 2], m[1, 2] = p
    elif model == "scale":
        m[0, 0] = m[1, 1] = 1.0 + p[0]
        m[0, 2], m[1, 2] = p[1], p[2]
    elif model == "similarity":
        m[0, 0] = m[1, 1] = 1.0 + p[0]
        m[0, 1], m[1, 0] = -p[1], p[1]
        m[0, 2], m[1, 2] = p[2], p[3]
    else:
        m[0, 0], m[0, 1], m[0, 2] = 1.0 + p[0], p[1], p[4]
        m[1, 0], m[1, 1], m[1, 2] = p[2], 1.0 + p[3], p[5]
    return m


def _jacobian(model, u, v, gu, gv):
    """Columns of d T(W(x; p)) / dp at p = 0, for the gradient (gu, gv) at normalised positions (u, v)."""
    if model == "translation":
        cols = [gu, gv]
    elif model == "scale":
        cols = [gu * u + gv * v, gu, gv]
    elif model == "similarity":
        cols = [gu * u + gv * v, gv * u - gu * v, gu, gv]
    else:
        cols = [gu * u, gu * v, gv * u, gv * v, gu, gv]
    return np.stack(cols, 1)


def _project(model, mat, corners):
    """The warp of ``model`` closest (least squares at ``corners``) to the 3x3 affine ``mat``."""
    d = mat[:2, :2] @ corners + mat[:2, 2:3] - corners
    one, zero = np.ones(corners.shape[1]), np.zeros(corners.shape[1])
    a = np.concatenate([_jacobian(model, corners[0], corners[1], one, zero),
                        _jacobian(model, corners[0], corners[1], zero, one)])
    p = np.linalg.lstsq(a, np.concatenate([d[0], d[1]]), rcond=None)[0]
    return _warp_matrix(model, p)


# ---------------------------------------------------------------- one pyramid level


def _blur_coherence(step, grid):
    """Per point ``1 / (1 + v / BLUR_VARIANCE)``, ``v`` the variance of the blur step (which bank
    copy of one frame matches the other: positive where ``fixed`` is the sharper) over the
    ``BLUR_WINDOW`` points around it on the ``grid``-shaped point grid. Where the blur difference
    between the frames changes abruptly -- an occlusion boundary, a near object's defocus
    spreading over a far one -- the content moves with the focus, not with the camera."""
    d = step.astype(np.float64).reshape(grid)
    mean = ndi.uniform_filter(d, BLUR_WINDOW, mode="mirror")
    var = np.maximum(ndi.uniform_filter(d * d, BLUR_WINDOW, mode="mirror") - mean * mean, 0.0)
    return (1.0 / (1.0 + var / BLUR_VARIANCE)).ravel()


class _Level:
    """Band-pass banks of both frames on one pyramid level, and the points compared on it."""

    def __init__(self, fixed, moving, level, to_unit):
        """``fixed``, ``moving``: (bank, energy) of each frame on this level (``ProxyFeatures``)."""
        self.tb, self.et = fixed
        self.ib, self.ei = moving
        self.shape = self.tb.shape[1:]
        self.nb = self.tb.shape[0]
        self.eps = 1e-6 * float(self.et[0].mean() + self.ei[0].mean()) + 1e-30
        f = 2.0 ** level
        # level px -> normalised coordinates (and back)
        self.N = np.array([[f * to_unit[0, 0], 0.0, to_unit[0, 2]], [0.0, f * to_unit[1, 1], to_unit[1, 2]],
                           [0.0, 0.0, 1.0]])
        self.Ninv = np.linalg.inv(self.N)
        self.unit_px = 1.0 / self.N[0, 0]  # level px per normalised unit

    def warp_points(self, P, xs, ys):
        a = self.Ninv @ P @ self.N
        return a[0, 0] * xs + a[0, 1] * ys + a[0, 2], a[1, 0] * xs + a[1, 1] * ys + a[1, 2]

    def select(self, P, stride, max_points):
        """Pick the points, their blur matching and weights, for the current warp ``P``."""
        h, w = self.shape
        ys, xs = np.mgrid[MARGIN:h - MARGIN:stride, MARGIN:w - MARGIN:stride]
        grid = ys.shape
        ys, xs = ys.ravel(), xs.ravel()
        xw, yw = self.warp_points(P, xs.astype(np.float64), ys.astype(np.float64))
        e_t = self.et[:, ys, xs].astype(np.float64) + self.eps  # (nb, n)
        e_i = _at(self.ei, yw, xw) + self.eps
        if self.nb > 1:
            # blur the sharper side to the blurrier side's energy
            lt, li = np.log(e_t), np.log(e_i)
            t_sharper = lt[0] > li[0]
            kt = np.where(t_sharper, np.argmin(np.abs(lt - li[0]), axis=0), 0)
            ki = np.where(t_sharper, 0, np.argmin(np.abs(li - lt[0]), axis=0))
            ar = np.arange(xs.size)
            et, ei = e_t[kt, ar], e_i[ki, ar]
        else:
            kt = ki = np.zeros(xs.size, np.intp)
            et, ei = e_t[0], e_i[0]
        wgt = np.minimum(et, ei)
        wgt = wgt / (wgt + SATURATION * float(wgt.mean()))
        wgt = np.minimum(wgt, np.percentile(wgt, WEIGHT_CAP))
        if self.nb > 1:
            wgt = wgt * _blur_coherence(kt - ki, grid)
        if xs.size > max_points:
            keep = np.sort(np.argpartition(wgt, xs.size - max_points)[xs.size - max_points:])
            xs, ys, kt, ki, wgt, et, ei = (a[keep] for a in (xs, ys, kt, ki, wgt, et, ei))
        self.xs, self.ys = xs.astype(np.float64), ys.astype(np.float64)
        self.weight = wgt
        self.escale = (et + ei) * CAUCHY ** 2
        # fixed: value and gradient of its spline at the integer points
        c = self.tb.reshape(-1)
        base = kt * (h * w) + ys * w + xs
        s = {d: c[base + d].astype(np.float64) for d in (-w - 1, -w, -w + 1, -1, 0, 1, w - 1, w, w + 1)}
        row = {r: s[r * w - 1] + 4.0 * s[r * w] + s[r * w + 1] for r in (-1, 0, 1)}
        self.t = (row[-1] + 4.0 * row[0] + row[1]) / 36.0
        gx = sum((s[r * w + 1] - s[r * w - 1]) * k for r, k in ((-1, 1.0), (0, 4.0), (1, 1.0))) / 12.0
        gy = (row[1] - row[-1]) / 12.0
        self.u = self.N[0, 0] * self.xs + self.N[0, 2]
        self.v = self.N[1, 1] * self.ys + self.N[1, 2]
        self.gu, self.gv = gx * self.unit_px, gy * self.unit_px
        self.i_offset = ki * (h * w) - w - 1

    def sample(self, P):
        """``moving``'s matched band image at the warped points, and which of them fall inside."""
        h, w = self.shape
        a = (self.Ninv @ P @ self.N)[:2].copy()
        out = np.empty(self.xs.size)
        inside = np.empty(self.xs.size, np.bool_)
        _sample_kernel(self.ib.reshape(-1), self.i_offset, a, self.xs, self.ys, h, w, out, inside)
        return out, inside

    def cost(self, P):
        """Normalised weighted cost of the warp ``P`` (0 = equal, about 1 = unrelated)."""
        iw, inside = self.sample(P)
        wgt = self.weight * inside
        r = iw - self.t
        den = float(np.sum(wgt * (self.t * self.t + iw * iw)))
        return float(np.sum(wgt * r * r)) / den if den > 0 else 1.0

    def gauss_newton(self, model, P, maxit, tol):
        """Inverse-compositional Gauss-Newton with Cauchy reweighting; returns (P, iterations)."""
        jac = _jacobian(model, self.u, self.v, self.gu, self.gv)
        it, last = 0, np.inf
        for it in range(1, maxit + 1):
            iw, inside = self.sample(P)
            r = iw - self.t
            wgt = self.weight * inside / (1.0 + r * r / self.escale)
            wj = jac * wgt[:, None]
            hess = np.einsum("ni,nj->ij", wj, jac)
            grad = np.einsum("ni,n->i", wj, r)
            try:
                dp = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                break
            if not np.all(np.isfinite(dp)):
                break
            step = _warp_matrix(model, dp)
            P = P @ np.linalg.inv(step)
            moved = np.abs((step - np.eye(3)) @ _UNIT_CORNERS)[:2].max() * self.unit_px
            if moved < tol or (moved < 20.0 * tol and moved > 0.5 * last):
                break  # converged, or only wandering (the reweighting of a model that cannot fit exactly)
            last = moved
        return P, it


def _phase_correlation(a, b):
    """Shift (dx, dy) with b(x + dx, y + dy) ~ a(x, y), by windowed phase correlation (sub-pixel)."""
    h, w = a.shape
    win = np.outer(np.hanning(h), np.hanning(w))
    cross = np.conj(np.fft.rfft2(a * win)) * np.fft.rfft2(b * win)
    mag = np.abs(cross)
    cross /= mag + 1e-12 * mag.max() + 1e-300
    c = np.fft.irfft2(cross, s=(h, w))
    iy, ix = np.unravel_index(int(np.argmax(c)), c.shape)

    def vertex(cm, c0, cp):
        d = cm - 2.0 * c0 + cp
        return 0.0 if d >= 0 else 0.5 * (cm - cp) / d

    dy = iy + vertex(c[iy - 1, ix], c[iy, ix], c[(iy + 1) % h, ix])
    dx = ix + vertex(c[iy, ix - 1], c[iy, ix], c[iy, (ix + 1) % w])
    return (dx - w if dx > w / 2 else dx), (dy - h if dy > h / 2 else dy)


# ---------------------------------------------------------------- public


@dataclass
class ProxyFeatures:
    """What ``estimate_pair`` needs of one proxy, computed once by ``prepare_proxy`` however many
    pairs the proxy is part of (a frame is the moving side of one pair and the fixed side of the
    next): per pyramid level from ``first`` to the coarsest, the band-pass bank (the finest used
    level with its blurred copies) and its local energy.

    Attributes
    ----------
    shape : (H, W)
        Of the proxy.
    first : int
        The finest level used (the first of at most ``MAX_WORK_PIXELS`` pixels).
    levels : list of (bank, energy)
        ``levels[k]`` is pyramid level ``first + k``; arrays (nb, h, w) float32.
    """

    shape: tuple
    first: int
    levels: list


def _levels_of(shape):
    """(finest used level, number of pyramid levels) for a proxy of ``shape``."""
    h, w = shape
    sizes = [(h, w)]
    while min(sizes[-1]) // 2 >= MIN_COARSE_SIDE:
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    finest = 0
    while sizes[finest][0] * sizes[finest][1] > MAX_WORK_PIXELS and finest < len(sizes) - 1:
        finest += 1
    return finest, len(sizes)


def prepare_proxy(proxy) -> ProxyFeatures:
    """The pyramid, band-pass banks and energies of ``proxy`` ((H, W), linear light) for
    ``estimate_pair``; InputError for arrays it cannot use (as ``estimate_pair``)."""
    (a,) = _check_arrays((("proxy", proxy),))
    finest, count = _levels_of(a.shape)
    pyramid = [a]
    for _ in range(1, count):
        pyramid.append(_reduce(pyramid[-1]))
    levels = []
    for lev in range(finest, count):
        bank = _bank(pyramid[lev], len(BANK) if lev == finest else 1)
        levels.append((bank, _energy(bank)))
    return ProxyFeatures(a.shape, finest, levels)


def _check_arrays(named):
    out = []
    for name, a in named:
        a = np.asarray(a)
        if a.ndim != 2:
            raise InputError(f"{name} must be a 2-D (H, W) grayscale proxy, got an array of shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InputError(f"{name} must be a real-valued array, got dtype {a.dtype}")
        h, w = a.shape
        if min(h, w) < MIN_SIDE:
            raise InputError(f"proxies of {w}x{h} are too small to align; they must be at least "
                             f"{MIN_SIDE}x{MIN_SIDE}")
        a = np.ascontiguousarray(a, np.float32)
        if not np.all(np.isfinite(a)):
            raise InputError(f"{name} contains NaN or infinite values")
        out.append(a)
    return out


def _check(fixed, moving, model, scale, init):
    if model not in MODELS:
        raise InputError(f"unknown motion model {model!r}; use one of: {', '.join(MODELS)}")
    feats = [f if isinstance(f, ProxyFeatures) else None for f in (fixed, moving)]
    shapes = [f.shape if f is not None else np.shape(a) for f, a in zip(feats, (fixed, moving))]
    for name, a, f in (("fixed", fixed, feats[0]), ("moving", moving, feats[1])):
        if f is None and np.ndim(a) != 2:
            raise InputError(f"{name} must be a 2-D (H, W) grayscale proxy, got an array of shape {np.shape(a)}")
    if tuple(shapes[0]) != tuple(shapes[1]):
        raise InputError(f"fixed and moving must have the same shape, got {tuple(shapes[0])} and {tuple(shapes[1])}")
    if not (np.isscalar(scale) and np.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive number (full-resolution px per proxy px), got {scale!r}")
    if init is not None:
        a = np.asarray(init, np.float64)
        if a.shape not in ((2, 3), (3, 3)) or not np.all(np.isfinite(a)):
            raise InputError(f"init must be a finite (2, 3) or (3, 3) affine, got shape {a.shape}")
    out = []
    for name, a, f in (("fixed", fixed, feats[0]), ("moving", moving, feats[1])):
        if f is None:
            (arr,) = _check_arrays(((name, a),))
            f = prepare_proxy(arr)
        out.append(f)
    return out


def estimate_pair(fixed, moving, model="similarity", *, scale=1.0, init=None) -> PairEstimate:
    """Estimate the motion of ``moving`` relative to its neighbour ``fixed``.

    Parameters
    ----------
    fixed, moving : (H, W) ndarray or ProxyFeatures
        Grayscale proxies of the two frames, same shape, linear light, values
        about [0, 1] (float32 preferred; other real dtypes are converted), or
        their ``prepare_proxy`` features (computed once per frame).
    model : {"none", "translation", "scale", "similarity", "affine"}
        The motion model: identity; shift (2 dof); isotropic magnification and
        shift (3); plus rotation (4); general affine (6).
    scale : float
        Full-resolution pixels per proxy pixel. The result (and ``init``) are in
        full-resolution pixels, a proxy pixel ``p`` being the full-resolution
        coordinate ``p * scale``.
    init : (2, 3) or (3, 3) array_like, optional
        A first guess in the convention of ``PairEstimate.affine``
        (full-resolution pixels), e.g. the previous pair's motion. It is
        projected onto ``model``; a phase-correlation shift on top of it is
        tried as well. The result is gated against the identity, never against
        ``init``.

    Returns
    -------
    PairEstimate
        ``affine`` maps (col, row, 1) of ``fixed`` to (col, row) of ``moving``.

    Raises
    ------
    InputError
        Unknown model, arrays not 2-D or of different shapes, too small,
        non-finite values, a bad ``scale`` or ``init``.
    """
    f0, m0 = _check(fixed, moving, model, scale, init)
    h, w = f0.shape
    finest = f0.first
    coarsest = finest + len(f0.levels) - 1 if model != "none" else finest

    half = max(w, h) / 2.0
    to_unit = np.array([[1.0 / half, 0.0, -(w - 1) / (2.0 * half)], [0.0, 1.0 / half, -(h - 1) / (2.0 * half)],
                        [0.0, 0.0, 1.0]])  # proxy px -> normalised coordinates (centre 0, half the long side 1)
    from_unit = np.linalg.inv(to_unit)
    P = np.eye(3)
    if init is not None and model != "none":
        a = np.asarray(init, np.float64)
        a = np.vstack([a[:2], [0.0, 0.0, 1.0]])
        a[:2, 2] /= scale
        corners = to_unit @ np.array([[0.0, w - 1.0, w - 1.0, 0.0], [0.0, 0.0, h - 1.0, h - 1.0], [1.0] * 4])
        P = _project(model, to_unit @ a @ from_unit, corners[:2])

    iterations = 0
    level = None
    for lev in range(coarsest, finest - 1, -1):
        level = _Level(f0.levels[lev - finest], m0.levels[lev - finest], lev, to_unit)
        fine = lev == finest
        stride, npts = (2, MAX_POINTS) if fine else (1, MAX_POINTS_COARSE)
        if model == "none":
            level.select(P, stride, npts)
            break
        if lev == coarsest:
            P = _seed(level, P, stride, npts)
        level.select(P, stride, npts)
        P, it = level.gauss_newton(model, P, MAXIT_FINE if fine else MAXIT_COARSE, TOL_FINE if fine else TOL_COARSE)
        iterations += it

    used = model
    if model == "affine":  # parsimony: the similarity nearest the affine, refined on the finest level
        P_sim, it = level.gauss_newton("similarity", _project("similarity", P, _UNIT_CORNERS[:2]), MAXIT_FINE,
                                       TOL_FINE)
        iterations += it
        cost_affine = level.cost(P)
        if level.cost(P_sim) - cost_affine <= AFFINE_GAIN * cost_affine:
            P, used = P_sim, "similarity"
    identity_score = level.cost(np.eye(3))
    score = level.cost(P) if model != "none" else identity_score
    accepted = model == "none" or (score <= identity_score and score < MAX_SCORE)
    affine = (from_unit @ P @ to_unit)[:2].copy()
    affine[:, 2] *= scale
    rejected = None
    if not accepted:
        rejected, score = affine, identity_score
    if not accepted or model == "none":
        affine = np.eye(2, 3)
    return PairEstimate(affine, float(score), float(identity_score), bool(accepted), int(iterations), rejected,
                        used)


def _seed(level, P, stride, npts):
    """``P`` or ``P`` plus the phase-correlation shift of the warped coarsest level, whichever matches better."""
    a = level.Ninv @ P @ level.N
    hh, ww = level.shape
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float64)
    warped = ndi.map_coordinates(level.ib[0], [a[1, 0] * xx + a[1, 1] * yy + a[1, 2],
                                               a[0, 0] * xx + a[0, 1] * yy + a[0, 2]],
                                 order=3, prefilter=False, mode="mirror")
    fixed = ndi.convolve1d(ndi.convolve1d(level.tb[0], [1 / 6, 4 / 6, 1 / 6], 0, mode="mirror"),
                           [1 / 6, 4 / 6, 1 / 6], 1, mode="mirror")  # spline coefficients -> values
    dx, dy = _phase_correlation(fixed, warped)
    if abs(dx) + abs(dy) <= 0.5:
        return P
    shift = np.eye(3)
    shift[0, 2], shift[1, 2] = dx / level.unit_px, dy / level.unit_px
    level.select(P, stride, npts)
    return min((P, P @ shift), key=level.cost)
