"""The develop op (Bayer mosaic -> linear RGB) on the cpu backend: against plain-NumPy
references (the Malvar-He-Cutler paper's 5x5 filters; RCD's steps on whole planes), the CFA
border rule, the clipping, the parameters from ``develop_params``, and the quality of the
demosaics against a known truth.

The CUDA twin is compared with this Numba code bit for bit in
tests/test_kernels_cuda_emulated.py (cases ``develop_*`` of tests/cuda_cases.py).
"""

import zlib

import numpy as np
import pytest
from scipy import ndimage

from gpustack.backends.cpu import CpuBackend
from gpustack.backends.cpu._common import reflect
from gpustack.backends.cpu.develop import red_site
from gpustack.io.raw import RawMosaic, develop_params

be = CpuBackend()
F = np.float32

PATTERNS = {"RGGB": [[0, 1], [1, 2]], "BGGR": [[2, 1], [1, 0]], "GRBG": [[1, 0], [2, 1]], "GBRG": [[1, 2], [0, 1]]}
METHODS = ("bilinear", "mhc", "rcd")
#: how far each demosaic reads around a pixel: its result is that of the mosaic mirrored by this
PAD = {"bilinear": 2, "mhc": 2, "rcd": 10}

# ---------------------------------------------------------------------------------------------
# Reference: the filters as printed in Malvar, He, Cutler, "High-quality linear interpolation
# for demosaicing of Bayer-patterned color images", ICASSP 2004 (Fig. 2), and the plain
# bilinear averages, applied by correlation in float64 to the normalised mosaic padded by
# reflect101 (np.pad "reflect").

_Z = np.zeros((5, 5))


def _kernel(rows):
    return np.array(rows, np.float64)


