"""Frame checks before any stage uses a frame (gpustack.stages.check), through the pipeline: the
error names the frame, with alignment on (the default) as with it off, for files, lists of arrays
and iterators; non-finite float samples are refused with their count."""

import numpy as np
import pytest
import tifffile
from PIL import Image

import gpustack
from dng import write_dng_stack
from gpustack import synth

RNG = np.random.default_rng(5)


def _jpegs(folder, shapes):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (h, w) in enumerate(shapes):
        p = folder / f"f{k}.jpg"
        Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p, quality=95)
        paths.append(p)
    return paths


@pytest.mark.parametrize("align", ["similarity", "none"])
def test_a_frame_of_another_size_is_named_before_the_aligner_sees_it(tmp_path, align):
    paths = _jpegs(tmp_path, [(96, 128), (96, 128), (96, 128), (96, 120), (96, 128)])
    with pytest.raises(gpustack.InputError,
                       match=r"^frame 3 \(f3.jpg\) is 120x96 but frame 2 \(f2.jpg\) is 128x96; all frames must have "
                             r"the same size$"):
        gpustack.stack(paths, backend="cpu", align=align)


def test_a_jpeg_among_raw_frames_is_named_with_alignment_on(tmp_path):
    st = synth.make_stack(n_frames=3, shape=(64, 96), seed=3)
    dngs = write_dng_stack(st.frames, tmp_path / "raw")
    [jpg] = _jpegs(tmp_path / "jpg", [(64, 96)])
    jpg = jpg.rename(tmp_path / "raw" / "frame003.jpg")
    with pytest.raises(gpustack.InputError, match=r"^frame 3 \(frame003.jpg\) is jpeg uint8 but frame 2 "
                                                  r"\(frame002.dng\) is a camera RAW \(Bayer mosaic\); all frames of "
                                                  r"a stack must be of one kind$"):
        gpustack.stack([*dngs, jpg], backend="cpu")


def _float_frames(n=4, shape=(48, 64, 3)):
    return [RNG.uniform(0.1, 0.9, shape).astype(np.float32) for _ in range(n)]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_in_a_float_tiff_are_named(tmp_path, value):
    frames = _float_frames()
    frames[1][5, 7, 0] = value
    frames[1][9, 9, 2] = value
    for k, f in enumerate(frames):
        tifffile.imwrite(tmp_path / f"z{k}.tif", f, photometric="rgb")
    with pytest.raises(gpustack.InputError, match=r"^frame 1 \(z1.tif\) has 2 non-finite samples \(NaN or infinity\) "
                                                  r"of 9216; float frames must be finite: replace or mask them before "
                                                  r"stacking$"):
        gpustack.stack([tmp_path], backend="cpu")


@pytest.mark.parametrize("kind", ["list", "array", "iterator"])
@pytest.mark.parametrize("align", ["similarity", "none"])
def test_non_finite_samples_in_arrays_are_named(kind, align):
    frames = _float_frames()
    frames[2][0, 0, 1] = np.nan
    inputs = {"list": frames, "array": np.stack(frames), "iterator": iter(frames)}[kind]
    with pytest.raises(gpustack.InputError, match=r"^frame 2 \(array\[2\]\) has 1 non-finite sample \(NaN"):
        gpustack.stack(inputs, backend="cpu", align=align, reference=0 if kind == "iterator" else None)


def test_float64_values_beyond_float32_are_non_finite():
    frames = [f.astype(np.float64) for f in _float_frames()]
    frames[0][3, 3, 0] = 1e300  # inf once read as float32
    with pytest.raises(gpustack.InputError, match=r"frame 0 \(array\[0\]\) has 1 non-finite sample"):
        gpustack.stack(frames, backend="cpu", align="none")


def test_the_reference_itself_is_checked_first():
    frames = _float_frames(3)
    frames[1][:] = np.inf  # the middle frame: read and checked before any other
    with pytest.raises(gpustack.InputError, match=r"frame 1 \(array\[1\]\) has 9216 non-finite samples"):
        gpustack.stack(frames, backend="cpu")


@pytest.mark.parametrize("shape, align, need", [
    ((1, 1), "similarity", 16), ((2, 2), "similarity", 16), ((3, 20000), "similarity", 16),
    ((12, 40), "similarity", 16), ((2, 2), "none", 8), ((3, 20000), "none", 8),
])
def test_too_small_frames_say_the_minimum(shape, align, need):
    frames = [RNG.integers(0, 65535, (*shape, 3), dtype=np.uint16) for _ in range(3)]
    h, w = shape
    extra = " to be aligned \\(8x8 with --align none\\)" if need == 16 else ""
    with pytest.raises(gpustack.InputError, match=rf"^frame 1 \(array\[1\]\) is {w}x{h} pixels, too small: frames must "
                                                  rf"be at least {need}x{need} pixels{extra}$"):
        gpustack.stack(frames, backend="cpu", align=align)


def test_the_smallest_accepted_frames_stack():
    """The minimum the message names is enough: 16x16 aligned, 8x8 without alignment (an elongated
    16 x 100000 frame too: its proxy is not reduced below the estimator's 16 px)."""
    base = RNG.integers(0, 65535, (16, 16, 3), dtype=np.uint16)
    assert gpustack.stack([base, base, base], backend="cpu").image.shape[:2] == (16, 16)
    small = base[:8, :8]
    assert gpustack.stack([small, small], backend="cpu", align="none").image.shape[:2] == (8, 8)
    long = RNG.integers(0, 65535, (16, 100000, 1), dtype=np.uint16)
    assert gpustack.stack([long, long], backend="cpu").image.shape[:2] == (16, 100000)


def test_raw_frames_need_32_pixels_to_be_aligned(tmp_path):
    st = synth.make_stack(n_frames=2, shape=(24, 40), seed=3)
    dngs = write_dng_stack(st.frames, tmp_path)
    with pytest.raises(gpustack.InputError, match=r"is 40x24 pixels, too small: frames must be at least 32x32 pixels "
                                                  r"to be aligned \(8x8 with --align none\)"):
        gpustack.stack(dngs, backend="cpu")
    assert gpustack.stack(dngs, backend="cpu", align="none").image.shape[:2] == (24, 40)
