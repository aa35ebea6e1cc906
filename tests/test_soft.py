"""The soft fusion (the default method): the streaming fold against the batch NumPy oracle, the
order independence of its weights, and what it is for: sharp regions from their sharp frames, a
soft share between frames equally sharp, and the tone of the sharp frames (not the stack's mean)."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import gpustack
import reference as ref
from gpustack.backends.cpu import CpuBackend
from gpustack.stages import soft
from gpustack.stages.align import processing_order
from gpustack.stages.soft import SoftFusion, noise_floor

F = np.float32
be = CpuBackend()


def _frames(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, shape).astype(F) for _ in range(n)]


def _planar(frames):
    return [np.ascontiguousarray(np.moveaxis(f, -1, 0)) if f.ndim == 3 else f[None].copy() for f in frames]


@pytest.mark.parametrize("n,shape", [(3, (33, 47, 3)), (5, (40, 64, 1)), (2, (16, 17, 3)), (4, (9, 8, 3))])
def test_stack_equals_batch_reference_bit_for_bit(n, shape):
    frames = [gaussian_filter(f, (s, s, 0)[: f.ndim]).astype(F) for f, s in zip(_frames(n, shape), [0, 1, 2, 0.5, 3])]
    res = gpustack.stack(frames, backend="cpu", depth_smooth=0, align="none", brightness=False)
    planar = _planar(frames)
    order = processing_order(n, n // 2)
    floor = noise_floor(planar[order[0]])
    fused, depth, conf = ref.soft_fusion(planar, order, floor, soft.depth_shift(floor), soft.POWER,
                                         soft.DEPTH_POWER, soft.RMIN)
    linear = res.linear if res.linear.ndim == 3 else res.linear[:, :, None]
    np.testing.assert_array_equal(np.moveaxis(linear, -1, 0), fused)
    np.testing.assert_array_equal(res.depth_raw, depth)
    np.testing.assert_array_equal(res.confidence, conf)
    alone = gpustack.stack(frames, backend="cpu", depth_smooth=0, align="none", brightness=False, maps=False)
    np.testing.assert_array_equal(alone.linear, res.linear)  # without the maps' sums: the same image
    assert alone.depth is alone.depth_raw is alone.confidence is None


@pytest.mark.parametrize("opts", [{"method": "soft"}, {"method": "pyramid", "levels": 3},
                                  {"method": "soft", "per_channel": True}, {"method": "pyramid", "per_channel": True},
                                  {"method": "soft", "z_step": 2.0}, {"method": "soft", "align": "similarity"},
                                  {"method": "soft", "align": "similarity", "crop": False}])
def test_without_maps_the_image_is_the_same_and_no_map_is_made(opts):
    """``maps=False``: the same image bytes as with the maps, for every method and mode, and no
    depth, confidence or height map; the depthmap method, which fuses by its depth map, makes it."""
    from gpustack import synth

    frames = synth.make_stack(n_frames=4, shape=(96, 128), seed=4, breathing=0.02, shift=2.0).frames
    opts = {"backend": "cpu", "align": "none", **opts}
    with_maps = gpustack.stack(frames, **opts)
    alone = gpustack.stack(frames, maps=False, **opts)
    np.testing.assert_array_equal(alone.image, with_maps.image)
    np.testing.assert_array_equal(alone.linear, with_maps.linear)
    assert with_maps.depth is not None and with_maps.confidence is not None
    assert alone.depth is alone.depth_raw is alone.confidence is alone.height is alone.height_confidence is None
    if "z_step" in opts:
        assert with_maps.height is not None
    depthmap = gpustack.stack(frames, backend="cpu", align="none", method="depthmap", levels=3, maps=False)
    assert depthmap.depth is not None


def _fold(frames, order, floor):
    """The fused image, depth and confidence of the soft fold in ``order`` with a fixed ``floor``."""
    c, h, w = frames[0].shape
    fusion = SoftFusion(be, c, h, w)
    fusion.floor = floor
    for k in order:
        np.copyto(fusion.input, frames[k])
        fusion.fold(k)
    depth, conf = fusion.depth()
    return fusion.collapse(), depth, conf


def test_weights_do_not_depend_on_the_order():
    """Every frame's weight is (score / best of the stack)^POWER however the best arrives: frames
    folded in opposite orders give the same result up to float rounding (the rescaling is exact
    algebra), and a frame whose ratio is cut off (below RMIN) leaves no trace."""
    frames = _planar([gaussian_filter(f, (s, s, 0)).astype(F)
                      for f, s in zip(_frames(6, (40, 56, 3), seed=7), [2, 0, 1, 3, 0.7, 1.5])])
    a = _fold(frames, range(6), F(1e-3))
    b = _fold(frames, range(5, -1, -1), F(1e-3))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=2e-5, atol=2e-6)
    c = _fold(frames, range(6), F(100.0))  # a floor far above the scores evens the weights out
    assert np.abs(c[0] - a[0]).max() > 1e-3


def test_identical_frames_fuse_to_the_frame():
    frame = _frames(1, (64, 80, 3), seed=3)[0]
    res = gpustack.stack([frame] * 4, backend="cpu", align="none")
    np.testing.assert_allclose(res.linear, frame, atol=2e-6)


def test_sharp_region_taken_from_the_sharp_frame():
    """Left half sharp in frame 0, right half in frame 1: each half is its sharp frame's, to the noise."""
    rng = np.random.default_rng(5)
    truth = rng.uniform(0.1, 0.9, (96, 128)).astype(F)
    blur = gaussian_filter(truth, 2).astype(F)
    a = np.where(np.arange(128) < 64, truth, blur).astype(F)
    b = np.where(np.arange(128) < 64, blur, truth).astype(F)
    res = gpustack.stack([a, b], backend="cpu", linear=True, depth_smooth=0, align="none", brightness=False)
    for sl, k in zip((np.s_[8:-8, 8:56], np.s_[8:-8, 72:120]), (0, 1)):
        err = np.abs(res.linear[sl] - truth[sl]).mean()
        assert err < 0.005, err
        assert np.abs(res.depth_raw[sl] - k).max() < 0.05
        assert np.abs(res.linear[sl] - blur[sl]).mean() > 20 * err