MHC = {
    "cross": _kernel([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]) / 8,
    "horiz": _kernel([[0, 0, .5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, .5, 0, 0]]) / 8,
    "diag": _kernel([[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]) / 8,
}
MHC["vert"] = MHC["horiz"].T
BILINEAR = {
    "cross": _kernel([[0, 0, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]]) / 4,
    "diag": _kernel([[0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0]]) / 4,
    "horiz": _kernel([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]) / 2,
}
BILINEAR["vert"] = BILINEAR["horiz"].T


def normalise(mosaic, black, scale):
    """(m - black[pos]) * scale[pos] in float32 (the kernel's first step), clipped to [0, 1]."""
    h, w = mosaic.shape
    b = np.tile(black, ((h + 1) // 2, (w + 1) // 2))[:h, :w]
    s = np.tile(scale, ((h + 1) // 2, (w + 1) // 2))[:h, :w]
    return np.clip((mosaic.astype(F) - b) * s, F(0), F(1))


def ref_develop(mosaic, cfa, black, scale, matrix, method):
    h, w = mosaic.shape
    v = normalise(mosaic, black, scale).astype(np.float64)
    p = np.pad(v, 2, mode="reflect")
    filters = MHC if method == "mhc" else BILINEAR
    est = {}
    for name, k in filters.items():
        acc = np.zeros((h, w))
        for di in range(5):
            for dj in range(5):
                if k[di, dj]:
                    acc += k[di, dj] * p[di:di + h, dj:dj + w]
        est[name] = acc
    ri, rj = red_site(cfa)
    red_row = (np.arange(h)[:, None] & 1) == ri
    red_col = (np.arange(w)[None, :] & 1) == rj
    r_site, b_site = red_row & red_col, ~red_row & ~red_col
    g_red_row, g_blue_row = red_row & ~red_col, ~red_row & red_col
    r = np.select([r_site, b_site, g_red_row, g_blue_row], [v, est["diag"], est["horiz"], est["vert"]])
    g = np.select([r_site | b_site], [est["cross"]], v)
    b = np.select([r_site, b_site, g_red_row, g_blue_row], [est["diag"], v, est["vert"], est["horiz"]])
    rgb = np.stack([r, g, b])
    return np.einsum("kc,chw->khw", matrix.astype(np.float64), rgb)


# RCD (ratio corrected demosaicing, L. Sanz Rodriguez 2017) step by step on whole float32 planes
# of the mosaic mirrored by 10 samples (np.pad "reflect" = reflect101), every neighbour read
# by shifting the plane (np.roll); only the centre, 10 samples from every edge, is kept, and a
# value the roll wrapped around never reaches it (each step reads at most 4 samples away).

EPS, EPS_SQ = F(1e-5), F(1e-10)


def _shift(a, dy, dx):
    """out[y, x] = a[y + dy, x + dx]."""
    return np.roll(a, (-dy, -dx), (0, 1))


def ref_rcd(mosaic, cfa, black, scale, matrix):
    v = np.pad(normalise(mosaic, black, scale), 10, mode="reflect")
    ri, rj = red_site(cfa)
    yy, xx = np.mgrid[0:v.shape[0], 0:v.shape[1]]
    red = ((yy & 1) == ri) & ((xx & 1) == rj)
    blue = ((yy & 1) != ri) & ((xx & 1) != rj)
    green = ~(red | blue)
    S, a = _shift, np.abs

    def hp(dy, dx):  # squared high-pass (1, -1, -3, 6, -3, -1, 1)-like, as published
        u = ((S(v, -3 * dy, -3 * dx) - S(v, -dy, -dx)) - S(v, dy, dx)) + S(v, 3 * dy, 3 * dx)
        u = (u - F(3) * (S(v, -2 * dy, -2 * dx) + S(v, 2 * dy, 2 * dx))) + F(6) * v
        return u * u

    def share(p, q):
        p, q = np.maximum(p, EPS_SQ), np.maximum(q, EPS_SQ)
        return p / (p + q)

    def refined(d):  # the neighbours' mean where it is further from 0.5 than the pixel's own
        near = (((S(d, -1, -1) + S(d, -1, 1)) + S(d, 1, -1)) + S(d, 1, 1)) * F(0.25)
        return np.where(a(F(0.5) - near) > a(F(0.5) - d), near, d)

    hv, hh = hp(1, 0), hp(0, 1)
    vh = refined(share((S(hv, -1, 0) + hv) + S(hv, 1, 0), (S(hh, 0, -1) + hh) + S(hh, 0, 1)))
    # green: ratio-corrected cardinal neighbours, weighted by the gradients, blended by VH
    lpf = (v + F(0.5) * (((S(v, -1, 0) + S(v, 1, 0)) + S(v, 0, -1)) + S(v, 0, 1))) \
        + F(0.25) * (((S(v, -1, -1) + S(v, -1, 1)) + S(v, 1, -1)) + S(v, 1, 1))
    est, grad = {}, {}
    for name, (dy, dx) in {"n": (-1, 0), "s": (1, 0), "w": (0, -1), "e": (0, 1)}.items():
        grad[name] = (((EPS + a(S(v, dy, dx) - S(v, -dy, -dx))) + a(v - S(v, 2 * dy, 2 * dx)))
                      + a(S(v, dy, dx) - S(v, 3 * dy, 3 * dx))) + a(S(v, 2 * dy, 2 * dx) - S(v, 4 * dy, 4 * dx))
        est[name] = (S(v, dy, dx) * (lpf + lpf)) / ((EPS + lpf) + S(lpf, 2 * dy, 2 * dx))
    vest = (grad["s"] * est["n"] + grad["n"] * est["s"]) / (grad["n"] + grad["s"])
    hest = (grad["w"] * est["e"] + grad["e"] * est["w"]) / (grad["e"] + grad["w"])
    g = np.where(green, v, vh * (hest - vest) + vest)
    # red at blue sites and blue at red sites: diagonal colour differences, blended by PQ
    hpp, hpq = hp(1, 1), hp(1, -1)
    pq = refined(share((S(hpp, -1, -1) + hpp) + S(hpp, 1, 1), (S(hpq, -1, 1) + hpq) + S(hpq, 1, -1)))
    planes = []
    for native, missing in ((red, blue), (blue, red)):
        dg, de = {}, {}
        for name, (dy, dx) in {"nw": (-1, -1), "ne": (-1, 1), "sw": (1, -1), "se": (1, 1)}.items():
            opposite = S(v, -dy, -dx)
            dg[name] = ((EPS + a(S(v, dy, dx) - opposite)) + a(S(v, dy, dx) - S(v, 3 * dy, 3 * dx))) \
                + a(g - S(g, 2 * dy, 2 * dx))
            de[name] = S(v, dy, dx) - S(g, dy, dx)
        pest = (dg["nw"] * de["se"] + dg["se"] * de["nw"]) / (dg["nw"] + dg["se"])
        qest = (dg["ne"] * de["sw"] + dg["sw"] * de["ne"]) / (dg["ne"] + dg["sw"])
        planes.append(np.where(native, v, np.where(missing, g + (pq * (qest - pest) + pest), np.nan)))
    # red and blue at green sites: cardinal colour differences, blended by VH
    out = []
    for x in planes:
        gr = {}
        for name, (dy, dx) in {"n": (-1, 0), "s": (1, 0), "w": (0, -1), "e": (0, 1)}.items():
            gr[name] = ((EPS + a(g - S(g, 2 * dy, 2 * dx))) + a(S(x, dy, dx) - S(x, -dy, -dx))) \
                + a(S(x, dy, dx) - S(x, 3 * dy, 3 * dx))
        ce = {name: S(x, dy, dx) - S(g, dy, dx) for name, (dy, dx) in
              {"n": (-1, 0), "s": (1, 0), "w": (0, -1), "e": (0, 1)}.items()}
        vest = (gr["n"] * ce["s"] + gr["s"] * ce["n"]) / (gr["n"] + gr["s"])
        hest = (gr["e"] * ce["w"] + gr["w"] * ce["e"]) / (gr["e"] + gr["w"])
        out.append(np.where(green, g + (vh * (hest - vest) + vest), x))
    rgb = np.stack([out[0], g, out[1]])[:, 10:-10, 10:-10].astype(np.float64)
    return np.einsum("kc,chw->khw", matrix.astype(np.float64), rgb)


def run(mosaic, cfa, black, scale, matrix, method):
    dst = np.full((3, *mosaic.shape), np.nan, F)
    be.develop(mosaic, np.asarray(cfa, np.int8), black, scale, matrix, method, dst)
    return dst


def random_case(rng, h, w, white=4095):
    mosaic = rng.integers(0, white + 200, (h, w)).astype(np.uint16)
    black = rng.uniform(50, 300, (2, 2)).astype(F)
    scale = (rng.uniform(1, 2.5, (2, 2)) / (white - black)).astype(F)
    matrix = np.array([[1.6, -0.5, -0.1], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]], F)
    return mosaic, black, scale, matrix


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 2), (5, 7), (8, 8), (37, 53)])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", ("bilinear", "mhc"))
def test_develop_matches_paper_filters(method, pattern, shape):
    rng = np.random.default_rng(zlib.crc32(repr((method, pattern, shape)).encode()))
    mosaic, black, scale, matrix = random_case(rng, *shape)
    got = run(mosaic, PATTERNS[pattern], black, scale, matrix, method)
    want = ref_develop(mosaic, np.array(PATTERNS[pattern]), black, scale, matrix, method)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (8, 8), (37, 53), (130, 21), (300, 19)])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_rcd_matches_its_steps_on_whole_planes(pattern, shape):
    """The block-wise Numba RCD (row blocks of 128 with their own halos: the (130, 21) case spans
    two, (300, 19) three) against the published steps on whole planes."""
    rng = np.random.default_rng(zlib.crc32(repr(("rcd", pattern, shape)).encode()))
    mosaic, black, scale, matrix = random_case(rng, *shape)
    got = run(mosaic, PATTERNS[pattern], black, scale, matrix, "rcd")
    want = ref_rcd(mosaic, np.array(PATTERNS[pattern]), black, scale, matrix)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)


