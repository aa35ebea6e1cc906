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


@pytest.mark.parametrize("method", ["soft", "pyramid"])
def test_method_beats_naive_and_mean_by_3db(case, method):
    st, truth = case
    res = gpustack.stack(st.frames, backend="cpu", method=method)
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


CAMERA_CASES = [("astronaut", "mixed", 4000.0, 0.001), ("coffee", "steps", 20000.0, 0.0005)]


@pytest.fixture(scope="module", params=CAMERA_CASES, ids=[f"{c[0]}/{c[1]}" for c in CAMERA_CASES])
def camera_case(request):
    """A camera-like stack (rendered at 2x and averaged into pixels, lens blur 0.7 px), ISO 800-like
    and ISO 100-like noise, with occlusion edges, and each method's PSNR whole / edge band (7 px) /
    interior against the truth."""
    scene, depth, gain, read_noise = request.param
    st = synth.make_stack(scene=scene, depth=depth, n_frames=10, shape=(192, 256), seed=1, supersample=2,
                          optics=0.7, band=7, gain=gain, read_noise=read_noise)
    truth = metrics.srgb_encode(st.truth)
    scores = {}
    for method in ("soft", "pyramid", "depthmap"):
        res = gpustack.stack(st.frames, backend="cpu", method=method, align="none")
        img = metrics.srgb_encode(np.clip(res.linear, 0, 1))
        scores[method] = [metrics.psnr(img, truth, mask=m, crop=12) for m in (None, st.edges, ~st.edges)]
    return scores


def test_default_is_cleaner_at_occlusion_edges_than_both_older_methods(camera_case):
    """The issue's targets on camera-like stacks: >= 1 dB above both older methods in the edge band
    (measured +1.6 and +3.4 dB), above them in the whole image, not below depthmap in the interior
    (measured +1.6 and +0.35 dB)."""
    soft, pyr, dm = camera_case["soft"], camera_case["pyramid"], camera_case["depthmap"]
    assert soft[1] >= max(pyr[1], dm[1]) + 1.0, camera_case
    assert soft[0] >= max(pyr[0], dm[0]) + 1.5, camera_case
    assert soft[2] >= dm[2], camera_case


def test_default_depth_map_follows_flat_steps_better_than_the_finest_level_measure():
    """A clean camera-like stack of flat steps with untextured patches (coffee/steps, no noise): the
    soft depth map correlates with the true depth better than the pyramid's finest-level measure
    (0.927 against 0.853). With three score levels it did not (0.808): in the flat patches every
    frame ties and the weighted index falls to the middle of the stack; the fourth level (about
    24 px) reaches the texture around them and names its frame."""
    st = synth.make_stack(scene="coffee", depth="steps", n_frames=12, shape=(256, 320), seed=1, supersample=2,
                          optics=0.7, noise=False)
    corr = {m: metrics.depth_correlation(gpustack.stack(st.frames, backend="cpu", method=m, align="none").depth,
                                         st.depth, crop=12) for m in ("soft", "pyramid")}
    assert corr["soft"] >= corr["pyramid"] + 0.03, corr


def test_depth_map_of_a_noisy_stack_keeps_to_the_sharpest_frames(monkeypatch):
    """A camera-like stack at ISO 6400-like noise (immunohistochemistry, flat steps and slopes): the
    image's weights, whose noise floor lets the noisy frames share a pixel, spread the weighted frame
    index (measured MAE 0.625 frames, correlation 0.949, below the pyramid's finest-level measure,
    0.963); the depth's own weights, a quarter of the floor (``soft.DEPTH_FLOOR``), keep it on the
    sharpest frames (measured 0.321 frames, 0.968)."""
    from gpustack.stages import soft

    st = synth.make_stack(scene="immunohistochemistry", depth="mixed", n_frames=12, shape=(192, 256), seed=2,
                          supersample=2, optics=0.7, gain=500.0, read_noise=0.004)
    textured = metrics.textured_mask(st.truth)

    def depth(method="soft"):
        res = gpustack.stack(st.frames, backend="cpu", method=method, align="none")
        return (metrics.depth_correlation(res.depth, st.depth, crop=12),
                metrics.depth_mae(res.depth, st.depth, mask=textured, crop=12))

    corr, mae = depth()
    pyr_corr, _ = depth("pyramid")
    assert corr >= pyr_corr and corr > 0.96, (corr, pyr_corr)
    assert mae < 0.4, mae
    # the image's weights as the depth's (the depth map before it had its own): measurably worse
    monkeypatch.setattr(soft, "DEPTH_FLOOR", 1.0)
    monkeypatch.setattr(soft, "DEPTH_POWER", soft.POWER)
    old_corr, old_mae = depth()
    assert old_mae > 0.55 and old_corr < pyr_corr, (old_mae, old_corr)