def test_equally_sharp_frames_share_the_pixel():
    """Two frames as sharp as each other with independent noise: the soft weights average them
    (the noise falls by about sqrt(2)), where a hard pick would keep one frame's noise."""
    rng = np.random.default_rng(8)
    truth = gaussian_filter(rng.uniform(0.2, 0.8, (96, 96)), 1).astype(F)
    noisy = [(truth + rng.normal(0, 0.01, truth.shape)).astype(F) for _ in range(2)]
    blurred = gaussian_filter(truth, 3).astype(F)
    res = gpustack.stack([noisy[0], noisy[1], blurred], backend="cpu", linear=True, align="none", brightness=False)
    inner = np.s_[8:-8, 8:-8]
    rms = float(np.sqrt(np.mean((res.linear[inner] - truth[inner]) ** 2)))
    single = float(np.sqrt(np.mean((noisy[0][inner] - truth[inner]) ** 2)))
    assert rms < 0.85 * single, (rms, single)


def test_tone_follows_the_sharp_frames():
    """The defocused frames of a region are brighter there (a blurred bright neighbour spreads over
    it): the soft result keeps the sharp frame's local mean, where the pyramid's coarsest level is
    the stack's mean."""
    rng = np.random.default_rng(9)
    truth = (0.2 + 0.1 * gaussian_filter(rng.uniform(0, 1, (128, 128)), 1)).astype(F)
    frames = [truth]
    for k in range(1, 5):  # defocused, and veiled by a spreading bright object
        frames.append((gaussian_filter(truth, 1 + k) + F(0.05 * k)).astype(F))
    opts = dict(backend="cpu", linear=True, align="none", brightness=False)
    inner = np.s_[16:-16, 16:-16]

    def tone_error(img):
        return float(np.abs(gaussian_filter(img, 6)[inner] - gaussian_filter(truth, 6)[inner]).mean())

    soft_err = tone_error(gpustack.stack(frames, **opts).linear)
    pyr_err = tone_error(gpustack.stack(frames, method="pyramid", **opts).linear)
    assert soft_err < 0.002, soft_err
    assert pyr_err > 10 * soft_err, (pyr_err, soft_err)


