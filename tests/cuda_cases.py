"""Random inputs for every backend op, shared by the CUDA parity tests.

``CASES[name](rng, shape, r)`` builds an ``OpCase``: the arguments of one backend
op (as ``CpuBackend`` takes them, NumPy) and which of them the op writes.
``run_op(be, case)`` runs it on any backend on fresh copies and returns the
written arrays as NumPy, so the same case compares the Numba op with the CUDA
kernel run through the g++ emulation (tests/test_kernels_cuda_emulated.py) and
on a GPU (tests/test_cuda_backend.py), bit for bit. The data reach the
branches: ties of the energies, missing depth neighbours, zero denominators,
NaN, infinities and the ends of the encoding range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import reference as ref

from gpustack.color import decode_lut, encode_lut
from gpustack.stages.fuse import DepthState
from gpustack.stages.soft import DEPTH_POWER, POWER, RMIN, SoftState, depth_shift

F = np.float32

# (C, H, W): tiny, degenerate, odd and middling; 5 and 8 channels (the most the gains take)
SHAPES = [(1, 1, 1), (1, 1, 2), (1, 2, 2), (3, 2, 2), (1, 3, 1), (3, 5, 7), (2, 16, 9), (3, 37, 53), (5, 9, 6),
          (8, 7, 5)]  # up to 8 channels: microscopy stacks
WINDOW_SHAPES = [(1, 1, 2), (3, 2, 2), (1, 3, 1), (2, 6, 11), (3, 23, 17)]
RADII = [0, 1, 2, 3, 4, 5]


@dataclass
class OpCase:
    op: str           # the backend method
    args: tuple       # its arguments: NumPy arrays and scalars, a state dataclass of arrays, None
    written: tuple    # positions in ``args`` of what the op writes


def run_op(be, case: OpCase) -> list[np.ndarray]:
    """Run ``case`` on backend ``be`` with fresh copies of its arrays; the written arrays, as NumPy."""

    def move(a):
        if isinstance(a, np.ndarray):
            return be.to_device(a.copy())
        if dataclasses.is_dataclass(a):
            return type(a)(*(move(getattr(a, f.name)) for f in dataclasses.fields(a)))
        return a

    args = tuple(move(a) for a in case.args)
    getattr(be, case.op)(*args)
    out = []
    for i in case.written:
        a = args[i]
        parts = [getattr(a, f.name) for f in dataclasses.fields(a)] if dataclasses.is_dataclass(a) else [a]
        out += [np.asarray(be.to_host(p)) for p in parts if p is not None]
    be.synchronize()
    return out


def assert_bits_equal(got, want):
    """Equal values, and equal bits for floats (so -0.0 != 0.0 and NaN payloads count)."""
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype
    if got.dtype.kind == "f":
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


TINY = np.array([1e-45, 1e-42, 1e-39, 1.1e-38, 1e-20, 3e-23], F)  # denormal, or squares/products denormal


def rand(rng, shape, lo=-1.0, hi=1.0):
    """Uniform float32 in [lo, hi); where the range holds 0, 3 % of the values are tiny
    (denormal, or squaring to a denormal), which a GPU that flushes denormals would zero."""
    a = rng.uniform(lo, hi, shape).astype(F)
    if lo <= 0.0 < hi and a.size:
        pick = rng.uniform(size=a.shape) < 0.03
        tiny = rng.choice(TINY, size=a.shape) * (rng.choice([-1, 1], size=a.shape) if lo < 0 else 1)
        a[pick] = tiny[pick].astype(F)
    return a


def empty(shape, dtype=F):
    """An output array filled with NaN (or all ones bits), so a sample the op skips shows."""
    return np.full(shape, np.nan, dtype) if np.dtype(dtype).kind == "f" else np.full(shape, -1).astype(dtype)


def _convert(dtype, transfer):
    def build(rng, shape, r):
        c, h, w = shape
        if dtype == np.float32:
            frame, lut = rand(rng, (h, w, c)), None
        else:
            frame = rng.integers(0, np.iinfo(dtype).max + 1, (h, w, c)).astype(dtype)
            frame.reshape(-1)[:2] = [0, np.iinfo(dtype).max][: frame.size]
            lut = decode_lut(dtype, transfer)
        gains = rand(rng, (c,), 0.9, 1.1)
        return OpCase("convert", (frame, lut, empty(shape), gains), (2,))

    return build


def _encode(bits, transfer):
    def build(rng, shape, r):
        c, h, w = shape
        src = rand(rng, shape, -0.2, 1.2)
        special = [np.nan, np.inf, -np.inf, 0.0, 1.0, -0.0, 1e-30, np.nextafter(F(1), F(0))]
        flat = src.reshape(-1)
        n = min(len(special), flat.size)
        flat[:n] = special[:n]
        lut = encode_lut(bits, transfer)
        return OpCase("encode", (src, lut, empty((h, w, c), lut.dtype)), (2,))

    return build


def _warp(dtype, kind):
    """A similarity warp with offsets that reach past the borders, or an exact identity; ``planar``:
    a (C, H, W) float32 source (warp_planar)."""

    def build(rng, shape, r):
        c, h, w = shape
        if kind == "planar":
            frame, lut = rand(rng, (c, h, w), 0.0, 1.0), None
        elif dtype == np.float32:
            frame, lut = rand(rng, (h, w, c), 0.0, 1.0), None
        else:
            frame = rng.integers(0, np.iinfo(dtype).max + 1, (h, w, c)).astype(dtype)
            lut = decode_lut(dtype, "srgb")
        if kind == "identity":
            affine = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            gains = np.ones(c, F)
        else:
            angle, scale = rng.uniform(-0.05, 0.05), rng.uniform(0.97, 1.03)
            shift = rng.uniform(-3.0, 3.0, 2)
            cs, sn = scale * np.cos(angle), scale * np.sin(angle)
            affine = np.round(np.array([[cs, -sn, shift[0]], [sn, cs, shift[1]]]) * 1024) / 1024
            gains = rand(rng, (c,), 0.9, 1.1)
        if kind == "planar":
            return OpCase("warp_planar", (frame, affine, gains, empty(shape)), (3,))
        return OpCase("warp", (frame, lut, affine, gains, empty(shape)), (4,))

    return build


def pyramid_reduce(rng, shape, r):
    c, h, w = shape
    return OpCase("pyramid_reduce", (rand(rng, shape), empty((c, (h + 1) // 2, (w + 1) // 2))), (1,))


def _expand(op):
    def build(rng, shape, r):
        c, h, w = shape
        return OpCase(op, (rand(rng, shape), rand(rng, (c, (h + 1) // 2, (w + 1) // 2))), (0,))

    return build


def fuse_sqsum(rng, shape, r):
    return OpCase("fuse_sqsum", (rand(rng, shape), empty(shape[1:])), (1,))


def _scores(rng, shape, r):
    """(rowbox, best) where ``best`` ties the column box sum of ``rowbox`` at a quarter of the pixels."""
    rowbox = rand(rng, shape[1:], 0.0, 1.0)
    energy = ref.box_cols(rowbox, r)
    best = rand(rng, shape[1:], 0.0, float(2 * r + 1))
    ties = rng.uniform(size=best.shape) < 0.25
    best[ties] = energy[ties]
    return rowbox, best


def fuse_select(rng, shape, r):
    rowbox, best_e = _scores(rng, shape, r)
    return OpCase("fuse_select", (rand(rng, shape), rowbox, rand(rng, shape), best_e, r), (2, 3))


def _depth_track(side):
    def build(rng, shape, r):
        return _depth_track_case(rng, shape, r, side)

    return build


def _depth_track_case(rng, shape, r, side):
    rowbox, best_s = _scores(rng, shape, r)
    plane = shape[1:]
    k = 3

    def maybe_missing(p):
        return np.where(rng.uniform(size=plane) < p, F(-1), rand(rng, plane, 0.0, 5.0)).astype(F)

    state = DepthState(best_s=best_s, prev_s=rand(rng, plane, 0.0, 5.0),
                       best_k=rng.integers(k - 2, k + 3, plane).astype(F),  # k - 1 and k + 1 often
                       prev_of_best=maybe_missing(0.3), next_of_best=maybe_missing(0.5),
                       sum_s=rand(rng, plane, 0.0, 20.0))
    return OpCase("depth_track", (rowbox, state, r, k, side), (1,))


def pyramid_laplacian(rng, shape, r):
    c, h, w = shape
    return OpCase("pyramid_laplacian", (rand(rng, shape), rand(rng, (c, (h + 1) // 2, (w + 1) // 2)), empty(shape)),
                  (2,))


def _soft_state(rng, shape, fresh, maps=True):
    """A soft-fusion state: all zeros (``fresh``: no frame folded yet), or one mid-stack, its best
    scores near the new scores (ties, new maxima, ratios each side of RMIN) and 0 at some pixels;
    without ``maps``, no depth sums nor score sum (None)."""
    c, h, w = shape
    if fresh:
        z = np.zeros((h, w), F)
        state = SoftState(z, z.copy(), z.copy(), z.copy(), z.copy(), np.zeros(shape, F), np.zeros(shape, F))
    else:
        max_s = rand(rng, (h, w), 0.0, 2.0)
        max_s[rng.uniform(size=(h, w)) < 0.1] = 0.0
        state = SoftState(max_s, rand(rng, (h, w), 1.0, 4.0), rand(rng, (h, w), 1.0, 3.0),
                          rand(rng, (h, w), 0.0, 30.0), rand(rng, (h, w), 0.0, 20.0), rand(rng, shape),
                          rand(rng, shape))
    if not maps:
        state.depth_den = state.depth_num = state.sum_s = None
    return state


def _soft_fold(fresh, floor, focus=None, with_coarse=True, maps=True):
    """A frame (NaN at 0.3 % of its samples), its next level and the next level's score; a state whose
    best scores sit where the frame's score (the reference's, ``ref.energy`` plus the expanded coarse
    score) reaches every branch: a new maximum (restart below RMIN, rescale above), ties
    (``score + floor == max_s``), ratios a hair each side of RMIN (the image's, and the depth weights'
    ``(s - dshift) / (max_s - dshift)``), a best score of 0, best scores below the depth's shift (a
    large ``floor``: ``max_s - dshift <= 0``), NaN. ``focus``: the score from that channel alone;
    ``maps=False``: a state without the depth map's sums."""

    def build(rng, shape, r):
        c, h, w = shape
        r = 1 if r is None else r
        half = ((h + 1) // 2, (w + 1) // 2)
        frame = rand(rng, shape)
        frame[rng.uniform(size=shape) < 0.003] = np.nan
        coarse = rand(rng, (c, *half))
        coarse_score = rand(rng, half, 0.0, 2.0) if with_coarse else None
        sel = slice(None) if focus is None else slice(focus, focus + 1)
        score = ref.energy(ref.laplacian(frame[sel], coarse[sel]), r)
        if with_coarse:
            score = (score + ref.expand(coarse_score[None], h, w)[0]).astype(F)
        s = (score + F(floor)).astype(F)
        dshift = depth_shift(floor)
        state = _soft_state(rng, shape, fresh, maps)
        if not fresh:
            pick = rng.uniform(size=s.shape)
            ties = pick < 0.15
            state.max_s[ties] = s[ties]
            below = (pick >= 0.15) & (pick < 0.3)  # below the best: weight cut-off
            side = rng.choice([np.nextafter(RMIN, F(1)), RMIN, np.nextafter(RMIN, F(0))], size=s.shape)
            state.max_s[below] = (s[below] / side[below]).astype(F)
            above = (pick >= 0.35) & (pick < 0.5)  # a new best: restart or rescale
            state.max_s[above] = (s[above] * side[above]).astype(F)
            t = (s - dshift).astype(F)  # the depth ratio a hair each side of RMIN: below the best, then above
            d_below = (pick >= 0.5) & (pick < 0.6)
            state.max_s[d_below] = ((t[d_below] / side[d_below]).astype(F) + dshift).astype(F)
            d_above = (pick >= 0.6) & (pick < 0.7)
            state.max_s[d_above] = ((t[d_above] * side[d_above]).astype(F) + dshift).astype(F)
        return OpCase("soft_fold", (frame, coarse, coarse_score, focus, r, empty((h, w)), state, 7, F(floor), dshift,
                                    POWER, DEPTH_POWER, RMIN), (5, 6))

    return build


def _soft_score(with_coarse):
    """A level's score from random Gaussian levels (tiny values among them: squares and their sums
    denormal), with or without the next level's score to add."""

    def build(rng, shape, r):
        c, h, w = shape
        half = ((h + 1) // 2, (w + 1) // 2)
        coarse_score = rand(rng, half, 0.0, 3.0) if with_coarse else None
        return OpCase("soft_score", (rand(rng, shape), rand(rng, (c, *half)), coarse_score, r, empty((h, w))), (4,))

    return build


def _soft_finish(maps):
    def build(rng, shape, r):
        state = _soft_state(rng, shape, False, maps)
        state.den[rng.uniform(size=state.den.shape) < 0.05] = 0.0  # 0 / 0 and x / 0
        if not maps:
            return OpCase("soft_finish", (state, F(9), None, None), (0,))
        state.depth_den[rng.uniform(size=state.den.shape) < 0.05] = 0.0
        plane = shape[1:]
        return OpCase("soft_finish", (state, F(9), empty(plane), empty(plane)), (0, 2, 3))

    return build


def _soft_contrast(floor):
    def build(rng, shape, r):
        state = _soft_state(rng, shape, False)
        state.sum_s[rng.uniform(size=state.sum_s.shape) < 0.1] = 0.0
        ties = rng.uniform(size=state.sum_s.shape) < 0.1  # num == 0: den == floor (or 0 with floor 0)
        state.sum_s[ties] = state.max_s[ties] * F(9)
        return OpCase("soft_contrast", (state, F(9), F(floor), empty(shape[1:])), (3,))

    return build


def fuse_accumulate(rng, shape, r):
    return OpCase("fuse_accumulate", (rand(rng, shape, -5.0, 5.0), rand(rng, shape)), (0,))


def fuse_divide(rng, shape, r):
    return OpCase("fuse_divide", (rand(rng, shape, -30.0, 30.0), F(7), empty(shape)), (2,))


def _box(op):
    def build(rng, shape, r):
        return OpCase(op, (rand(rng, shape[1:]), empty(shape[1:]), r), (1,))

    return build


def depth_finalize(rng, shape, r):
    plane = shape[1:]
    n = 5

    def score():
        s = rand(rng, plane, 0.0, 1.0)
        s[rng.uniform(size=plane) < 0.2] = -1.0  # neighbour missing
        return s

    best_s = rand(rng, plane, -0.2, 1.0)
    best_s[rng.uniform(size=plane) < 0.1] = 0.0
    best_k = rng.integers(0, n, plane).astype(F)
    return OpCase("depth_finalize", (best_s, best_k, score(), score(), rand(rng, plane, 0.0, 5.0), F(n),
                                     empty(plane), empty(plane)), (6, 7))


def depth_weight(rng, shape, r):
    plane = shape[1:]
    return OpCase("depth_weight", (rand(rng, plane, 0.0, 9.0), rand(rng, plane, 0.0, 1.0), empty(plane)), (2,))


def depth_ratio(rng, shape, r):
    plane = shape[1:]
    den = rand(rng, plane, -0.5, 2.0)
    den[rng.uniform(size=plane) < 0.1] = 0.0
    return OpCase("depth_ratio", (rand(rng, plane, 0.0, 9.0), den, rand(rng, plane, 0.0, 9.0), empty(plane)), (3,))


def depthmap_accumulate(rng, shape, r):
    return OpCase("depthmap_accumulate", (rand(rng, shape, 0.0, 1.0), rand(rng, shape[1:], 0.0, 4.0),
                                          rand(rng, shape, 0.0, 2.0), F(2)), (2,))


def depthmap_blend(rng, shape, r):
    return OpCase("depthmap_blend", (rand(rng, shape, 0.0, 1.0), rand(rng, shape, 0.0, 1.0),
                                     rand(rng, shape[1:], 0.0, 2.0), F(0.55), F(1.0 / 0.3), empty(shape)), (5,))


_BAYER = {"rggb": [[0, 1], [1, 2]], "bggr": [[2, 1], [1, 0]], "grbg": [[1, 0], [2, 1]], "gbrg": [[1, 2], [0, 1]]}


def _develop(method, pattern):
    """A random Bayer mosaic (at least 2x2: the op's minimum) of a 12- or 14-bit camera with
    samples past the white level and below the black level (both clips), fractional black
    levels, a matrix with negative and tiny entries (denormal products), and now and then a
    tiny scale (denormal normalised samples)."""

    def build(rng, shape, r):
        _, h, w = shape
        h, w = max(h, 2), max(w, 2)
        white = float(rng.choice([4095, 16383]))
        black = rng.uniform(0, 600, (2, 2)).astype(F)
        if rng.uniform() < 0.5:
            black = np.rint(black).astype(F)
        mosaic = rng.integers(0, int(white) + 1, (h, w))
        wild = rng.uniform(size=(h, w)) < 0.2
        mosaic[wild] = rng.integers(0, 65536, int(wild.sum()))
        mosaic.reshape(-1)[:2] = [0, 65535]
        wb = rng.uniform(1.0, 3.0, (2, 2))
        scale = (wb / (white - black)).astype(F)
        if rng.uniform() < 0.3:
            scale[rng.integers(0, 2), rng.integers(0, 2)] = F(1e-39)
        matrix = rand(rng, (3, 3), -1.0, 2.0)
        matrix[rng.integers(0, 3), rng.integers(0, 3)] = rng.choice(TINY)
        cfa = np.array(_BAYER[pattern], np.int8)
        return OpCase("develop", (mosaic.astype(np.uint16), cfa, black, scale, matrix, method, empty((3, h, w))),
                      (6,))

    return build


def copy(rng, shape, r):
    return OpCase("copy", (rand(rng, shape), empty(shape)), (1,))


def crop(rng, shape, r):
    """A window of a random size at a random place (the whole plane included)."""
    c, h, w = shape
    hh, ww = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
    r0, c0 = int(rng.integers(0, h - hh + 1)), int(rng.integers(0, w - ww + 1))
    return OpCase("crop", (rand(rng, shape), r0, c0, empty((c, hh, ww))), (3,))


def crop_plane(rng, shape, r):
    _, h, w = shape
    hh, ww = max(1, h - 1), max(1, w // 2)
    return OpCase("crop", (rand(rng, (h, w)), h - hh, w - ww, empty((hh, ww))), (3,))


#: every case, by name; the windowed ones (reading a (2r+1)-row or -column window) take r
CASES = {
    "convert_u8_srgb": _convert(np.uint8, "srgb"),
    "convert_u16_srgb": _convert(np.uint16, "srgb"),
    "convert_u16_linear": _convert(np.uint16, "linear"),
    "convert_f32": _convert(np.float32, None),
    "warp_u8": _warp(np.uint8, "similarity"),
    "warp_u16": _warp(np.uint16, "similarity"),
    "warp_f32": _warp(np.float32, "similarity"),
    "warp_u16_identity": _warp(np.uint16, "identity"),
    "warp_planar_f32": _warp(np.float32, "planar"),
    "pyramid_reduce": pyramid_reduce,
    "pyramid_expand_sub": _expand("pyramid_expand_sub"),
    "pyramid_expand_add": _expand("pyramid_expand_add"),
    "pyramid_laplacian": pyramid_laplacian,
    "fuse_sqsum": fuse_sqsum,
    "fuse_select": fuse_select,
    "fuse_accumulate": fuse_accumulate,
    "fuse_divide": fuse_divide,
    "filter_box_rows": _box("filter_box_rows"),
    "filter_box_cols": _box("filter_box_cols"),
    "depth_track_forward": _depth_track(1),
    "depth_track_reverse": _depth_track(-1),
    "depth_track_first": _depth_track(0),
    "depth_finalize": depth_finalize,
    "depth_weight": depth_weight,
    "depth_ratio": depth_ratio,
    "depthmap_accumulate": depthmap_accumulate,
    "depthmap_blend": depthmap_blend,
    "soft_score": _soft_score(True),
    "soft_score_finest": _soft_score(False),
    "soft_fold_first": _soft_fold(True, 0.0),
    "soft_fold_first_floor": _soft_fold(True, 0.01),
    "soft_fold": _soft_fold(False, 0.0),
    "soft_fold_floor": _soft_fold(False, 0.01),
    "soft_fold_high_floor": _soft_fold(False, 0.5),  # best scores below the depth's shift
    "soft_fold_focus": _soft_fold(False, 0.01, focus=0),
    "soft_fold_finest": _soft_fold(False, 0.01, with_coarse=False),
    "soft_fold_no_maps": _soft_fold(False, 0.01, maps=False),
    "soft_fold_first_no_maps": _soft_fold(True, 0.01, maps=False),
    "soft_finish": _soft_finish(True),
    "soft_finish_no_maps": _soft_finish(False),
    "soft_contrast": _soft_contrast(0.01),
    "soft_contrast_no_floor": _soft_contrast(0.0),
    "encode_8_srgb": _encode(8, "srgb"),
    "encode_16_srgb": _encode(16, "srgb"),
    "encode_16_linear": _encode(16, "linear"),
    "copy": copy,
    "crop": crop,
    "crop_plane": crop_plane,
    **{f"develop_{method}_{pattern}": _develop(method, pattern) for method in ("bilinear", "mhc", "rcd")
       for pattern in _BAYER},
}
WINDOWED = ("fuse_select", "depth_track_forward", "depth_track_reverse", "depth_track_first", "filter_box_rows",
            "filter_box_cols", "soft_score", "soft_score_finest", "soft_fold", "soft_fold_focus", "soft_fold_no_maps")
PLAIN = tuple(name for name in CASES if name not in WINDOWED)


def make_frames(n=4, shape=(40, 56, 3), dtype=np.uint16, seed=2):
    """``n`` smooth random frames (H, W, C) with a differently sharp region each, for whole stacks."""
    rng = np.random.default_rng(seed)
    w = shape[1]
    base = rng.uniform(0, 1, shape)
    frames = []
    for k in range(n):
        blur = base.copy()
        for _ in range(k + 1):
            blur = (blur + np.roll(blur, 1, 0) + np.roll(blur, 1, 1)) / 3
        mix = np.where((np.arange(w) * n // w == k)[None, :, None], base, blur)
        frames.append(np.rint(mix * np.iinfo(dtype).max).astype(dtype) if dtype != np.float32 else mix.astype(F))
    return frames


def write_moving_stack(folder, kind: str, n=5, shape=(150, 200)):
    """A synthetic stack with motion (breathing, shift, rotation) written to ``folder`` as
    ``kind`` files: "jpeg" (8-bit), "tiff16" or "dng" (Bayer mosaics); returns ``folder``."""
    import imageio.v3 as iio
    import tifffile

    from gpustack import synth

    st = synth.make_stack(n_frames=n, shape=shape, seed=7, breathing=0.015, shift=2.0, rotation=0.2)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "dng":
        from dng import write_dng_stack

        write_dng_stack(st.frames, folder)
    elif kind == "jpeg":
        for k, f in enumerate(st.as_uint8()):
            iio.imwrite(folder / f"f{k}.jpg", f, quality=95)
    elif kind == "tiff16":
        for k, f in enumerate(st.as_uint16()):
            tifffile.imwrite(folder / f"f{k}.tif", f)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return folder
