"""Each Numba kernel against the plain-NumPy oracle in tests/reference.py, bit for bit."""

import dataclasses

import cuda_cases
import numpy as np
import pytest

import reference as ref
from gpustack.backends.cpu import CpuBackend
from gpustack.color import decode_lut, encode_lut
from gpustack.stages import soft

be = CpuBackend()
F = np.float32
SHAPES = [(1, 2, 2), (3, 5, 7), (3, 37, 53), (1, 64, 33)]


def rand(shape, seed=0, lo=-1.0, hi=1.0):
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(F)


@pytest.mark.parametrize("value", [0.0, -0.0, 1.5, np.nan, -np.inf, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
def test_full_is_numpys_full(value, dtype):
    """The state's planes start as np.full's bits (0 from zeroed pages; -0.0 keeps its sign)."""
    if dtype == np.uint16 and not (isinstance(value, int) or value == 1.5):
        return
    got = be.full((3, 5, 7), value, dtype)
    want = np.full((3, 5, 7), value, dtype)
    assert got.dtype == want.dtype and got.shape == want.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("shape", SHAPES[1:])
def test_pyramid_reduce_matches_reference(shape):
    x = rand(shape)
    c, h, w = shape
    out = np.empty((c, (h + 1) // 2, (w + 1) // 2), F)
    be.pyramid_reduce(x, out)
    np.testing.assert_array_equal(out, ref.reduce(x))


@pytest.mark.parametrize("shape", SHAPES)
def test_pyramid_expand_sub_add_match_reference(shape):
    c, h, w = shape
    fine = rand(shape, 1)
    coarse = rand((c, (h + 1) // 2, (w + 1) // 2), 2)
    lap = fine.copy()
    be.pyramid_expand_sub(lap, coarse)
    np.testing.assert_array_equal(lap, fine - ref.expand(coarse, h, w))
    back = lap.copy()
    be.pyramid_expand_add(back, coarse)
    np.testing.assert_array_equal(back, lap + ref.expand(coarse, h, w))


def test_pyramid_expand_of_constant_is_constant():
    coarse = np.full((1, 9, 12), 0.7, F)
    lap = np.zeros((1, 17, 24), F)
    be.pyramid_expand_add(lap, coarse)
    np.testing.assert_allclose(lap, 0.7, atol=1e-6)


@pytest.mark.parametrize("r", [0, 1, 2, 5])
@pytest.mark.parametrize("shape", [(4, 4), (17, 31), (40, 3)])
def test_filter_box_matches_reference(shape, r):
    x = rand(shape, 3)
    out = np.empty_like(x)
    be.filter_box_rows(x, out, r)
    np.testing.assert_array_equal(out, ref.box_rows(x, r))
    be.filter_box_cols(x, out, r)
    np.testing.assert_array_equal(out, ref.box_cols(x, r))


@pytest.mark.parametrize("block", [1, 3, 8])
@pytest.mark.parametrize("shape", [(3, 37, 53), (1, 64, 33), (2, 71, 9)])
def test_numpy_ops_blocks_and_chunks_change_no_bit(monkeypatch, shape, block):
    """The ops written in NumPy with blocks of rows (``backends.cpu``: the collapse, the column sums)
    work a block at a time on row chunks spread over threads: whatever the block and the chunks,
    the oracle's bits (-0.0 included)."""
    from gpustack.backends.cpu import _threads, filter, pyramid

    monkeypatch.setattr(pyramid, "COLLAPSE_ROWS", block)
    monkeypatch.setattr(filter, "COL_ROWS", block)
    monkeypatch.setattr(_threads, "MIN_CHUNK", 16)  # several chunks
    c, h, w = shape
    fine = rand(shape, 11)
    coarse = rand((c, (h + 1) // 2, (w + 1) // 2), 12)
    fine[:, ::7, ::5] = -0.0
    coarse[:, ::3] = -0.0
    back = fine.copy()
    be.pyramid_expand_add(back, coarse)
    cuda_cases.assert_bits_equal(back, fine + ref.expand(coarse, h, w))
    for r in (0, 2, 5):
        out = np.empty((h, w), F)
        be.filter_box_cols(fine[0], out, r)
        cuda_cases.assert_bits_equal(out, ref.box_cols(fine[0], r))


def test_fuse_select_takes_higher_energy_only():
    lap_a, lap_b = rand((3, 23, 29), 4), rand((3, 23, 29), 5)
    best = np.zeros_like(lap_a)
    best_e = np.full((23, 29), -1.0, F)
    q = np.empty((23, 29), F)
    rowbox = np.empty_like(q)
    for lap in (lap_a, lap_b):
        be.fuse_sqsum(lap, q)
        np.testing.assert_array_equal(q, ref.sqsum(lap))
        be.filter_box_rows(q, rowbox, 2)
        be.fuse_select(lap, rowbox, best, best_e, 2)
    ea, eb = ref.energy(lap_a, 2), ref.energy(lap_b, 2)
    np.testing.assert_array_equal(best_e, np.maximum(ea, eb))
    np.testing.assert_array_equal(best, np.where((eb > ea)[None], lap_b, lap_a))


@pytest.mark.parametrize("dtype,transfer", [(np.uint8, "srgb"), (np.uint16, "srgb"), (np.uint16, "linear")])
def test_convert_lut_matches_reference(dtype, transfer):
    rng = np.random.default_rng(6)
    frame = rng.integers(0, np.iinfo(dtype).max + 1, (13, 17, 3)).astype(dtype)
    lut = decode_lut(dtype, transfer)
    out = np.empty((3, 13, 17), F)
    be.convert(frame, lut, out)
    np.testing.assert_array_equal(out, ref.convert(frame, lut))
    gains = np.array([0.97, 1.0, 1.031], F)
    be.convert(frame, lut, out, gains)
    np.testing.assert_array_equal(out, ref.convert(frame, lut, gains))


def test_gained_convert_equals_an_identity_warp():
    """A frame that gets a brightness gain but does not move is converted, not warped: the same values."""
    rng = np.random.default_rng(8)
    frame = rng.integers(0, 65536, (11, 14, 3)).astype(np.uint16)
    lut = decode_lut(np.uint16, "srgb")
    gains = np.array([1.013, 0.987, 1.0], F)
    a, b = np.empty((3, 11, 14), F), np.empty((3, 11, 14), F)
    be.convert(frame, lut, a, gains)
    be.warp(frame, lut, np.eye(2, 3), gains, b)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="one per channel"):
        be.convert(frame, lut, a, gains[:2])


def test_convert_float_is_transpose():
    frame = rand((9, 8, 1), 7)
    out = np.empty((1, 9, 8), F)
    be.convert(frame, None, out)
    np.testing.assert_array_equal(out[0], frame[:, :, 0])


@pytest.mark.parametrize("bits,transfer", [(16, "srgb"), (8, "srgb"), (16, "linear")])
def test_encode_matches_reference(bits, transfer):
    x = rand((3, 11, 13), 8, -0.2, 1.2)
    x[0, 0, 0] = np.nan
    x[0, 0, 1] = np.inf
    x[0, 0, 2] = -np.inf
    lut = encode_lut(bits, transfer)
    out = np.empty((11, 13, 3), lut.dtype)
    be.encode(x, lut, out)
    np.testing.assert_array_equal(out, ref.encode(x, lut))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == lut[-1] and out[0, 2, 0] == 0


def test_encode_srgb_is_accurate():
    """The table encoding is within half a code of the exact sRGB curve (plus the table step)."""
    from gpustack.color import linear_to_srgb

    x = np.random.default_rng(9).uniform(0, 1, (1, 64, 64)).astype(F)
    out = np.empty((64, 64, 1), np.uint16)
    be.encode(x, encode_lut(16, "srgb"), out)
    exact = linear_to_srgb(x[0].astype(np.float64)) * 65535
    assert np.abs(out[:, :, 0] - exact).max() <= 0.5 + 0.8


def test_depth_track_column_sums_match_reference():
    from gpustack.stages.fuse import DepthState

    q = [rand((23, 17), s, 0.0, 1.0) for s in range(4)]
    ds = DepthState(*(np.full((23, 17), v, F) for v in (-1.0, -1.0, 0.0, -1.0, -1.0, 0.0)))
    rowbox = np.empty((23, 17), F)
    for k, qk in enumerate(q):
        be.filter_box_rows(qk, rowbox, 3)
        be.depth_track(rowbox, ds, 3, k, 1 if k else 0)
    scores = np.stack([ref.box_cols(ref.box_rows(qk, 3), 3) for qk in q])
    np.testing.assert_array_equal(ds.best_s, scores.max(0))
    np.testing.assert_array_equal(ds.best_k, np.argmax(scores, 0).astype(F))


def test_depth_finalize_parabola_and_confidence():
    n = 5
    scores = rand((n, 19, 21), 10, 0.0, 1.0)
    # a pixel with a known parabola: scores 1, 4, 3 around frame 2 -> vertex at 2 + 0.5 * (1 - 3) / (1 - 8 + 3) = 2.25
    scores[:, 0, 0] = [0.0, 1.0, 4.0, 3.0, 0.0]
    from gpustack.stages.fuse import DepthState

    ds = DepthState(*(np.full((19, 21), v, F) for v in (-1.0, -1.0, 0.0, -1.0, -1.0, 0.0)))
    for k in range(n):
        be.depth_track(scores[k], ds, 0, k, 1 if k else 0)  # rowbox with r = 0: the score itself
    depth, conf = np.empty((19, 21), F), np.empty((19, 21), F)
    be.depth_finalize(ds.best_s, ds.best_k, ds.prev_of_best, ds.next_of_best, ds.sum_s, F(n), depth, conf)
    rdepth, rconf = ref.depth_from_scores(scores)
    np.testing.assert_array_equal(depth, rdepth)
    np.testing.assert_array_equal(conf, rconf)
    assert depth[0, 0] == pytest.approx(2.25)
    assert conf[0, 0] == pytest.approx((4 - 8 / 5) / 4)


@pytest.mark.parametrize("shape", SHAPES)
def test_pyramid_laplacian_matches_reference_and_expand_sub(shape):
    c, h, w = shape
    fine = rand(shape, 1)
    coarse = rand((c, (h + 1) // 2, (w + 1) // 2), 2)
    out = np.empty_like(fine)
    be.pyramid_laplacian(fine, coarse, out)
    np.testing.assert_array_equal(out, ref.laplacian(fine, coarse))
    in_place = fine.copy()
    be.pyramid_expand_sub(in_place, coarse)
    np.testing.assert_array_equal(out, in_place)


def _unfused_score(fine, coarse, coarse_score, r):
    """The score's level as the separate ops compute it, through full-size intermediates:
    pyramid_laplacian, fuse_sqsum, filter_box_rows, filter_box_cols, pyramid_expand_add."""
    c, h, w = fine.shape
    lap, q, rowbox, out = np.empty_like(fine), np.empty((h, w), F), np.empty((h, w), F), np.empty((h, w), F)
    be.pyramid_laplacian(fine, coarse, lap)
    be.fuse_sqsum(lap, q)
    be.filter_box_rows(q, rowbox, r)
    be.filter_box_cols(rowbox, out, r)
    if coarse_score is not None:
        be.pyramid_expand_add(out[None], coarse_score[None])
    return out


@pytest.mark.parametrize("r", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 2), (1, 2, 3), (3, 5, 7), (1, 37, 53), (5, 9, 6), (3, 130, 257)])
def test_soft_score_equals_the_unfused_sequence(shape, r):
    """soft_score in one pass gives the bits of the five ops it replaces (odd sizes, borders, windows
    wider than the plane), with and without the next level's score, and on a focus channel's view."""
    c, h, w = shape
    fine = cuda_cases.rand(np.random.default_rng(7), shape)  # tiny values too: denormal squares
    coarse = rand((c, (h + 1) // 2, (w + 1) // 2), 8)
    for coarse_score in (None, rand(coarse.shape[1:], 9, 0.0, 3.0)):
        out = np.full((h, w), np.nan, F)
        be.soft_score(fine, coarse, coarse_score, r, out)
        cuda_cases.assert_bits_equal(out, _unfused_score(fine, coarse, coarse_score, r))
    ch = c - 1  # a focus channel: a (1, H, W) view of a (C, H, W) level
    out = np.full((h, w), np.nan, F)
    be.soft_score(fine[ch:ch + 1], coarse[ch:ch + 1], None, r, out)
    cuda_cases.assert_bits_equal(out, _unfused_score(fine[ch:ch + 1].copy(), coarse[ch:ch + 1].copy(), None, r))


def test_soft_score_checks_its_shapes():
    fine, coarse, out = rand((3, 9, 8)), rand((3, 5, 4)), np.empty((9, 8), F)
    with pytest.raises(ValueError, match="coarse"):
        be.soft_score(fine, rand((3, 4, 4)), None, 1, out)
    with pytest.raises(ValueError, match="coarse_score"):
        be.soft_score(fine, coarse, rand((4, 4)), 1, out)
    with pytest.raises(ValueError, match="r must be"):
        be.soft_score(fine, coarse, None, -1, out)


@pytest.mark.parametrize("name", ["soft_fold_first", "soft_fold", "soft_fold_floor", "soft_fold_high_floor",
                                  "soft_fold_focus", "soft_fold_finest"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 5, 7), (1, 37, 53), (5, 9, 6), (3, 64, 33)])
@pytest.mark.parametrize("r", [0, 1, 2])
def test_soft_fold_equals_the_unfused_score_and_fold(name, shape, r):
    """soft_fold scores the finest level and folds it in one pass, making the Laplacian level itself:
    the score is the unfused ops' (soft_score's sequence, on the focus channel), and the state the
    reference fold's with the level pyramid_laplacian stores (every branch of the image's weights and
    of the depth's: restart, rescale, add, cut-off, ties, NaN). A state without the maps' sums gets
    the same score and the same image sums."""
    case = cuda_cases.CASES[name](np.random.default_rng(11), shape, r)
    frame, coarse, coarse_score, focus, r, score, state, k, floor, dshift, power, dpower, rmin = case.args
    lap = np.empty_like(frame)
    be.pyramid_laplacian(frame, coarse, lap)
    sel = slice(None) if focus is None else slice(focus, focus + 1)
    want_score = _unfused_score(frame[sel].copy(), coarse[sel].copy(), coarse_score, r)
    st = soft.SoftState(*(a.copy() for a in dataclasses.astuple(state)))
    want = ref.soft_fold_step(frame, lap, want_score, dataclasses.astuple(st), k, floor, dshift, power, dpower, rmin)
    be.soft_fold(frame, coarse, coarse_score, focus, r, score, st, k, floor, dshift, power, dpower, rmin)
    cuda_cases.assert_bits_equal(score, want_score)
    for got, expected in zip(dataclasses.astuple(st), want, strict=True):
        cuda_cases.assert_bits_equal(got, expected)
    image_only = dataclasses.replace(state, **{f: getattr(state, f).copy() for f in ("max_s", "den", "acc", "acc_lap")},
                                     depth_den=None, depth_num=None, sum_s=None)
    score[:] = np.nan
    be.soft_fold(frame, coarse, coarse_score, focus, r, score, image_only, k, floor, dshift, power, dpower, rmin)
    cuda_cases.assert_bits_equal(score, want_score)
    for f in ("max_s", "den", "acc", "acc_lap"):
        cuda_cases.assert_bits_equal(getattr(image_only, f), getattr(st, f))
    assert image_only.depth_den is image_only.depth_num is image_only.sum_s is None


def test_soft_fold_and_finish_refuse_a_state_with_some_of_the_maps_sums():
    case = cuda_cases.CASES["soft_fold"](np.random.default_rng(3), (3, 9, 8), 1)
    frame, coarse, coarse_score, focus, r, score, state, *rest = case.args
    state.sum_s = None
    with pytest.raises(ValueError, match="all None"):
        be.soft_fold(frame, coarse, coarse_score, focus, r, score, state, *rest)
    with pytest.raises(ValueError, match="all None"):
        be.soft_finish(state, F(3), None, None)
    state.depth_den = state.depth_num = None
    with pytest.raises(ValueError, match="all None"):
        be.soft_finish(state, F(3), np.empty((9, 8), F), np.empty((9, 8), F))
