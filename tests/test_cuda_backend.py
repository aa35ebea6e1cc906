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
from conftest import toolchain_missing
from cuda_cases import CASES, PLAIN, WINDOWED, assert_bits_equal, make_frames, run_op, write_moving_stack

import gpustack
from gpustack.backends import cuda_status
from gpustack.backends.base import Backend
from gpustack.backends.cpu import CpuBackend
from gpustack.backends.cuda import CudaBackend
from gpustack.backends.cuda import _kernels as K
from gpustack.errors import BackendUnavailableError, InputError, KernelCompileError, KernelLaunchError

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


def test_compile_error_names_the_file(tmp_path):
    try:
        K._nvrtc()
    except BackendUnavailableError as exc:
        toolchain_missing(f"NVRTC not available: {exc}")
    copy = tmp_path / "kernels"
    shutil.copytree(K.kernel_dir(), copy)
    (copy / "filter.cu").write_text((copy / "filter.cu").read_text() + "\nthis is not C++;\n")
    job = K.nvrtc_job("filter", "int", 90, kdir=copy)
    with pytest.raises(KernelCompileError, match=r"kernels/filter\.cu \(index type int\)(.|\n)*filter\.cu\(\d+\)"):
        K.compile_job(job)


def _pretend_a_device(monkeypatch):
    cupy = pytest.importorskip("cupy")
    monkeypatch.setattr(cupy.cuda.runtime, "getDeviceCount", lambda: 1)


def test_cuda_status_needs_nvrtc_too(monkeypatch):
    """A device without NVRTC is not a usable backend: auto would otherwise pick it and die at the
    first kernel."""
    import gpustack.backends

    _pretend_a_device(monkeypatch)

    def no_nvrtc():
        try:
            raise OSError("libnvrtc.so.13: cannot open shared object file")
        except OSError as exc:
            raise BackendUnavailableError("CUDA backend unavailable: ...") from exc

    monkeypatch.setattr(K, "_nvrtc", no_nvrtc)
    ok, why = gpustack.backends.cuda_status()
    assert not ok and "NVRTC cannot be loaded" in why and "libnvrtc.so.13" in why and "pip install" in why
    with pytest.raises(BackendUnavailableError, match="NVRTC cannot be loaded.*--backend cpu"):
        gpustack.backends.get_backend("cuda")


def test_auto_uses_the_cpu_when_the_cuda_backend_cannot_start(monkeypatch, caplog):
    """auto with a device whose kernels cannot be built or loaded: a warning naming why, then the cpu."""
    import gpustack.backends
    import gpustack.backends.cuda

    monkeypatch.setattr(gpustack.backends, "cuda_status", lambda: (True, "1 CUDA device(s)"))

    def refuse():
        raise KernelCompileError("kernels/warp.cu (index type int) failed to compile with NVRTC")

    monkeypatch.setattr(gpustack.backends.cuda, "CudaBackend", refuse)
    with caplog.at_level("WARNING", logger="gpustack.backends"):
        be = gpustack.backends.get_backend("auto")
    assert be.name == "cpu"
    assert "the cuda backend cannot start: kernels/warp.cu" in caplog.text
    with pytest.raises(KernelCompileError):
        gpustack.backends.get_backend("cuda")


def _bare_backend():
    """A CudaBackend object without a device behind it, for its error paths."""
    pytest.importorskip("cupy")
    be = CudaBackend.__new__(CudaBackend)
    be._what = "6000x4000 frames with 3 channel(s)"
    return be


def test_failed_pinned_allocation_says_what_to_do():
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    be = _bare_backend()
    with pytest.raises(BackendUnavailableError, match=r"out of pinned host memory for 6000x4000 frames .*"
                                                      r"0\.13 GiB.*--backend cpu"):
        with be._allocating(144_000_000):
            raise CUDARuntimeError(2)  # cudaErrorMemoryAllocation
    with pytest.raises(CUDARuntimeError):  # anything else is not an allocation problem
        with be._allocating(144_000_000):
            raise CUDARuntimeError(700)


