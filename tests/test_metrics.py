"""Quality metrics: checked against scikit-image and against hand-made answers."""

import numpy as np
import pytest
from scipy import ndimage

from gpustack import metrics
from gpustack.errors import InputError

skm = pytest.importorskip("skimage.metrics")


def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + rng.normal(0, 0.05, shape), 0, 1)
    return a, b


# ---------------------------------------------------------------- sRGB


def test_srgb_known_points_and_round_trip():
    x = np.array([0.0, 0.0031308, 0.2, 0.5, 1.0])
    enc = metrics.srgb_encode(x)
    assert enc.dtype == np.float32
    expected = [0.0, 12.92 * 0.0031308, 1.055 * 0.2 ** (1 / 2.4) - 0.055, 1.055 * 0.5 ** (1 / 2.4) - 0.055, 1.0]
    np.testing.assert_allclose(enc, expected, rtol=1e-6, atol=1e-7)
    dec = metrics.srgb_decode(np.array([0.04045, 0.5]))
    np.testing.assert_allclose(dec, [0.04045 / 12.92, ((0.5 + 0.055) / 1.055) ** 2.4], rtol=1e-6)
    grid = np.linspace(0, 1, 1001)
    np.testing.assert_allclose(metrics.srgb_decode(metrics.srgb_encode(grid)), grid, atol=2e-6)


def test_srgb_clips_out_of_range():
    np.testing.assert_array_equal(metrics.srgb_encode([-0.5, 1.5]), [0.0, 1.0])


# ---------------------------------------------------------------- PSNR / SSIM


@pytest.mark.parametrize("shape", [(40, 50, 3), (40, 50)])
def test_psnr_matches_skimage(shape):
    a, b = _pair(shape)
    ours = metrics.psnr(a, b)
    ref = skm.peak_signal_noise_ratio(a, b, data_range=1.0)
    assert abs(ours - ref) < 1e-4
    ours_c = metrics.psnr(a, b, crop=5, data_range=2.0)
    ref_c = skm.peak_signal_noise_ratio(a[5:-5, 5:-5], b[5:-5, 5:-5], data_range=2.0)
    assert abs(ours_c - ref_c) < 1e-4


def test_psnr_mask_and_identical():
    a, b = _pair((30, 30, 3))
    mask = np.zeros((30, 30), bool)
    mask[5:20, 10:25] = True
    mse = np.mean((a[mask] - b[mask]) ** 2)
    assert metrics.psnr(a, b, mask=mask) == pytest.approx(10 * np.log10(1 / mse), abs=1e-9)
    cropped = mask[3:-3, 3:-3]
    mse_c = np.mean((a[3:-3, 3:-3][cropped] - b[3:-3, 3:-3][cropped]) ** 2)
    assert metrics.psnr(a, b, mask=mask, crop=3) == pytest.approx(10 * np.log10(1 / mse_c), abs=1e-9)
    assert metrics.psnr(a, a) == float("inf")
    with pytest.raises(InputError):
        metrics.psnr(a, b, mask=np.zeros((30, 30), bool))
    with pytest.raises(InputError):
        metrics.psnr(a, b[:-1])


@pytest.mark.parametrize("crop", [0, 4])
def test_ssim_matches_skimage_rgb(crop):
    a, b = _pair((48, 64, 3), seed=1)
    ours = metrics.ssim(a, b, crop=crop)
    sl = slice(crop, -crop) if crop else slice(None)
    ref = skm.structural_similarity(
        a[sl, sl],
        b[sl, sl],
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )
    assert abs(ours - ref) < 1e-4
    assert 0.2 < ours < 0.99  # the pair is neither equal nor unrelated


def test_ssim_matches_skimage_gray_and_is_one_for_equal_images():
    a, b = _pair((40, 40), seed=2)
    ref = skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert abs(metrics.ssim(a, b) - ref) < 1e-4
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- depth, texture


def test_depth_mae():
    est = np.array([[0.0, 1.0], [2.0, 3.5]])
    true = np.array([[0.5, 1.0], [1.0, 3.0]])
    assert metrics.depth_mae(est, true) == pytest.approx((0.5 + 0 + 1 + 0.5) / 4)
    mask = np.array([[True, False], [False, True]])
    assert metrics.depth_mae(est, true, mask=mask) == pytest.approx(0.5)
    with pytest.raises(InputError):
        metrics.depth_mae(est, true, mask=mask[:1])


def test_textured_mask():
    flat = np.full((32, 32, 3), 0.3)
    assert not metrics.textured_mask(flat).any()
    checker = np.indices((32, 32)).sum(0) % 2 * 0.8 + 0.1
    img = np.repeat(checker[..., None], 3, 2)
    img[:, 16:] = 0.3  # right half flat
    mask = metrics.textured_mask(img, radius=2)
    assert mask[:, :12].all()
    assert not mask[:, 20:].any()


# ---------------------------------------------------------------- baselines