def test_rcd_blocks_reuse_their_work_planes_cleanly():
    """One chunk running all five blocks of a mosaic in the same work planes (each block reads
    only what it wrote) gives the bits of five chunks of a block each, every one in fresh planes
    filled with NaN (so a read of anything not written shows)."""
    import importlib

    dev_module = importlib.import_module("gpustack.backends.cpu.develop")  # the package exports the function

    rng = np.random.default_rng(11)
    mosaic, black, scale, matrix = random_case(rng, 5 * 128 - 7, 33)
    red_row, red_col = red_site(PATTERNS["GBRG"])
    out = [np.full((3, *mosaic.shape), np.nan, F) for _ in range(2)]
    (shape, dtype), = dev_module._rcd_work(*mosaic.shape)
    for chunks, dst in zip(([(0, 5)], [(k, k + 1) for k in range(5)]), out):
        for blk0, blk1 in chunks:
            work = np.full(shape, np.nan, dtype)
            dev_module._rcd_kernel(mosaic, red_row, red_col, black, scale, matrix, dst, work, blk0, blk1)
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.isnan(out[0]).any()


def test_rcd_on_smooth_content_matches_its_steps():
    """The same on a camera-like mosaic (random mosaics rarely reach the branches of smooth
    content: a decided direction, the neighbours' refinement)."""
    truth = smooth_scene(70, 90, seed=3)
    mosaic = np.rint(mosaic_of(truth, PATTERNS["GRBG"]) * 4000 + 64).astype(np.uint16)
    black, scale = np.full((2, 2), 64, F), np.full((2, 2), 1 / 4000, F)
    matrix = np.array([[1.6, -0.5, -0.1], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]], F)
    got = run(mosaic, PATTERNS["GRBG"], black, scale, matrix, "rcd")
    np.testing.assert_allclose(got, ref_rcd(mosaic, np.array(PATTERNS["GRBG"]), black, scale, matrix),
                               rtol=0, atol=2e-6)