def test_device_errors_at_a_synchronisation_say_how_to_find_the_kernel():
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    be = _bare_backend()
    with pytest.raises(KernelLaunchError, match=r"while copying a result to the host: cudaErrorIllegalAddress.*"
                                                r"GPUSTACK_CUDA_SYNC=1"):
        with be._checked("copying a result to the host"):
            raise CUDARuntimeError(700)


class _FrameOnTheGpu:
    """What a CuPy array looks like to gpustack.stack: the CUDA array interface, no NumPy one."""

    __cuda_array_interface__ = {"shape": (16, 16), "typestr": "<u2", "data": (0, False), "version": 3}


@pytest.mark.parametrize("wrap", [lambda f: [f, f], lambda f: f, lambda f: iter([f, f])])
def test_frames_in_gpu_memory_are_an_input_error(wrap):
    with pytest.raises(InputError, match=r"_FrameOnTheGpu in GPU memory; pass frames as NumPy arrays.*asnumpy"):
        gpustack.stack(wrap(_FrameOnTheGpu()), backend="cpu")


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
def test_frames_decoded_into_host_buffers_upload_intact(cuda_be):
    """Pinned frame buffers are uploaded without a host copy and dropped at once, back to back: the
    staging slot keeps each alive until its copy is done, so the pool never hands out a buffer a
    copy is still reading."""
    from gpustack.backends.cuda import _is_pinned

    uploads = []
    for k in range(12):
        b = cuda_be.host_buffer((300, 200, 3), np.uint16)
        assert _is_pinned(b) and not _is_pinned(np.array(b))
        b[:] = k
        uploads.append(cuda_be.to_device(b[::1]))
        del b
    for k, dev in enumerate(uploads):
        got = cuda_be.to_host(dev)
        assert got.min() == got.max() == k


def test_cpu_host_buffer_is_a_plain_array():
    b = CpuBackend().host_buffer((4, 5, 3), np.uint16)
    assert b.shape == (4, 5, 3) and b.dtype == np.uint16 and b.flags.writeable and b.flags.c_contiguous


@pytest.mark.cuda
def test_out_of_memory_says_what_to_do(cuda_be):
    with pytest.raises(BackendUnavailableError, match="out of GPU memory.*--backend cpu"):
        cuda_be.empty((2**40,), np.float32)


@pytest.mark.cuda
def test_a_stack_that_does_not_fit_stops_before_allocating(cuda_be):
    """Never more than the card has free: the check refuses, naming the sizes, and takes nothing."""
    from gpustack.stages.footprint import stack_footprint

    free = cuda_be.free_device_bytes()
    side = 1024
    while stack_footprint(3, side, side, 8, frame_bytes=6 * side * side).peak < 1.5 * free:
        side *= 2
    before = cupy_free()
    with pytest.raises(BackendUnavailableError, match=rf"out of GPU memory for {side}x{side} frames: need about "
                                                       r"\d+\.\d\d GiB at its peak \(\w+\).*GiB free.*--backend cpu"):
        cuda_be.check_memory(stack_footprint(3, side, side, 8, frame_bytes=6 * side * side), f"{side}x{side} frames")
    assert abs(cupy_free() - before) < 64 * 2**20
    small = stack_footprint(3, 100, 100, 4, frame_bytes=60000)
    assert cuda_be.check_memory(small, "100x100 frames") >= small.peak