def test_naive_fusion_picks_the_frame_with_the_largest_laplacian():
    a = np.zeros((5, 5))
    b = np.zeros((5, 5))
    a[2, 1] = 1.0
    b[2, 3] = 1.0
    # |Laplacian| of a is 4 at (2,1), 1 around it; of b likewise around (2,3);
    # at (2,2) both are 1: the tie goes to the first frame. Copying pixels gives a + b.
    np.testing.assert_array_equal(metrics.naive_fusion([a, b]), a + b)


def test_naive_fusion_copies_whole_pixels_of_colour_frames():
    rng = np.random.default_rng(0)
    texture = rng.random((8, 8))
    f0 = np.zeros((8, 8, 3), np.float32)
    f1 = np.zeros((8, 8, 3), np.float32)
    f0[:, :3] = texture[:, :3, None] * [1.0, 0.5, 0.25]  # sharp on the left, flat elsewhere
    f1[:, 5:] = texture[:, 5:, None] * [0.25, 0.5, 1.0]  # sharp on the right
    out = metrics.naive_fusion([f0, f1])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :2], f0[:, :2])
    np.testing.assert_array_equal(out[:, 6:], f1[:, 6:])


def test_mean_fusion():
    frames = [np.full((4, 6, 3), v, np.float32) for v in (0.0, 0.25, 1.0)]
    out = metrics.mean_fusion(frames)
    assert out.dtype == np.float32 and out.shape == (4, 6, 3)
    np.testing.assert_allclose(out, 1.25 / 3, rtol=1e-7)


def test_oracle_and_best_pick_bounds():
    truth = np.full((4, 5, 3), 0.5, np.float32)
    frames = [np.full((4, 5, 3), v, np.float32) for v in (0.1, 0.45, 0.9)]
    depth = np.zeros((4, 5), np.float32)
    depth[:, 3:] = 1.6  # rounds to frame 2
    o = metrics.oracle_fusion(frames, depth)
    np.testing.assert_array_equal(o[:, :3], np.float32(0.1))
    np.testing.assert_array_equal(o[:, 3:], np.float32(0.9))
    np.testing.assert_array_equal(metrics.best_pick_fusion(frames, truth), np.float32(0.45))
    frames[2][1, 1] = 0.5  # nearer still at one pixel
    b = metrics.best_pick_fusion(frames, truth)
    assert b[1, 1, 0] == np.float32(0.5) and b[0, 0, 0] == np.float32(0.45)


def test_tone_error_in_levels_of_255():
    rng = np.random.default_rng(1)
    frame0 = rng.uniform(0.2, 0.3, (40, 50, 3)).astype(np.float32)
    frame1 = (frame0 * 1.5).astype(np.float32)
    depth = np.zeros((40, 50), np.float32)
    mask = np.ones((40, 50), bool)
    assert metrics.tone_error(frame0, [frame0, frame1], depth, mask) == 0.0
    err = metrics.tone_error(frame1, [frame0, frame1], depth, mask)
    want = np.abs(metrics.srgb_encode(frame1).mean() - metrics.srgb_encode(frame0).mean()) * 255
    assert abs(err - want) < 0.05 * want
    depth[:] = 1.0  # the depth map names frame 1: no error
    assert metrics.tone_error(frame1, [frame0, frame1], depth, mask) < 1e-9
    with pytest.raises(InputError, match="no pixels"):
        metrics.tone_error(frame1, [frame0, frame1], depth, ~mask)


def test_sharpest_frame_names_the_sharp_frame_and_is_unsure_where_flat():
    rng = np.random.default_rng(3)
    sharp = rng.uniform(0.1, 0.6, (48, 112, 3))
    sharp[:, 32:] = 0.3  # flat right of column 32: no frame is sharper there
    blurred = ndimage.gaussian_filter(sharp, (2.0, 2.0, 0))
    index, conf = metrics.sharpest_frame([blurred, sharp, blurred])
    assert index.shape == conf.shape == (48, 112) and index.dtype == conf.dtype == np.float32
    assert (index[:, :20] == 1).all()
    assert (conf[:, :20] > 0.5).all()  # (1 - 1/3) of the energy above the mean at most: 0.67
    assert (conf[:, 80:] == 0).all()  # 8 sigma from the texture
    index, _ = metrics.sharpest_frame([sharp, blurred])  # order does not matter
    assert (index[:, :20] == 0).all()


def test_sharpest_frame_follows_the_true_depth_of_a_synthetic_stack():
    from gpustack import synth

    st = synth.make_stack(scene="astronaut", depth="slope", n_frames=6, shape=(96, 128), seed=2)
    index, conf = metrics.sharpest_frame(st.frames)
    sure = (conf >= 0.3) & metrics.textured_mask(st.truth)
    sure[:12], sure[-12:], sure[:, :12], sure[:, -12:] = False, False, False, False
    assert sure.mean() > 0.3
    # synth's depth is the index of the frame in focus there (0 .. n - 1)
    assert np.abs(index - st.depth)[sure].mean() < 0.5


def test_depth_correlation():
    d = np.arange(30, dtype=np.float32).reshape(5, 6)
    assert metrics.depth_correlation(d * 2 + 1, d) == pytest.approx(1.0)
    assert metrics.depth_correlation(-d, d) == pytest.approx(-1.0)
