"""Every CUDA kernel of kernels/*.cu, run on the CPU, against its Numba twin, bit for bit.

The kernels are compiled by g++ through tests/cuda_shim (the CUDA qualifiers defined
away, the grid run by loops, no FMA contraction, SSE float32 arithmetic) and reached
through the real ``CudaBackend`` methods and ``_kernels.plan_*`` wrappers (only the
launch and the memory are swapped for the emulation), so a wrong argument order or
type, a bad index, a skipped sample or a different operation order shows up here
without a GPU. (What NVRTC makes of the same files is checked in test_nvrtc_modules.py.)
"""

import zlib

import cuda_shim
import numpy as np
import pytest
from conftest import toolchain_missing
from cuda_cases import (CASES, PLAIN, RADII, SHAPES, WINDOW_SHAPES, WINDOWED, assert_bits_equal, make_frames, run_op,
                        write_moving_stack)

from gpustack.backends.cpu import CpuBackend
from gpustack.backends.cuda import _kernels as K

cpu = CpuBackend()

@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
    if cuda_shim.compiler() is None:
        toolchain_missing("g++ not found: cannot emulate the CUDA kernels")
    return tmp_path_factory.getbasetemp() / "cuda_shim"


@pytest.fixture(scope="module")
def lib(shim_dir):
    return cuda_shim.build(K.kernel_dir(), shim_dir, "int")


@pytest.fixture(scope="module")
def emu(lib):
    return cuda_shim.emulated_backend(lib)


def check_case(be, name, shape, r, seed):
    case = CASES[name](np.random.default_rng(seed), shape, r)
    for got, want in zip(run_op(be, case), run_op(cpu, case), strict=True):
        assert_bits_equal(got, want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", PLAIN)
def test_op_matches_numba_twin(emu, name, shape):
    check_case(emu, name, shape, None, zlib.crc32(repr((name, shape)).encode()))


@pytest.mark.parametrize("r", RADII)
@pytest.mark.parametrize("shape", WINDOW_SHAPES)
@pytest.mark.parametrize("name", WINDOWED)
def test_windowed_op_matches_numba_twin(emu, name, shape, r):
    check_case(emu, name, shape, r, zlib.crc32(repr((name, shape, r)).encode()))


def test_every_kernel_is_exercised(lib):
    be = cuda_shim.emulated_backend(lib)
    for name in CASES:
        run_op(be, CASES[name](np.random.default_rng(0), (1, 2, 2), 1))
    assert set(be.launched) == set(lib.kernels) == set(K.KERNEL_FAMILY)


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 16, 9)])
def test_wide_index_variant_matches_numba_twin(shim_dir, shape):
    """The ``GS_INDEX_T long long`` specialisation (arrays of 2**31 elements or more) computes
    the same: run on small arrays with its gs_index_t arguments widened."""
    wide = cuda_shim.emulated_backend(cuda_shim.build(K.kernel_dir(), shim_dir, "long long"), retype_index=True)
    for name in CASES:
        check_case(wide, name, shape, 2, 1)


@pytest.mark.parametrize("method,align,maps", [("soft", "similarity", True), ("pyramid", "similarity", True),
                                               ("depthmap", "none", True), ("soft", "similarity", False)])
def test_emulated_stack_matches_cpu(emu, monkeypatch, method, align, maps):
    """A whole stack through the pipeline on the emulated cuda backend gives the cpu backend's bytes
    (without the maps too: the image the same bytes as with them)."""
    import gpustack.pipeline

    frames = make_frames()
    opts = {"method": method, "levels": 3, "depth_smooth": 2, "contrast_threshold": 0.2, "align": align, "maps": maps}
    want = gpustack.stack(frames, backend="cpu", **opts)
    monkeypatch.setattr(gpustack.pipeline, "get_backend", lambda name: emu)
    got = gpustack.stack(frames, backend="cpu", **opts)
    map_fields = ("depth", "depth_raw", "confidence")
    for field in ("image", "linear") + (map_fields if maps else ()):
        assert_bits_equal(getattr(got, field), getattr(want, field))
    if not maps:
        assert all(getattr(got, field) is None for field in map_fields)
        with_maps = gpustack.stack(frames, backend="cpu", **{**opts, "maps": True})
        assert_bits_equal(got.image, with_maps.image)
        assert_bits_equal(got.linear, with_maps.linear)


