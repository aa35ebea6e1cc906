"""Pairwise motion estimation (gpustack.stages.estimate) against known warps.

Test pairs imitate two neighbouring focus frames: the same scene, left half
sharp in ``fixed`` and blurred (Gaussian sigma 2.5) in ``moving``, the right
half the other way round, a horizontal band sharp in both; ``moving`` is then
warped by a known affine (cubic spline) and both get a little noise. Errors
are RMS distances at the four image corners, in px.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy import ndimage as ndi

from gpustack.errors import InputError
from gpustack.stages.estimate import BLUR_VARIANCE, MODELS, PairEstimate, _blur_coherence, estimate_pair

SHAPE = (512, 768)  # the small end of the 1-2 MP proxies the pipeline uses
TRANSITION = 8.0  # px: width of the sigmoid between the two halves


# ---------------------------------------------------------------- helpers


def texture(shape, seed=0):
    """Smooth multi-scale noise around 0.5 (detail at every scale from 1 to 16 px)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape)
    for sigma, amp in ((1, 0.3), (2, 0.3), (4, 0.5), (8, 0.6), (16, 0.5)):
        n = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
        out += amp * n / n.std()
    return 0.5 + 0.1 * out


@functools.cache
def scene(name, shape=SHAPE):
    if name == "texture":
        return texture(shape)
    pytest.importorskip("skimage")
    from skimage import color, data, transform

    img = color.rgb2gray(data.astronaut())
    return transform.resize(img, shape, order=3, anti_aliasing=True)


def motion(shape, mag=1.0, rot_deg=0.0, tx=0.0, ty=0.0):
    """(2, 3) affine: magnify by ``mag`` and turn by ``rot_deg`` about the centre, then shift by (tx, ty)."""
    h, w = shape
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    th = np.radians(rot_deg)
    lin = mag * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    return np.hstack([lin, (c + np.array([tx, ty]) - lin @ c)[:, None]])


def warp(img, a):
    """The image ``m`` with ``m(a @ [x, y, 1]) = img(x, y)`` (cubic spline)."""
    b = np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))
    matrix = np.array([[b[1, 1], b[1, 0]], [b[0, 1], b[0, 0]]])  # (row, col) order
    return ndi.affine_transform(img, matrix, offset=[b[1, 2], b[0, 2]], order=3, mode="reflect")


def focus_pair(img, a, sigma=2.5, noise=0.003, seed=1):
    """Two neighbouring focus frames of ``img``, the second warped by ``a``: (fixed, moving) float32."""
    h, w = img.shape
    x = np.arange(w)[None, :]
    y = np.arange(h)[:, None]
    right = 1.0 / (1.0 + np.exp(-(x - w / 2.0) / TRANSITION))  # 0 on the left, 1 on the right
    band = np.exp(-(((y - 0.3 * h) / (0.08 * h)) ** 2))  # sharp in both
    blur_a = right * (1.0 - band)
    blur_b = (1.0 - right) * (1.0 - band)
    blurred = ndi.gaussian_filter(img, sigma)
    fa = img * (1.0 - blur_a) + blurred * blur_a
    fb = img * (1.0 - blur_b) + blurred * blur_b
    rng = np.random.default_rng(seed)
    fixed = fa + noise * rng.standard_normal(img.shape)
    moving = warp(fb, a) + noise * rng.standard_normal(img.shape)
    return fixed.astype(np.float32), moving.astype(np.float32)


def corner_error(a, b, shape):
    """RMS distance (px) between where two (2, 3) affines put the four corner pixel centres."""
    h, w = shape
    c = np.array([[0.0, w - 1.0, w - 1.0, 0.0], [0.0, 0.0, h - 1.0, h - 1.0], [1.0, 1.0, 1.0, 1.0]])
    d = (np.asarray(a)[:2] - np.asarray(b)[:2]) @ c
    return float(np.sqrt((d ** 2).sum(0).mean()))