def test_reflect101_keeps_the_cfa_phase():
    """reflect101 mirrors about the edge sample (i -> -i, n-1+d -> n-1-d): an even displacement,
    so every index the 5x5 window reaches keeps its parity, for any n >= 2."""
    for n in range(2, 12):
        for i in range(-2, n + 2):
            assert reflect(i, n) % 2 == i % 2, (i, n)


@pytest.mark.parametrize("shape", [(2, 2), (3, 5), (6, 9), (21, 16)])
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", METHODS)
def test_border_is_the_mirrored_mosaic(method, pattern, shape):
    """The border rule is exactly "develop the mosaic mirrored by PAD samples on each side" (2
    for the 5x5 filters, 10 for rcd's chain of steps): padding by PAD (even, so the pattern is
    unchanged) and cropping gives the same bits."""
    rng = np.random.default_rng(7)
    mosaic, black, scale, matrix = random_case(rng, *shape)
    k = PAD[method]
    padded = np.pad(mosaic, k, mode="reflect")
    small = run(mosaic, PATTERNS[pattern], black, scale, matrix, method)
    big = run(padded, PATTERNS[pattern], black, scale, matrix, method)
    np.testing.assert_array_equal(small, big[:, k:-k, k:-k])


def mosaic_of(rgb, cfa):
    """Sample an (H, W, 3) image with a 2x2 CFA."""
    h, w, _ = rgb.shape
    idx = np.tile(np.asarray(cfa), ((h + 1) // 2, (w + 1) // 2))[:h, :w]
    return np.take_along_axis(rgb, idx[..., None], axis=2)[..., 0]


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("method", METHODS)
def test_constant_colour_is_exact_everywhere(method, pattern):
    """A flat colour comes out exactly (borders included: a wrong CFA phase at the edge would
    mix the channels there); rcd's to within its 1e-5 guards against a zero denominator (the
    ratio of two equal low-passes is 2l / (2l + 1e-5), a few 1e-6 below 1)."""
    colour = np.array([3000, 1000, 2000])
    mosaic = mosaic_of(np.broadcast_to(colour, (11, 14, 3)), PATTERNS[pattern]).astype(np.uint16)
    black = np.zeros((2, 2), F)
    scale = np.full((2, 2), 1 / 4096, F)  # a power of two: exact
    out = run(mosaic, PATTERNS[pattern], black, scale, np.eye(3, dtype=F), method)
    want = np.broadcast_to((colour / 4096).astype(F)[:, None, None], out.shape)
    if method == "rcd":
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=0)
        assert np.abs(out - want).max() > 0  # not by accident exact: the guards are there
    else:
        np.testing.assert_array_equal(out, want)


def smooth_scene(h, w, seed=0):
    """Linear RGB in [0.05, 0.95]: a band-limited luminance texture times a slowly varying tint
    (the colour channels are correlated, as in real scenes)."""
    rng = np.random.default_rng(seed)
    lum = ndimage.gaussian_filter(rng.uniform(0, 1, (h, w)), 1.6)
    lum = (lum - lum.min()) / (lum.max() - lum.min())
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    tint = np.stack([0.6 + 0.3 * np.sin(3 * x), 0.7 + 0.2 * np.cos(2 * y), 0.5 + 0.3 * np.sin(2 * x + y)], -1)
    return 0.05 + 0.9 * lum[..., None] * tint


def demosaic_errors(truth, pattern, crop):
    """Mean squared error of each demosaic against ``truth`` (H, W, 3) in [0, 1], mosaicked with
    ``pattern`` at 16 bits, away from the borders."""
    mosaic = np.rint(mosaic_of(truth, PATTERNS[pattern]) * 65535).astype(np.uint16)
    black, scale, eye = np.zeros((2, 2), F), np.full((2, 2), 1 / 65535, F), np.eye(3, dtype=F)
    err = {}
    for method in METHODS:
        out = np.moveaxis(run(mosaic, PATTERNS[pattern], black, scale, eye, method), 0, -1)
        err[method] = np.mean((out - truth)[crop:-crop, crop:-crop] ** 2)
    return err


@pytest.mark.parametrize("pattern", PATTERNS)
def test_mhc_beats_bilinear_on_a_smooth_scene(pattern):
    err = demosaic_errors(smooth_scene(96, 128), pattern, 4)
    assert err["mhc"] < 0.35 * err["bilinear"], err
    assert 10 * np.log10(1 / err["mhc"]) > 40


@pytest.mark.parametrize("pattern", ("RGGB", "GBRG"))
def test_rcd_beats_mhc_on_a_photographed_scene(pattern):
    """A photograph with camera-like optics (Gaussian sigma 1 px, as gpustack.synth renders an
    in-focus frame), mosaicked: the edge-directed RCD's error is well under half of MHC's
    (measured: about a quarter), and MHC's under bilinear's."""
    from gpustack import synth

    truth = synth.make_stack(scene="astronaut", n_frames=2, shape=(160, 200), optics=1.0, noise=False).truth
    err = demosaic_errors(truth, pattern, 8)
    assert err["rcd"] < 0.5 * err["mhc"] < 0.5 * err["bilinear"], err


def test_clipping_saturated_and_below_black():
    """Samples at or above the white level clip to 1 after the white balance (a saturated site
    stays white: rows of the matrix sum to 1), samples below black to 0."""
    matrix = np.array([[1.6, -0.5, -0.1], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]], F)
    black = np.full((2, 2), 200, F)
    scale = (np.array([[2.0, 1.0], [1.0, 1.5]]) / (4095 - 200)).astype(F)
    for value, want in ((4095, 1.0), (5000, 1.0), (100, 0.0)):
        mosaic = np.full((6, 8), value, np.uint16)
        for method in METHODS:
            out = run(mosaic, PATTERNS["RGGB"], black, scale, matrix, method)
            np.testing.assert_allclose(out, want, atol=1e-5 if method == "rcd" else 1e-6)  # rcd: its guards