def _on_both(emu, monkeypatch, tmp_path, run):
    """(emulated, cpu): ``run(folder)`` on the emulated cuda backend and on the cpu backend, each
    writing into its own folder (``tmp_path / "emulated"``, ``tmp_path / "cpu"``)."""
    import gpustack.pipeline

    results = {}
    for name in ("cpu", "emulated"):
        out = tmp_path / name
        out.mkdir()
        with monkeypatch.context() as m:
            if name == "emulated":
                m.setattr(gpustack.pipeline, "get_backend", lambda _: emu)
            results[name] = run(out)
    return results["emulated"], results["cpu"]


@pytest.mark.parametrize("kind", ["jpeg", "tiff16"])
@pytest.mark.parametrize("method", ["soft", "pyramid", "depthmap"])
def test_emulated_stack_from_files_matches_cpu(emu, monkeypatch, tmp_path, kind, method):
    """Files with motion through the whole pipeline, outputs written: the emulated cuda backend
    writes the cpu backend's bytes (the same case the GPU runs in test_cuda_backend)."""
    import gpustack.pipeline

    folder = write_moving_stack(tmp_path / "in", kind, shape=(96, 128))
    got, want = _on_both(emu, monkeypatch, tmp_path, lambda out: gpustack.stack(
        folder, backend="cpu", method=method, levels=4, output=out / "fused.tif", depth_map=out / "depth.tif"))
    assert any(t is not None and not np.allclose(t, np.eye(2, 3)) for t in want.transforms)
    for field in ("image", "linear", "depth", "depth_raw", "confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))
    for file in ("fused.tif", "depth.tif"):
        assert (tmp_path / "emulated" / file).read_bytes() == (tmp_path / "cpu" / file).read_bytes()


def test_emulated_raw_stack_matches_cpu(emu, monkeypatch, tmp_path):
    """Bayer DNGs with motion through the pipeline: develop (the default rcd, and mhc), then
    warp_planar and the default (soft) fusion, on the emulated cuda backend give the cpu backend's bytes."""
    import gpustack.pipeline
    from dng import write_dng_stack
    from gpustack import synth

    st = synth.make_stack(n_frames=4, shape=(64, 96), seed=4, breathing=0.02, shift=2.0, rotation=0.2)
    paths = write_dng_stack(st.frames, tmp_path)
    for demosaic in ("rcd", "mhc"):
        opts = {"levels": 3, "align": "similarity", "demosaic": demosaic}
        want = gpustack.stack(paths, backend="cpu", **opts)
        assert any(not np.array_equal(t, np.eye(2, 3)) for t in want.transforms)  # the warp path runs
        with monkeypatch.context() as m:
            m.setattr(gpustack.pipeline, "get_backend", lambda name: emu)
            emu.launched.clear()
            got = gpustack.stack(paths, backend="cpu", **opts)
        kernel = "gs_develop_rcd_rb_at_green" if demosaic == "rcd" else "gs_develop_mhc"
        assert {kernel, "gs_warp_planar_f32"} <= set(emu.launched)
        for field in ("image", "linear", "depth", "depth_raw", "confidence"):
            assert_bits_equal(getattr(got, field), getattr(want, field))


@pytest.mark.filterwarnings("ignore:frame .* matched worse than no warp")
@pytest.mark.parametrize("opts", [{"per_channel": True}, {"focus_channel": "GFP", "align": "similarity"},
                                  {"method": "pyramid", "per_channel": True}])
def test_emulated_microscopy_stack_matches_cpu(emu, monkeypatch, tmp_path, opts):
    """A 5-channel 12-bit OME-TIFF z-stack (gains for 5 channels when aligned, per-channel states or a
    focus channel, the height map's confidence): the emulated cuda backend writes the cpu backend's bytes."""
    import gpustack
    from gpustack import synth

    st = synth.make_microscopy_stack(n_planes=5, shape=(64, 80), channels=5, offsets=(0, 2, 4, 1, 3), seed=5)
    path = st.write_ome(tmp_path / "five.ome.tif")
    got, want = _on_both(emu, monkeypatch, tmp_path, lambda out: gpustack.stack(
        path, backend="cpu", output=out / "f.ome.tif", height_map=out / "h.ome.tif", confidence_map=out / "c.tif",
        **opts))
    for field in ("image", "linear", "depth", "confidence", "height", "height_confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))
    for file in ("f.ome.tif", "h.ome.tif", "c.tif"):
        assert (tmp_path / "emulated" / file).read_bytes() == (tmp_path / "cpu" / file).read_bytes()
