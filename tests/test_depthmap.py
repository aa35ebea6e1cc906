"""The depth smoothing and the depthmap method against the NumPy oracle, and their behaviour."""

import numpy as np
import pytest

import gpustack
import reference as ref
from gpustack.backends.cpu import CpuBackend
from gpustack.stages.depthmap import blend_params, smooth_depth

F = np.float32
be = CpuBackend()


@pytest.mark.parametrize("r", [1, 2, 5])
def test_smooth_depth_matches_reference(r):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0, 9, (31, 45)).astype(F)
    conf = rng.uniform(0, 1, (31, 45)).astype(F)
    conf[:5, :5] = 0  # a corner with no weight around keeps some raw depth
    out, den, area = smooth_depth(be, depth, conf, r)
    rout, rden = ref.smooth_depth(depth, conf, r)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(den, rden)
    assert area == (2 * r + 1) ** 4


def test_smooth_depth_keeps_confident_constant_depth():
    depth = np.full((20, 30), 3.0, F)
    conf = np.random.default_rng(1).uniform(0.1, 1, (20, 30)).astype(F)
    out, _, _ = smooth_depth(be, depth, conf, 3)
    np.testing.assert_allclose(out, 3.0, rtol=1e-6)


def test_depthmap_stack_matches_reference():
    rng = np.random.default_rng(2)
    frames = [rng.uniform(0, 1, (40, 56, 3)).astype(F) for _ in range(4)]
    opts = dict(backend="cpu", levels=3, depth_smooth=2, contrast_threshold=0.2, align="none", brightness=False)
    pyr = gpustack.stack(frames, method="pyramid", **opts)
    dm = gpustack.stack(frames, method="depthmap", **opts)
    np.testing.assert_array_equal(pyr.depth, dm.depth)
    planar = [np.ascontiguousarray(np.moveaxis(f, -1, 0)) for f in frames]
    _, den = ref.smooth_depth(dm.depth_raw, dm.confidence, 2)
    lo, inv_width = blend_params(0.2, float(5 ** 4))
    expected = ref.depthmap_fusion(planar, dm.depth, np.ascontiguousarray(np.moveaxis(pyr.linear, -1, 0)), den,
                                   lo, inv_width)
    np.testing.assert_array_equal(np.moveaxis(dm.linear, -1, 0), expected)


def test_depthmap_takes_pixels_from_the_named_frame():
    """Two frames, each sharp on one half: the depthmap method copies each half from its sharp frame."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    truth = rng.uniform(0.1, 0.9, (80, 96)).astype(F)
    blur = gaussian_filter(truth, 2.5).astype(F)
    a = np.where(np.arange(96) < 48, truth, blur).astype(F)
    b = np.where(np.arange(96) < 48, blur, truth).astype(F)
    res = gpustack.stack([a, b], backend="cpu", method="depthmap", linear=True, align="none", brightness=False)
    np.testing.assert_allclose(res.linear[10:-10, 6:36], truth[10:-10, 6:36], atol=1e-5)
    np.testing.assert_allclose(res.linear[10:-10, 60:90], truth[10:-10, 60:90], atol=1e-5)


def test_depthmap_needs_rereadable_input():
    frames = (np.zeros((16, 16), F) for _ in range(3))
    with pytest.raises(gpustack.InputError, match="twice"):
        gpustack.stack(frames, method="depthmap")


def test_z_step_scales_depth_to_microns():
    rng = np.random.default_rng(4)
    frames = [rng.uniform(0, 1, (32, 32)).astype(F) for _ in range(3)]
    a = gpustack.stack(frames, backend="cpu", align="none")
    b = gpustack.stack(frames, backend="cpu", z_step=2.5, align="none")
    np.testing.assert_allclose(b.depth, a.depth * F(2.5))
