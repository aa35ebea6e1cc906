"""The cuda backend: every op against the cpu backend, bit for bit, on a GPU (``cuda`` marker);
and, anywhere, the static checks that keep it loadable: the kernel folder, the kernel names,
the Backend protocol, the plans' validation, NVRTC compilation (where NVRTC is installed),
and that importing gpustack never imports CuPy."""

import inspect
import re
import shutil
import subprocess
import sys
import zlib

import numpy as np
import pytest
from cuda_cases import CASES, PLAIN, WINDOWED, assert_bits_equal, make_frames, run_op

import gpustack
from gpustack.backends import cuda_status
from gpustack.backends.base import Backend
from gpustack.backends.cpu import CpuBackend
from gpustack.backends.cuda import CudaBackend, estimate_device_bytes
from gpustack.backends.cuda import _kernels as K
from gpustack.errors import BackendUnavailableError, InputError, KernelCompileError

F = np.float32
KERNEL_DEF = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(gs_\w+)\s*\(')


# ---------------------------------------------------------------------------------------------
# Static checks (no GPU)


def test_kernel_folder_is_found():
    kdir = K.kernel_dir()
    assert (kdir / "common.cuh").is_file()
    for family in K.FAMILIES:
        assert (kdir / f"{family}.cu").is_file(), f"kernels/{family}.cu is missing"


def test_every_kernel_name_in_kernels_py_exists_in_the_sources():
    referenced = set(re.findall(r'"(gs_\w+)"', inspect.getsource(K)))
    defined = {}
    for src in K.kernel_dir().glob("*.cu"):
        for name in KERNEL_DEF.findall(src.read_text()):
            defined[name] = src.stem
    assert referenced - set(defined) == set(), "referenced by _kernels.py but defined in no kernels/*.cu"
    assert set(defined) - referenced == set(), "defined in kernels/*.cu but never launched by _kernels.py"
    for name, family in K.KERNEL_FAMILY.items():
        assert defined[name] == family, f"{name} is in kernels/{defined[name]}.cu, _kernels.py says {family}.cu"


def _protocol_methods():
    return {name: fn for name, fn in vars(Backend).items() if inspect.isfunction(fn) and not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(_protocol_methods()))
def test_cuda_backend_implements_protocol(name):
    """Same method, same parameter names as ``Backend`` (and so as the cpu backend)."""
    want = list(inspect.signature(_protocol_methods()[name]).parameters)
    got = list(inspect.signature(getattr(CudaBackend, name)).parameters)
    assert got == want
    assert CudaBackend.name == "cuda"


def test_import_gpustack_does_not_import_cupy():
    code = ("import sys, gpustack, gpustack.backends, gpustack.pipeline; "
            "print('cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cuda_package_imports_without_cupy():
    """Where CuPy is missing, the module still imports (the static checks need it) and the
    backend says why it cannot run."""
    code = """
import sys
sys.modules["cupy"] = None  # import cupy -> ImportError
import numpy as np
from gpustack.backends.cuda import CudaBackend, _kernels
from gpustack.errors import BackendUnavailableError
_kernels.plan_fuse_sqsum(np.zeros((3, 4, 5), np.float32), np.zeros((4, 5), np.float32))
try:
    CudaBackend()
except BackendUnavailableError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "CuPy failed to import" in out.stdout and "--backend cpu" in out.stdout


def test_kernel_dir_override(tmp_path, monkeypatch):
    copy = tmp_path / "kernels"
    shutil.copytree(K.kernel_dir(), copy)
    monkeypatch.setenv("GPUSTACK_KERNEL_DIR", str(copy))
    assert K.kernel_dir() == copy
    monkeypatch.setenv("GPUSTACK_KERNEL_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailableError, match="GPUSTACK_KERNEL_DIR"):
        K.kernel_dir()


def test_module_source_changes_with_the_headers(tmp_path):
    """CuPy caches compiled modules by source text: an edit of common.cuh must change it."""
    copy = tmp_path / "kernels"
    shutil.copytree(K.kernel_dir(), copy)
    before = K.module_source("filter", "long long", copy)
    assert "#define GS_INDEX_T long long" in before and '#line 1 "filter.cu"' in before
    (copy / "common.cuh").write_text((copy / "common.cuh").read_text() + "\n// edited\n")
    assert K.module_source("filter", "long long", copy) != before


def _nvrtc_available():
    try:
        K._nvrtc()
    except BackendUnavailableError:
        return False
    return True


@pytest.mark.skipif(not _nvrtc_available(), reason="NVRTC not available (pip install cupy-cuda13x nvidia-cuda-nvrtc)")
@pytest.mark.parametrize("index_t", K.INDEX_TYPES)
@pytest.mark.parametrize("family", sorted(K.FAMILIES))
def test_kernels_compile_with_nvrtc(family, index_t):
    """The exact source and options the backend hands to NVRTC compile (no GPU needed), to PTX
    without fused multiply-add, flush-to-zero or approximate division; and to a cubin."""
    job = K.nvrtc_job(family, index_t, 90, kind="ptx")
    assert "--fmad=false" in job.options and "--ftz=false" in job.options
    assert not any("ftz=true" in o for o in job.options)
    ptx = K.compile_job(job).decode()
    for name in K.FAMILIES[family]:
        assert f".entry {name}(" in ptx
    for bad in ("fma.rn.f", "mad.f", ".ftz.", "div.approx", "div.full"):
        assert bad not in ptx, f"{family}.cu ({index_t}): PTX contains {bad}"
    cubin = K.nvrtc_job(family, index_t, 90)
    assert cubin.kind == "cubin" and K.compile_job(cubin)[:4] == b"\x7fELF"


@pytest.mark.skipif(not _nvrtc_available(), reason="NVRTC not available")
def test_compile_error_names_the_file(tmp_path):
    copy = tmp_path / "kernels"
    shutil.copytree(K.kernel_dir(), copy)
    (copy / "filter.cu").write_text((copy / "filter.cu").read_text() + "\nthis is not C++;\n")
    job = K.nvrtc_job("filter", "int", 90, kdir=copy)
    with pytest.raises(KernelCompileError, match=r"kernels/filter\.cu \(index type int\)(.|\n)*filter\.cu\(\d+\)"):
        K.compile_job(job)


def _arrays(*shapes, dtype=F):
    return [np.zeros(s, dtype) for s in shapes]


def test_plans_validate_their_arrays():
    src, dst = _arrays((3, 8, 10), (3, 4, 5))
    assert K.plan_pyramid_reduce(src, dst).grid == (1, 1, 3)
    with pytest.raises(TypeError, match="float32"):
        K.plan_pyramid_reduce(src.astype(np.float64), dst)
    with pytest.raises(ValueError, match="C-contiguous"):
        K.plan_pyramid_reduce(np.zeros((3, 8, 20), F)[:, :, ::2], dst)
    with pytest.raises(ValueError, match=r"shape \(3, 4, 5\)"):
        K.plan_pyramid_reduce(src, np.zeros((3, 4, 6), F))
    with pytest.raises(ValueError, match="radius"):
        K.plan_filter_box_rows(*_arrays((4, 4), (4, 4)), -1)
    with pytest.raises(ValueError, match="frame index"):
        K.plan_depth_track(*_arrays(*[(4, 4)] * 7), 1, 2.5, 1)
    with pytest.raises(ValueError, match="gains"):
        K.plan_warp_f32(np.zeros((4, 4, 3), F), np.eye(2, 3), np.ones(2, F), np.zeros((3, 4, 4), F))
    with pytest.raises(ValueError, match="65536"):
        K.plan_convert_lut_u16(np.zeros((2, 2, 1), np.uint16), np.zeros(256, F), np.zeros((1, 2, 2), F))


def test_plans_type_their_scalars():
    plan = K.plan_depthmap_blend(*_arrays((3, 5, 7), (3, 5, 7), (5, 7)), 0.5, 2.0, np.zeros((3, 5, 7), F))
    assert [type(a) for a in plan.args[4:]] == [np.int32, np.int32, np.float32, np.float32]
    assert plan.block == K.BLOCK_1D and plan.grid == (1, 1, 1)


class _Sized:
    def __init__(self, size):
        self.size = size


def test_index_type_widens_at_2_31_elements():
    assert K._index_type(_Sized(2**31 - 1), _Sized(5)) == "int"
    assert K._index_type(_Sized(5), _Sized(2**31)) == "long long"


def test_grid_limits_are_checked():
    assert K._grid_2d(33, 9, 3) == (2, 2, 3)
    with pytest.raises(InputError, match="--backend cpu"):
        K._grid_2d(10, 65535 * 8 + 1)


def test_launch_refuses_numpy_arrays():
    plan = K.plan_fuse_sqsum(*_arrays((1, 2, 2), (2, 2)))
    with pytest.raises(TypeError, match="to_device"):
        K.launch(plan, stream=None)


def test_estimate_device_bytes():
    small = estimate_device_bytes(3, 1000, 1500, 8)
    big = estimate_device_bytes(3, 4000, 6000, 10)
    assert 15.5 * small < big < 16.1 * small  # about linear in the pixel count
    assert 2 * 2**30 < big < 8 * 2**30  # 24 MP colour: a few GiB
    assert estimate_device_bytes(3, 4000, 6000, None) >= big


# ---------------------------------------------------------------------------------------------
# On a GPU: the cuda backend against the cpu backend, bit for bit


@pytest.fixture(scope="module")
def cuda_be():
    ok, why = cuda_status()
    if not ok:
        pytest.skip(f"no CUDA device: {why}")
    return CudaBackend()


cpu = CpuBackend()
GPU_SHAPES = [(1, 1, 2), (3, 2, 2), (3, 37, 53), (3, 130, 97)]


def _compare(be, name, shape, r):
    case = CASES[name](np.random.default_rng(zlib.crc32(repr((name, shape, r)).encode())), shape, r)
    for got, want in zip(run_op(be, case), run_op(cpu, case), strict=True):
        assert_bits_equal(got, want)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", GPU_SHAPES)
@pytest.mark.parametrize("name", PLAIN)
def test_op_cuda_equals_cpu(cuda_be, name, shape):
    _compare(cuda_be, name, shape, None)


@pytest.mark.cuda
@pytest.mark.parametrize("r", [0, 2, 5])
@pytest.mark.parametrize("shape", GPU_SHAPES)
@pytest.mark.parametrize("name", WINDOWED)
def test_windowed_op_cuda_equals_cpu(cuda_be, name, shape, r):
    _compare(cuda_be, name, shape, r)


@pytest.mark.cuda
@pytest.mark.parametrize("method,align,dtype", [("pyramid", "similarity", np.uint16), ("depthmap", "none", np.uint8),
                                                ("pyramid", "none", np.float32), ("soft", "similarity", np.uint16),
                                                ("soft", "none", np.float32)])
def test_stack_cuda_equals_cpu(cuda_be, method, align, dtype):
    frames = make_frames(n=5, shape=(181, 243, 3), dtype=dtype)
    opts = {'method': method, 'align': align, 'depth_smooth': 2}
    want = gpustack.stack(frames, backend="cpu", **opts)
    got = gpustack.stack(frames, backend="cuda", **opts)
    assert got.backend == "cuda"
    for field in ("image", "linear", "depth", "depth_raw", "confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))


@pytest.mark.cuda
def test_to_device_round_trips_through_the_staging_slots(cuda_be):
    """Uploads of changing sizes and dtypes, back to back (slots reused and grown), arrive intact,
    even when the host array changes as soon as to_device has returned."""
    rng = np.random.default_rng(3)
    pairs = []
    for n in [10, 1000, 7, 5000, 5000, 3, 20000, 20000]:
        for dtype in (np.uint8, np.uint16, np.float32):
            a = rng.uniform(0, 200, (n, 3)).astype(dtype)
            pairs.append((a.copy(), cuda_be.to_device(a[:, ::2])))  # a strided view, too
            a[:] = 0
    for want, got in pairs:
        np.testing.assert_array_equal(cuda_be.to_host(got), want[:, ::2])


@pytest.mark.cuda
def test_out_of_memory_says_what_to_do(cuda_be):
    with pytest.raises(BackendUnavailableError, match="out of GPU memory.*--backend cpu"):
        cuda_be.empty((2**40,), np.float32)


@pytest.mark.cuda
def test_device_name(cuda_be):
    assert "compute capability" in cuda_be.device_name and "driver" in cuda_be.device_name


@pytest.mark.cuda
def test_managed_memory_gives_the_same_bytes(monkeypatch):
    """Frames larger than the GPU run in CUDA managed memory (forced here): same kernels, same bytes."""
    ok, why = cuda_status()
    if not ok:
        pytest.skip(f"no CUDA device: {why}")
    import gpustack.pipeline

    monkeypatch.setenv("GPUSTACK_CUDA_MANAGED", "1")
    managed = CudaBackend()
    assert managed._managed is not None
    monkeypatch.setattr(gpustack.pipeline, "get_backend", lambda name: managed)
    frames = make_frames(n=4, shape=(97, 131, 3), dtype=np.uint16)
    got = gpustack.stack(frames, backend="cuda", align="similarity")
    monkeypatch.undo()
    want = gpustack.stack(frames, backend="cpu", align="similarity")
    for field in ("image", "linear", "depth", "confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))


@pytest.mark.cuda
def test_check_memory_switches_to_managed_or_says_what_to_do(cuda_be):
    free = cuda_be.free_device_bytes()
    side = 1024
    while estimate_device_bytes(3, side, side) < 1.2 * free:
        side *= 2
    fresh = CudaBackend()
    try:
        fresh.check_memory(3, side, side)
    except BackendUnavailableError as exc:  # no managed memory, or not enough host memory either
        assert "out of GPU memory" in str(exc) and "--backend cpu" in str(exc)
    else:
        assert fresh._managed is not None


@pytest.mark.cuda
def test_raw_stack_cuda_equals_cpu(cuda_be, tmp_path):
    """Bayer DNGs with motion: develop and warp_planar on the GPU give the cpu bytes."""
    from dng import write_dng_stack
    from gpustack import synth

    st = synth.make_stack(n_frames=5, shape=(120, 160), seed=4, breathing=0.02, shift=2.0, rotation=0.2)
    paths = write_dng_stack(st.frames, tmp_path)
    for demosaic in ("rcd", "mhc", "bilinear"):
        want = gpustack.stack(paths, backend="cpu", demosaic=demosaic)
        got = gpustack.stack(paths, backend="cuda", demosaic=demosaic)
        for field in ("image", "linear", "depth", "confidence"):
            assert_bits_equal(getattr(got, field), getattr(want, field))
