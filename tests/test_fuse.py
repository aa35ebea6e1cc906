"""The streaming pyramid fusion against the batch NumPy oracle, and its state's invariants."""

import numpy as np
import pytest

import gpustack
import reference as ref
from gpustack.stages.align import processing_order
from gpustack.stages.fuse import auto_levels, check_levels, level_shapes

F = np.float32


def _frames(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 1, shape).astype(F) for _ in range(n)]


@pytest.mark.parametrize("n,shape,levels,r,dr", [(3, (33, 47, 3), 3, 2, 4), (5, (40, 64, 1), 4, 1, 1),
                                                 (2, (16, 17, 3), 2, 0, 3)])
def test_stack_equals_batch_reference_bit_for_bit(n, shape, levels, r, dr):
    frames = _frames(n, shape)
    res = gpustack.stack(frames, backend="cpu", method="pyramid", levels=levels, energy_radius=r, depth_radius=dr,
                         depth_smooth=0, align="none", brightness=False)
    planar = [np.ascontiguousarray(np.moveaxis(f, -1, 0)) for f in frames]
    fused, depth, conf = ref.pyramid_fusion(planar, levels, r, dr, processing_order(n, n // 2))
    linear = res.linear if res.linear.ndim == 3 else res.linear[:, :, None]
    np.testing.assert_array_equal(np.moveaxis(linear, -1, 0), fused)
    np.testing.assert_array_equal(res.depth_raw, depth)
    np.testing.assert_array_equal(res.confidence, conf)
    assert res.image.dtype == np.uint16


def test_identical_frames_fuse_to_the_frame():
    """Every frame the same: the pyramid reconstructs it (to float rounding), in any number of levels."""
    frame = _frames(1, (64, 80, 3), seed=3)[0]
    res = gpustack.stack([frame] * 4, backend="cpu", method="pyramid", align="none")
    np.testing.assert_allclose(res.linear, frame, atol=2e-6)


def test_sharp_region_taken_from_the_sharp_frame():
    """Left half sharp in frame 0, right half sharp in frame 1: the fusion keeps both sharp halves."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(5)
    truth = rng.uniform(0.1, 0.9, (96, 128)).astype(F)
    blur = gaussian_filter(truth, 3).astype(F)
    a = np.where(np.arange(128) < 64, truth, blur).astype(F)
    b = np.where(np.arange(128) < 64, blur, truth).astype(F)
    res = gpustack.stack([a, b], backend="cpu", method="pyramid", linear=True, depth_smooth=0, align="none",
                         brightness=False)
    inner = np.s_[8:-8, 8:56], np.s_[8:-8, 72:120]
    for sl, k in zip(inner, (0, 1)):
        err = np.abs(res.linear[sl] - truth[sl]).mean()
        assert err < 0.02, err
        assert np.all(np.abs(res.depth_raw[sl] - k) < 0.5)
        assert np.abs(res.linear[sl] - blur[sl]).mean() > 5 * err


def test_level_shapes_and_auto_levels():
    assert level_shapes(7, 10, 3) == [(7, 10), (4, 5), (2, 3)]
    assert auto_levels(3000, 4000) == 8  # 3000 -> 24 px at the coarsest
    h, w = level_shapes(3000, 4000, 8)[-1]
    assert min(h, w) >= 16 and min((h + 1) // 2, (w + 1) // 2) < 16
    assert auto_levels(20, 20) == 2  # never fewer than one Laplacian level plus the coarsest


def test_too_many_levels_is_an_input_error():
    with pytest.raises(gpustack.InputError, match="at most 4"):
        check_levels(32, 32, 8)
    assert check_levels(32, 32, 4) == 4


def test_tiny_frames_are_an_input_error():
    with pytest.raises(gpustack.InputError, match="too small"):
        gpustack.stack([np.zeros((5, 40), F)] * 2, backend="cpu", align="none")