def cupy_free():
    import cupy

    return cupy.cuda.runtime.memGetInfo()[0]


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["jpeg", "tiff16", "dng"])
@pytest.mark.parametrize("method", ["soft", "pyramid", "depthmap"])
def test_stack_from_files_cuda_equals_cpu(cuda_be, tmp_path, kind, method):
    """Whole stacks from files, with motion (breathing, shift, rotation): JPEG, 16-bit TIFF and
    DNG (developed on the device), both methods: the same output bytes, written files included."""
    folder = write_moving_stack(tmp_path / "in", kind)
    results = {}
    for name in ("cpu", "cuda"):
        out = tmp_path / name
        out.mkdir()
        results[name] = gpustack.stack(folder, backend=name, method=method, output=out / "fused.tif",
                                       depth_map=out / "depth.tif")
    got, want = results["cuda"], results["cpu"]
    assert got.backend == "cuda" and any(t is not None and not np.allclose(t, np.eye(2, 3)) for t in want.transforms)
    for field in ("image", "linear", "depth", "depth_raw", "confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))
    for file in ("fused.tif", "depth.tif"):
        assert (tmp_path / "cuda" / file).read_bytes() == (tmp_path / "cpu" / file).read_bytes()


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:frame .* matched worse than no warp")
@pytest.mark.parametrize("opts", [{"per_channel": True}, {"focus_channel": "GFP", "align": "similarity"},
                                  {"method": "pyramid"}])
def test_microscopy_stack_cuda_equals_cpu(cuda_be, tmp_path, opts):
    """A 5-channel 12-bit OME-TIFF z-stack: per-channel states, a focus channel, gains for 5 channels,
    the height map's tracker and confidence; the same OME-TIFF bytes on both backends."""
    from gpustack import synth

    st = synth.make_microscopy_stack(n_planes=6, shape=(130, 170), channels=5, offsets=(0, 2, 4, 1, 3), seed=5)
    path = st.write_ome(tmp_path / "five.ome.tif")
    results = {}
    for name in ("cpu", "cuda"):
        out = tmp_path / name
        out.mkdir()
        results[name] = gpustack.stack(path, backend=name, output=out / "f.ome.tif", height_map=out / "h.ome.tif",
                                       confidence_map=out / "c.tif", **opts)
    got, want = results["cuda"], results["cpu"]
    assert got.backend == "cuda"
    for field in ("image", "linear", "depth", "confidence", "height", "height_confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))
    for file in ("f.ome.tif", "h.ome.tif", "c.tif"):
        assert (tmp_path / "cuda" / file).read_bytes() == (tmp_path / "cpu" / file).read_bytes()


@pytest.mark.cuda
def test_sync_after_every_launch_gives_the_same_bytes(cuda_be, monkeypatch):
    monkeypatch.setenv("GPUSTACK_CUDA_SYNC", "1")
    synced = CudaBackend()
    import gpustack.pipeline

    frames = make_frames(n=4, shape=(97, 131, 3), dtype=np.uint16)
    want = gpustack.stack(frames, backend="cpu", align="similarity")
    monkeypatch.setattr(gpustack.pipeline, "get_backend", lambda name: synced)
    got = gpustack.stack(frames, backend="cuda", align="similarity")
    for field in ("image", "linear", "depth", "confidence"):
        assert_bits_equal(getattr(got, field), getattr(want, field))


FAULT = """
import numpy as np, cupy
from gpustack.backends.cuda import CudaBackend, _kernels as K
from gpustack.errors import KernelLaunchError
be = CudaBackend()
acc, g = be.full((4,), 0.0, np.float32), be.full((4,), 1.0, np.float32)
n = 2**31 - 1  # far past both arrays: the kernel reads and writes memory it does not own
plan = K.Launch("gs_fuse_accumulate", "int", K._grid_1d(n), K.BLOCK_1D, (acc, g, np.int32(n)))
try:
    be._run(plan)
    be.synchronize()
except KernelLaunchError as exc:
    print("ERROR", exc)
"""


@pytest.mark.cuda
@pytest.mark.parametrize("sync", ["0", "1"])
def test_a_kernel_fault_is_reported_and_named_when_synchronised(cuda_be, sync):
    """In a child process (a fault spoils the CUDA context for good): one KernelLaunchError; with
    GPUSTACK_CUDA_SYNC=1 it names the kernel and its grid, without it it says how to find out."""
    import os

    env = dict(os.environ, GPUSTACK_CUDA_SYNC=sync, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", FAULT], capture_output=True, text=True, env=env, timeout=120)
    assert "ERROR" in out.stdout, out.stdout + out.stderr
    if sync == "1":
        assert "gs_fuse_accumulate" in out.stdout and "grid" in out.stdout
    else:
        assert "GPUSTACK_CUDA_SYNC=1" in out.stdout


@pytest.mark.cuda
def test_backend_starts_with_every_module_loaded(cuda_be):
    import cupy

    kernels = K.load_modules("int")
    assert set(kernels) == set(K.KERNEL_FAMILY)
    assert (cupy.cuda.Device().id, "int") in K._loaded


@pytest.mark.cuda
def test_device_name(cuda_be):
    assert "compute capability" in cuda_be.device_name and "driver" in cuda_be.device_name


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
