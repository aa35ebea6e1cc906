"""End-to-end quality on synthetic stacks with known truth (the bounds of the README's Quality section)."""

import numpy as np
import pytest

import gpustack
from gpustack import metrics, synth

CROP = 16
CASES = [("astronaut", "mixed"), ("coffee", "steps"), ("immunohistochemistry", "mixed")]


@pytest.fixture(scope="module", params=CASES, ids=["/".join(c) for c in CASES])
def case(request):
    scene, depth = request.param
    st = synth.make_stack(scene=scene, depth=depth, n_frames=12, shape=(256, 320), seed=1)
    return st, metrics.srgb_encode(st.truth)


def _psnr(img, truth):
    return metrics.psnr(metrics.srgb_encode(np.clip(img, 0, 1)), truth, crop=CROP)


def _in(res, a):
    """``a`` (a full-canvas image) cut to the part of the canvas ``res`` kept: the default run aligns
    (similarity), and where the estimator's residual on these motionless stacks passes the snap
    threshold the result is cropped by a pixel or two."""
    if res.crop is None:
        return a
    r0, r1, c0, c1 = res.crop
    return a[r0:r1, c0:c1]


def _psnr_res(res, truth):
    return _psnr(res.linear, _in(res, truth))


def test_pyramid_beats_naive_and_mean_by_3db(case):
    st, truth = case
    res = gpustack.stack(st.frames, backend="cpu")
    ours = _psnr_res(res, truth)
    naive = _psnr(_in(res, metrics.naive_fusion(st.frames)), _in(res, truth))
    mean = _psnr(_in(res, metrics.mean_fusion(st.frames)), _in(res, truth))
    assert ours >= naive + 3.0, (ours, naive)
    assert ours >= mean + 3.0, (ours, mean)


def test_depthmap_method_beats_naive_by_3db(case):
    st, truth = case
    res = gpustack.stack(st.frames, backend="cpu", method="depthmap")
    assert _psnr_res(res, truth) >= _psnr(_in(res, metrics.naive_fusion(st.frames)), _in(res, truth)) + 3.0


def test_depth_map_error_on_textured_areas(case):
    st, _ = case
    res = gpustack.stack(st.frames, backend="cpu")
    textured = _in(res, metrics.textured_mask(st.truth))
    assert textured[CROP:-CROP, CROP:-CROP].mean() > 0.2  # the bound is measured on a real share of pixels
    mae = metrics.depth_mae(res.depth, _in(res, st.depth), mask=textured, crop=CROP)
    assert mae <= 0.5, mae
    # sub-frame precision does help: rounding the depth to whole frames is worse
    assert mae < metrics.depth_mae(np.round(res.depth), _in(res, st.depth), mask=textured, crop=CROP)


def test_16bit_tiff_input_matches_float_input(case, tmp_path):
    """The same stack fed as sRGB 16-bit frames fuses to the same quality as float frames (to 0.1 dB)."""
    st, truth = case
    as_float = _psnr_res(gpustack.stack(st.frames, backend="cpu"), truth)
    as_u16 = _psnr_res(gpustack.stack(st.as_uint16(), backend="cpu"), truth)
    assert abs(as_float - as_u16) < 0.1, (as_float, as_u16)