def reduce2(img):
    """One 2x pyramid step (5-tap binomial, output sample i centred on input sample 2 i)."""
    k = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    out = ndi.correlate1d(ndi.correlate1d(img.astype(np.float64), k, 0, mode="mirror"), k, 1, mode="mirror")
    return out[::2, ::2].astype(np.float32)


IDENTITY = np.eye(2, 3)
SIM = {"mag": 1.002, "rot_deg": 0.25, "tx": -3.1, "ty": 1.4}  # breathing + camera shift and turn
SCALE = {"mag": 1.0025, "tx": 0.8, "ty": 1.9}
SHIFT = {"tx": 1.3, "ty": -2.6}
SUBPIXEL_SHIFT = {"tx": 0.4, "ty": -0.3}


@functools.cache
def pair(name, kind):
    a = motion(SHAPE, **{"sim": SIM, "scale": SCALE, "shift": SHIFT, "subpixel": SUBPIXEL_SHIFT, "none": {}}[kind])
    return focus_pair(scene(name), a), a


# ---------------------------------------------------------------- accuracy

CAN_REPRESENT = [
    ("translation", "shift"), ("translation", "subpixel"),
    ("scale", "shift"), ("scale", "scale"),
    ("similarity", "shift"), ("similarity", "scale"), ("similarity", "sim"),
    ("affine", "shift"), ("affine", "scale"), ("affine", "sim"),
]


@pytest.mark.parametrize("name", ["texture", "astronaut"])
@pytest.mark.parametrize("model, kind", CAN_REPRESENT)
def test_recovers_known_motion(name, model, kind):
    (fixed, moving), truth = pair(name, kind)
    est = estimate_pair(fixed, moving, model)
    assert isinstance(est, PairEstimate)
    assert est.accepted
    assert est.affine.shape == (2, 3) and est.affine.dtype == np.float64
    assert est.score < est.identity_score
    assert corner_error(est.affine, truth, SHAPE) < 0.02


@pytest.mark.parametrize("name", ["texture", "astronaut"])
@pytest.mark.parametrize("stretch, shear", [(0.004, 0.0), (0.0, 0.003), (-0.002, 0.002)])
def test_affine_keeps_a_real_shear_or_stretch(name, stretch, shear):
    """A genuinely affine motion (anisotropic scale, shear: a tilted sensor, a perspective) on top
    of breathing and shift: "affine" keeps its extra degrees of freedom (they lower the cost by far
    more than ``AFFINE_GAIN``) and recovers it; "similarity" cannot."""
    a = motion(SHAPE, **SIM)
    h, w = SHAPE
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    extra = np.array([[1.0 + stretch, shear], [0.0, 1.0]])  # about the centre
    truth = np.hstack([extra @ a[:, :2], (extra @ (a[:, 2] - c) + c)[:, None]])
    fixed, moving = focus_pair(scene(name), truth)
    est = estimate_pair(fixed, moving, "affine")
    assert est.model == "affine" and est.accepted
    assert corner_error(est.affine, truth, SHAPE) < 0.03
    sim = estimate_pair(fixed, moving, "similarity")
    assert sim.model == "similarity" and corner_error(sim.affine, truth, SHAPE) > 0.3


@pytest.mark.parametrize("name", ["texture", "astronaut"])
@pytest.mark.parametrize("kind", ["none", "sim"])
def test_affine_without_a_shear_falls_back_to_similarity(name, kind):
    """Where the motion is a similarity (or none), the two extra degrees of freedom only fit the
    estimator's noise: the pair is estimated as a similarity (its own model's error bound)."""
    (fixed, moving), truth = pair(name, kind)
    est = estimate_pair(fixed, moving, "affine")
    assert est.model == "similarity"
    assert corner_error(est.affine, truth, SHAPE) < (0.01 if kind == "none" else 0.02)
    lin = est.affine[:, :2]
    assert abs(lin[0, 0] - lin[1, 1]) < 1e-12 and abs(lin[0, 1] + lin[1, 0]) < 1e-12  # a similarity exactly