def test_develop_rejects_bad_arguments():
    mosaic = np.zeros((4, 4), np.uint16)
    dst = np.empty((3, 4, 4), F)
    ok = (np.array(PATTERNS["RGGB"], np.int8), np.zeros((2, 2), F), np.ones((2, 2), F), np.eye(3, dtype=F))
    with pytest.raises(ValueError, match="method"):
        be.develop(mosaic, *ok, "ahd", dst)
    with pytest.raises(ValueError, match="Bayer"):
        be.develop(mosaic, np.array([[0, 1], [2, 1]], np.int8), *ok[1:], "mhc", dst)
    with pytest.raises(ValueError, match="2x2"):
        be.develop(np.zeros((1, 4), np.uint16), *ok, "mhc", np.empty((3, 1, 4), F))
    with pytest.raises(TypeError, match="uint16"):
        be.develop(mosaic.astype(np.float32), *ok, "mhc", dst)
    with pytest.raises(ValueError, match="dst"):
        be.develop(mosaic, *ok, "mhc", np.empty((3, 4, 5), F))
    with pytest.raises(TypeError, match="scale"):
        be.develop(mosaic, ok[0], ok[1], np.ones((2, 2)), ok[3], "mhc", dst)


def test_cuda_plan_validates_like_the_cpu_backend():
    from gpustack.backends.cuda import _kernels as K

    mosaic = np.zeros((4, 6), np.uint16)
    dst = np.empty((3, 4, 6), F)
    cfa = np.array(PATTERNS["GBRG"], np.int8)
    args = (np.zeros((2, 2), F), np.ones((2, 2), F), np.eye(3, dtype=F))
    plan = K.plan_develop(mosaic, cfa, *args, "mhc", dst)
    assert plan.kernel == "gs_develop_mhc" and plan.grid == (1, 1, 1) and plan.block == (32, 8, 1)
    assert plan.args[2:6] == (4, 6, 1, 0)  # h, w, red row parity, red column parity
    assert K.plan_develop_bilinear(mosaic, cfa, *args, dst).kernel == "gs_develop_bilinear"
    with pytest.raises(ValueError, match="Bayer"):
        K.plan_develop(mosaic, np.array([[0, 0], [1, 2]], np.int8), *args, "mhc", dst)
    with pytest.raises(ValueError, match="method"):
        K.plan_develop(mosaic, cfa, *args, "vng", dst)


