"""Every CUDA kernel of kernels/*.cu, run on the CPU, against its Numba twin, bit for bit.

The kernels are compiled by g++ through tests/cuda_shim (the CUDA qualifiers defined
away, the grid run by loops, no FMA contraction, SSE float32 arithmetic) and reached
through the real ``CudaBackend`` methods and ``_kernels.plan_*`` wrappers (only the
launch and the memory are swapped for the emulation), so a wrong argument order or
type, a bad index, a skipped sample or a different operation order shows up here
without a GPU. The last test has nvcc compile every file to PTX with the backend's
float options (--fmad=false --ftz=false).
"""

import shutil
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor

import cuda_shim
import numpy as np
import pytest
from cuda_cases import CASES, PLAIN, RADII, SHAPES, WINDOW_SHAPES, WINDOWED, assert_bits_equal, make_frames, run_op

from gpustack.backends.cpu import CpuBackend
from gpustack.backends.cuda import _kernels as K

cpu = CpuBackend()

pytestmark = pytest.mark.skipif(cuda_shim.compiler() is None, reason="g++ not found: cannot emulate the CUDA kernels")


@pytest.fixture(scope="module")
def shim_dir(tmp_path_factory):
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


@pytest.mark.parametrize("method,align", [("soft", "similarity"), ("pyramid", "similarity"), ("depthmap", "none")])
def test_emulated_stack_matches_cpu(emu, monkeypatch, method, align):
    """A whole stack through the pipeline on the emulated cuda backend gives the cpu backend's bytes."""
    import gpustack.pipeline

    frames = make_frames()
    opts = {"method": method, "levels": 3, "depth_smooth": 2, "contrast_threshold": 0.2, "align": align}
    want = gpustack.stack(frames, backend="cpu", **opts)
    monkeypatch.setattr(gpustack.pipeline, "get_backend", lambda name: emu)
    got = gpustack.stack(frames, backend="cpu", **opts)
    for field in ("image", "linear", "depth", "depth_raw", "confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))


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


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_kernels_compile_to_ptx_without_fma(tmp_path):
    """Every kernels/*.cu compiles with nvcc --ptx -arch=sm_90 --fmad=false --ftz=false in both
    index specialisations, and the PTX holds no fused multiply-add, no flush-to-zero and no
    approximate division."""
    kdir = K.kernel_dir()
    jobs = [(src, index_t) for src in sorted(kdir.glob("*.cu")) for index_t in K.INDEX_TYPES]
    assert len(jobs) == 2 * len(K.FAMILIES)

    def compile_one(job):
        src, index_t = job
        out = tmp_path / f"{src.stem}_{index_t.replace(' ', '_')}.ptx"
        cmd = [NVCC, "--ptx", "-arch=sm_90", "--fmad=false", "--ftz=false", "-std=c++17", f"-I{kdir}",
               f"-DGS_INDEX_T={index_t}", "-o", str(out), str(src)]
        res = subprocess.run(cmd, check=False, capture_output=True, text=True)
        return res, (out.read_text() if res.returncode == 0 else "")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(compile_one, jobs))
    for (src, index_t), (res, ptx) in zip(jobs, results):
        assert res.returncode == 0, f"nvcc failed on {src.name} (index type {index_t}):\n{res.stderr}"
        assert ".entry gs_" in ptx, f"{src.name}: no kernel in the PTX"
        for bad in ("fma.rn.f", "mad.f", ".ftz.", "div.approx", "div.full"):
            assert bad not in ptx, f"{src.name} (index type {index_t}): PTX contains {bad}"