@pytest.mark.parametrize("name", ["texture", "astronaut"])
@pytest.mark.parametrize("model", MODELS)
def test_motionless_pair_with_different_blur_stays_identity(name, model):
    (fixed, moving), _truth = pair(name, "none")
    est = estimate_pair(fixed, moving, model)
    assert corner_error(est.affine, IDENTITY, SHAPE) < 0.01


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_translation_gets_no_spurious_scale_or_rotation(model):
    (fixed, moving), truth = pair("texture", "shift")
    est = estimate_pair(fixed, moving, model)
    assert corner_error(est.affine, truth, SHAPE) < 0.02
    assert np.abs(est.affine[:, :2] - np.eye(2)).max() < 0.01 / (max(SHAPE) / 2)  # < 0.01 px at the long side's end


def test_model_that_cannot_represent_the_motion_keeps_its_form():
    (fixed, moving), _truth = pair("texture", "sim")
    shift_only = estimate_pair(fixed, moving, "translation")
    assert np.array_equal(shift_only.affine[:, :2], np.eye(2))
    assert shift_only.accepted and shift_only.score < shift_only.identity_score
    scale_only = estimate_pair(fixed, moving, "scale")
    lin = scale_only.affine[:, :2]
    assert lin[0, 0] == lin[1, 1] and lin[0, 1] == lin[1, 0] == 0
    assert abs(scale_only.affine[0, 0] - SIM["mag"] * np.cos(np.radians(SIM["rot_deg"]))) < 2e-4


def test_coordinate_convention_integer_shift():
    big = texture((SHAPE[0], SHAPE[1] + 20), seed=3).astype(np.float32)
    fixed = big[:, 10:10 + SHAPE[1]]  # fixed(x) = big(x + 10)
    moving = big[:, 13:13 + SHAPE[1]]  # moving(x - 3) = big(x + 10) = fixed(x)
    est = estimate_pair(fixed, moving, "translation")
    assert est.accepted
    np.testing.assert_allclose(est.affine, [[1.0, 0.0, -3.0], [0.0, 1.0, 0.0]], atol=2e-3)


# ---------------------------------------------------------------- the identity gate and init


def test_pure_noise_pair_is_rejected():
    rng = np.random.default_rng(7)
    fixed = (0.5 + 0.1 * rng.standard_normal(SHAPE)).astype(np.float32)
    moving = (0.5 + 0.1 * rng.standard_normal(SHAPE)).astype(np.float32)
    for model in ("translation", "similarity", "affine"):
        est = estimate_pair(fixed, moving, model)
        assert not est.accepted
        assert np.array_equal(est.affine, IDENTITY)
        assert est.score == est.identity_score


@pytest.mark.parametrize("model", ["translation", "similarity", "affine"])
def test_wrong_init_on_motionless_pair_never_makes_it_worse(model):
    (fixed, moving), _ = pair("texture", "none")
    wrong = motion(SHAPE, mag=1.01, rot_deg=0.5, tx=9.0, ty=-7.0)
    est = estimate_pair(fixed, moving, model, init=wrong)
    assert est.score <= est.identity_score
    assert corner_error(est.affine, IDENTITY, SHAPE) < 0.02


def test_good_init_keeps_the_answer():
    (fixed, moving), truth = pair("texture", "sim")
    est = estimate_pair(fixed, moving, "similarity", init=truth)
    assert est.accepted
    assert corner_error(est.affine, truth, SHAPE) < 0.02


def test_large_shift_is_found_by_phase_correlation():
    shape = SHAPE
    truth = motion(shape, mag=1.001, tx=17.0, ty=-11.0)
    fixed, moving = focus_pair(scene("texture"), truth)
    est = estimate_pair(fixed, moving, "similarity")
    assert est.accepted
    assert corner_error(est.affine, truth, shape) < 0.03


# ---------------------------------------------------------------- scale (proxy -> full resolution)