def raw_mosaic(cfa="GRBG", wb=(2.0, 1.0, 1.5), black=((256, 250), (260, 256)), white=4095.0):
    cam_to_srgb = np.array([[1.5, -0.4, -0.1], [-0.2, 1.4, -0.2], [0.0, -0.5, 1.5]], F)
    return RawMosaic(mosaic=np.zeros((4, 4), np.uint16), cfa=np.array(PATTERNS[cfa], np.int8),
                     black=np.array(black, F), white=white, wb=np.array(wb, F), cam_to_srgb=cam_to_srgb,
                     is_bayer=True)


def test_develop_params():
    raw = raw_mosaic()
    black, scale, matrix = develop_params(raw)
    assert black.dtype == scale.dtype == matrix.dtype == F
    np.testing.assert_array_equal(black, raw.black)
    # GRBG: G R / B G
    want = np.array([[1.0 / (4095 - 256), 2.0 / (4095 - 250)], [1.5 / (4095 - 260), 1.0 / (4095 - 256)]])
    np.testing.assert_array_equal(scale, want.astype(F))
    np.testing.assert_array_equal(matrix, raw.cam_to_srgb)
    _, _, eye = develop_params(raw, "camera")
    np.testing.assert_array_equal(eye, np.eye(3, dtype=F))
    # multipliers normalised by the smallest (LibRaw's convention): a white sample of every
    # channel reaches at least 1, so the clip makes saturation white
    _, scale2, _ = develop_params(raw_mosaic(wb=(2.0, 1.0, 0.8)))
    np.testing.assert_allclose(scale2 * (4095 - raw.black), [[1.25, 2.5], [1.0, 1.25]], rtol=1e-6)
    with pytest.raises(ValueError, match="color"):
        develop_params(raw, "xyz")
    with pytest.raises(ValueError, match="white level"):
        develop_params(raw_mosaic(white=200.0))