def test_noise_floor_measures_the_noise_not_the_texture():
    """White noise of sigma 0.01 on a smooth gradient and on a blurred texture four times stronger
    (std 0.042): the floor is the noise's (sigma^2 within 15 %), not the texture's."""
    rng = np.random.default_rng(11)
    gradient = np.broadcast_to(np.linspace(0.2, 0.8, 256, dtype=F), (3, 192, 256))
    texture = gaussian_filter(rng.uniform(0, 1, (3, 192, 256)), (0, 2.0, 2.0)).astype(F)
    unit = soft.FLOOR_SCALE * 27 * 3
    for base in (gradient, texture):
        noisy = (base + rng.normal(0, 0.01, base.shape)).astype(F)
        assert abs(noise_floor(noisy) / unit / 1e-4 - 1) < 0.15
    assert noise_floor(texture) / unit < 0.1e-4  # the texture alone: a tenth of the noise
    assert noise_floor(np.zeros((1, 5, 7), F)) == 0


def test_depth_is_the_weighted_frame_index():
    """A slope in focus across the frames: the depth map follows it, with sub-frame steps."""
    from gpustack import synth

    st = synth.make_stack(scene="chelsea", depth="slope", n_frames=8, shape=(96, 128), seed=2)
    res = gpustack.stack(st.frames, backend="cpu", align="none")
    inner = np.s_[12:-12, 12:-12]
    assert np.corrcoef(res.depth[inner].ravel(), st.depth[inner].ravel())[0, 1] > 0.9
    assert len(np.unique(np.round(res.depth_raw[inner], 2))) > 50  # not whole frames only


@pytest.mark.parametrize("levels,radius", [(1, 1), (2, 2), (3, 1), (4, 0)])
@pytest.mark.parametrize("focus_channel", [None, 1])
def test_score_follows_its_parameters(monkeypatch, levels, radius, focus_channel):
    """The score's structure stays parametric (SCORE_LEVELS, RADIUS): the score a fold leaves is the
    batch oracle's for those values, on every channel or on the focus channel alone."""
    monkeypatch.setattr(soft, "SCORE_LEVELS", levels)
    monkeypatch.setattr(soft, "RADIUS", radius)
    frame = _planar([gaussian_filter(f, (1, 1, 0)).astype(F) for f in _frames(1, (45, 62, 3), seed=9)])[0]
    fusion = SoftFusion(be, 3, 45, 62, focus_channel=focus_channel)
    np.copyto(fusion.input, frame)
    fusion.fold(0)
    sel = frame if focus_channel is None else frame[focus_channel:focus_channel + 1]
    want, _, _ = ref.soft_score(np.ascontiguousarray(sel), levels=levels, r=radius)
    np.testing.assert_array_equal(fusion.score.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("n", [4095, 4096, 4097, 100_001, 300_000])
@pytest.mark.parametrize("kind", ["magnitudes", "signed", "few values", "zeros", "tiny and huge", "with inf",
                                  "with nan", "sorted", "skewed"])
def test_select_median_is_numpys_median(n, kind):
    """The noise floor's median by selection: np.median's float32, whatever the values and their order."""
    from gpustack.stages.soft import select_median

    rng = np.random.default_rng(n)
    a = np.abs(rng.normal(0, 0.01, n)).astype(np.float32)
    if kind == "signed":
        a = rng.normal(0, 1, n).astype(np.float32)
    elif kind == "few values":  # ties across the middle
        a = rng.choice(np.array([0.0, 1e-3, 2e-3, 0.5], np.float32), n)
    elif kind == "zeros":
        a[: n // 2 + 3] = 0.0
    elif kind == "tiny and huge":  # denormals, and values far apart
        a[::3] = np.float32(1e-42)
        a[1::7] = np.float32(3e38)
    elif kind == "with inf":
        a[::5] = np.inf
        a[1::9] = -np.inf
    elif kind == "with nan":
        a[n // 3] = np.nan
    elif kind == "sorted":  # a sample of every k-th value sees a biased slice of each run
        a = np.sort(a)
    elif kind == "skewed":  # the sample's stride in step with a pattern
        a = np.tile(np.array([1.0, 2.0, 3.0, 4.0], np.float32), n // 4 + 1)[:n]
        a[: n // 2] += np.float32(0.5)
    want = np.median(a)
    got = select_median(a.copy())
    assert np.asarray(got).dtype == np.float32
    np.testing.assert_array_equal(np.float32(got).view(np.uint32), np.float32(want).view(np.uint32))


def test_select_median_leaves_other_arrays_to_numpy():
    from gpustack.stages.soft import select_median

    b = np.linspace(0, 1, 5000)  # float64
    assert select_median(b) == np.median(b)
    c = np.arange(100, dtype=np.float32)  # short
    assert select_median(c) == np.median(c)