def test_scale_converts_a_proxy_estimate_to_full_resolution():
    full_shape = (2 * SHAPE[0], 2 * SHAPE[1])
    truth_full = motion(full_shape, mag=1.002, rot_deg=0.2, tx=3.4, ty=-2.2)
    fixed, moving = focus_pair(texture(full_shape, seed=5), truth_full, sigma=4.0)
    pf, pm = reduce2(fixed), reduce2(moving)
    est = estimate_pair(pf, pm, "similarity", scale=2.0)
    assert est.accepted
    assert corner_error(est.affine, truth_full, full_shape) < 0.04  # 0.02 proxy px
    proxy = estimate_pair(pf, pm, "similarity")  # the same estimate in proxy pixels
    np.testing.assert_allclose(proxy.affine[:, :2], est.affine[:, :2], atol=1e-12)
    np.testing.assert_allclose(2.0 * proxy.affine[:, 2], est.affine[:, 2], atol=1e-9)
    again = estimate_pair(pf, pm, "similarity", scale=2.0, init=est.affine)  # init is in full-res px too
    assert corner_error(again.affine, truth_full, full_shape) < 0.04


# ---------------------------------------------------------------- API


def test_none_model_is_identity():
    (fixed, moving), _ = pair("texture", "sim")
    est = estimate_pair(fixed, moving, "none")
    assert est.accepted and est.iterations == 0
    assert np.array_equal(est.affine, IDENTITY)
    assert est.score == est.identity_score


def test_deterministic():
    (fixed, moving), _ = pair("texture", "sim")
    a = estimate_pair(fixed, moving, "affine")
    b = estimate_pair(fixed.copy(), moving.copy(), "affine")
    assert a.affine.tobytes() == b.affine.tobytes()
    assert (a.score, a.identity_score, a.accepted, a.iterations) == (b.score, b.identity_score, b.accepted,
                                                                    b.iterations)


@pytest.mark.parametrize("fixed, moving, words", [
    (np.zeros((64, 64), np.float32), np.zeros((64, 65), np.float32), "same shape"),
    (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.float32), "2-D"),
    (np.zeros(64, np.float32), np.zeros(64, np.float32), "2-D"),
    (np.zeros((8, 64), np.float32), np.zeros((8, 64), np.float32), "too small"),
    (np.full((64, 64), np.nan, np.float32), np.zeros((64, 64), np.float32), "NaN"),
])
def test_bad_input_raises_input_error(fixed, moving, words):
    with pytest.raises(InputError, match=words) as info:
        estimate_pair(fixed, moving)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_model_lists_the_models():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(InputError) as info:
        estimate_pair(img, img, "homography")
    message = str(info.value)
    assert "\n" not in message and "homography" in message
    assert all(m in message for m in MODELS)


@pytest.mark.parametrize("kwargs, words", [
    ({"scale": 0.0}, "scale"),
    ({"scale": float("nan")}, "scale"),
    ({"init": np.eye(2)}, "init"),
])
def test_bad_scale_or_init_raises(kwargs, words):
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(InputError, match=words):
        estimate_pair(img, img, **kwargs)


def test_blur_coherence_lowers_where_the_blur_difference_changes():
    """Points where the frames' blur difference is the same all around keep their weight; along a
    line where it jumps by two bank copies (an occlusion boundary) the weight drops, within the
    window's reach only, and symmetrically on both sides."""
    grid = (20, 30)
    step = np.zeros(grid, np.intp)
    step[:, 15:] = 2
    f = _blur_coherence(step.ravel(), grid).reshape(grid)
    assert np.array_equal(f[:, :12], np.ones((20, 12))) and np.array_equal(f[:, 18:], np.ones((20, 12)))
    at_edge = 1.0 / (1.0 + (4.0 * 2 / 5 * 3 / 5) / BLUR_VARIANCE)  # window of 5: 2 of 5 columns differ by 2
    np.testing.assert_allclose(f[:, 14], at_edge, rtol=1e-12)
    np.testing.assert_allclose(f[:, 15], at_edge, rtol=1e-12)
    assert (f[:, 13] > f[:, 14]).all() and (f[:, 13] < 1).all()
    uniform = _blur_coherence(np.full(grid, 3, np.intp).ravel(), grid)
    assert np.array_equal(uniform, np.ones(grid[0] * grid[1]))
