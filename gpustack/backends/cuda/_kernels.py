"""The CUDA kernels of the ``cuda`` backend: the only code that reads ``kernels/``.

Each op family is one file, ``kernels/<family>.cu`` (plus the shared
``common.cuh``), compiled by NVRTC with ``--fmad=false --ftz=false`` for the
device's architecture, all families at once when the backend starts
(``load_modules``), and loaded from memory (``cuModuleLoadData``). NVRTC is
called directly (``nvrtc_job``, ``compile_job``), not through
``cupy.RawModule(code=...)``: CuPy appends ``-ftz=true`` to every compilation
it does, and the last option wins, so denormal inputs and results would be
flushed to zero on the GPU but kept by the Numba twins. The compiled images
are cached in CuPy's kernel cache folder (``CUPY_CACHE_DIR``), named by a hash
of the source, the options, the NVRTC version and ``CACHE_FORMAT``; a cached
cubin is used only when it is as long as its ELF header says (``_elf``).

Every kernel has one typed wrapper, ``plan_<op>(...)``: it validates the
arrays (dtype, C-contiguity, shapes), casts the scalars to the kernel's C types
(``np.int32``, ``np.float32``, and ``np.int32``/``np.int64`` for
``gs_index_t``) and computes the grid and block. It returns a ``Launch`` and
needs neither CuPy nor a GPU, so ``tests/test_kernels_cuda_emulated.py`` runs
exactly these plans through the g++ emulation of the same ``.cu`` files.
``launch(plan, stream)`` runs a plan on the GPU.

Index type: flat indices are ``int`` while every array has fewer than 2**31
elements, else ``long long`` (a second specialisation, ``GS_INDEX_T``).
Rows, columns and channels are ``int``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, InputError, KernelCompileError, KernelLaunchError
from . import _elf

logger = logging.getLogger(__name__)

#: kernels/<family>.cu -> the kernels it defines (each has a plan_/launch wrapper below)
FAMILIES = {
    "convert": ("gs_convert_lut_u8", "gs_convert_lut_u16", "gs_convert_f32"),
    "warp": ("gs_warp_lut_u8", "gs_warp_lut_u16", "gs_warp_f32", "gs_warp_planar_f32"),
    "pyramid": ("gs_pyramid_reduce", "gs_pyramid_expand_sub", "gs_pyramid_expand_add", "gs_pyramid_laplacian"),
    "fuse": ("gs_fuse_sqsum", "gs_fuse_select", "gs_fuse_accumulate", "gs_fuse_divide"),
    "filter": ("gs_filter_box_rows", "gs_filter_box_cols"),
    "depth": ("gs_depth_track", "gs_depth_finalize", "gs_depth_weight", "gs_depth_ratio", "gs_depthmap_accumulate",
              "gs_depthmap_blend"),
    "encode": ("gs_encode_lut_u8", "gs_encode_lut_u16"),
    "soft": ("gs_soft_score", "gs_soft_fold", "gs_soft_finish", "gs_soft_contrast"),
    "develop": ("gs_develop_bilinear", "gs_develop_mhc", "gs_develop_rcd_normalise", "gs_develop_rcd_vh",
                "gs_develop_rcd_green", "gs_develop_rcd_pq", "gs_develop_rcd_rb", "gs_develop_rcd_rb_at_green",
                "gs_develop_rcd_finish"),
}
KERNEL_FAMILY = {name: family for family, names in FAMILIES.items() for name in names}

#: the two specialisations of gs_index_t (kernels/common.cuh)
INDEX_TYPES = ("int", "long long")
_INDEX_DTYPE = {"int": np.int32, "long long": np.int64}
INT32_LIMIT = 2**31

BLOCK_2D = (32, 8, 1)  # 2-D kernels: x over columns, y over rows, grid z over channels
BLOCK_1D = (128, 1, 1)  # 1-D kernels: one thread per pixel or element
_GRID_YZ_LIMIT = 65535
_GRID_X_LIMIT = 2**31 - 1
_FRAME_INDEX_LIMIT = 2**24  # frame indices travel as float32, exact below this
MAX_CHANNELS = 8  # convert and warp: the gains travel as eight float scalars (GS_MAX_CHANNELS)

F32, U8, U16 = np.dtype(np.float32), np.dtype(np.uint8), np.dtype(np.uint16)


# ---------------------------------------------------------------------------------------------
# Kernel sources


def kernel_dir() -> Path:
    """The folder of the ``.cu`` sources: ``$GPUSTACK_KERNEL_DIR``, else the copy packaged in
    the wheel (``gpustack/kernels``), else the repository checkout's ``kernels/``."""
    env = os.environ.get("GPUSTACK_KERNEL_DIR")
    if env:
        path = Path(env)
        if not (path / "common.cuh").is_file():
            raise BackendUnavailableError(f"GPUSTACK_KERNEL_DIR={env} holds no common.cuh; point it at the "
                                          f"kernels/ folder of gpustack, or unset it")
        return path
    tried = []
    try:
        packaged = importlib.resources.files("gpustack") / "kernels"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - gpustack always importable here
        packaged = None
    if isinstance(packaged, Path):
        tried.append(str(packaged))
        if (packaged / "common.cuh").is_file():
            return packaged
    checkout = Path(__file__).resolve().parents[3] / "kernels"
    tried.append(str(checkout))
    if (checkout / "common.cuh").is_file():
        return checkout
    raise BackendUnavailableError(f"the CUDA kernel sources are missing (looked in {', '.join(tried)}); "
                                  f"reinstall gpustack or set GPUSTACK_KERNEL_DIR to its kernels/ folder")


def nvrtc_options(kdir: Path) -> tuple[str, ...]:
    """NVRTC options of every module (the parity contract): no fused multiply-add, denormals
    kept, IEEE division."""
    return ("--std=c++17", "--fmad=false", "--ftz=false", "--prec-div=true", f"-I{kdir}")


def module_source(family: str, index_t: str, kdir: Path | None = None) -> str:
    """The code handed to NVRTC for ``kernels/<family>.cu`` with ``gs_index_t`` = ``index_t``.

    The first line carries a hash of the headers: the disk cache is keyed by this text
    and the options only, so an edit of ``common.cuh`` must change the text.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}; expected one of {', '.join(FAMILIES)}")
    if index_t not in INDEX_TYPES:
        raise ValueError(f"unknown index type {index_t!r}; expected one of {INDEX_TYPES}")
    kdir = kernel_dir() if kdir is None else kdir
    digest = hashlib.sha256()
    for header in sorted(kdir.glob("*.cuh")):
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    source = (kdir / f"{family}.cu").read_text()
    return (f"// gpustack kernels/{family}.cu, index type {index_t}, headers {digest.hexdigest()[:16]}\n"
            f"#define GS_INDEX_T {index_t}\n"
            f'#line 1 "{family}.cu"\n' + source)


def _nvrtc():
    """CuPy's NVRTC binding with the library loaded; ``BackendUnavailableError`` naming what to
    install where it cannot be loaded."""
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # CuPy missing, or libnvrtc not found
        raise BackendUnavailableError(f"CUDA backend unavailable: {nvrtc_problem(exc)}; run with --backend cpu"
                                      ) from exc
    return nvrtc


def nvrtc_problem(exc: BaseException) -> str:
    return f"NVRTC cannot be loaded ({type(exc).__name__}: {exc}); {install_hint()}"


def install_hint() -> str:
    """What to install for the CUDA backend, for the CUDA major version of the installed CuPy."""
    major = None
    try:
        import cupy

        major = cupy.cuda.runtime.runtimeGetVersion() // 1000
    except Exception:  # noqa: BLE001 - no CuPy, or no runtime: name both
        pass
    if major in (12, 13):
        return f"pip install 'gpustack[cuda{major}]' (CuPy >= 14 and the NVRTC of CUDA {major})"
    return "pip install 'gpustack[cuda13]' (CUDA 13 driver) or 'gpustack[cuda12]' (CUDA 12 driver)"


@dataclass(frozen=True)
class NvrtcJob:
    """One NVRTC compilation: the source, the options, what it yields, and its cache key."""

    family: str
    index_t: str
    code: str
    options: tuple[str, ...]
    kind: str  # "cubin" or "ptx"
    key: str


#: part of every cache key: bump it when what is stored changes (2: whole cubins; the cubins
#: cached by format 1 were one byte short)
CACHE_FORMAT = 2


def nvrtc_job(family: str, index_t: str, arch: int, *, kind: str | None = None,
              kdir: Path | None = None) -> NvrtcJob:
    """How to compile ``kernels/<family>.cu`` for compute capability ``arch`` (e.g. 90): a cubin
    when this NVRTC knows the architecture, else PTX for the newest one it knows (the driver
    compiles it); ``kind="ptx"`` forces PTX. Needs NVRTC, not a GPU."""
    nvrtc = _nvrtc()
    kdir = kernel_dir() if kdir is None else kdir
    code = module_source(family, index_t, kdir)
    supported = [a for a in nvrtc.getSupportedArchs() if a <= arch]
    if not supported:
        raise BackendUnavailableError(f"CUDA backend unavailable: this NVRTC cannot compile for compute "
                                      f"capability {arch / 10:.1f}; run with --backend cpu")
    if kind is None:
        kind = "cubin" if arch in supported else "ptx"
    arch_option = f"-arch=sm_{arch}" if kind == "cubin" else f"-arch=compute_{max(supported)}"
    options = (*nvrtc_options(kdir), arch_option)
    key = hashlib.sha256("\0".join([code, *options, str(nvrtc.getVersion()), f"format {CACHE_FORMAT}"])
                         .encode()).hexdigest()[:32]
    return NvrtcJob(family, index_t, code, options, kind, key)


def compile_job(job: NvrtcJob) -> bytes:
    """The cubin or PTX of ``job``, whole; a compile error raises ``KernelCompileError`` with NVRTC's log.
    Releases the GIL while NVRTC compiles, so several jobs compile at once on threads."""
    nvrtc = _nvrtc()
    prog = nvrtc.createProgram(job.code, f"{job.family}.cu", [], [])
    try:
        try:
            nvrtc.compileProgram(prog, list(job.options))
        except nvrtc.NVRTCError as exc:
            raise KernelCompileError(f"kernels/{job.family}.cu (index type {job.index_t}) failed to compile "
                                     f"with NVRTC ({exc}):\n{nvrtc.getProgramLog(prog)}") from exc
        if job.kind == "ptx":
            return nvrtc.getPTX(prog)
        return _whole_cubin(nvrtc.getCUBIN(prog), job)
    finally:
        nvrtc.destroyProgram(prog)


def _whole_cubin(image: bytes, job: NvrtcJob) -> bytes:
    """``image`` padded back to the length its ELF header declares: CuPy's ``getCUBIN`` drops the
    image's last byte (a 0), as if it ended a C string (every CuPy from 13.0 to 14.2)."""
    try:
        missing = _elf.image_size(image) - len(image)
    except _elf.ElfError as exc:
        raise KernelCompileError(f"kernels/{job.family}.cu (index type {job.index_t}): NVRTC returned no "
                                 f"usable cubin ({exc})") from exc
    if not 0 <= missing <= 1:
        raise KernelCompileError(f"kernels/{job.family}.cu (index type {job.index_t}): the cubin is {len(image)} "
                                 f"bytes but declares {len(image) + missing}")
    return image + b"\0" * missing


def _cache_dir() -> Path | None:
    """CuPy's kernel cache folder (``CUPY_CACHE_DIR``, else ``~/.cupy/kernel_cache``); None where
    there is no home to put it in."""
    env = os.environ.get("CUPY_CACHE_DIR")
    if env:
        return Path(env)
    try:
        return Path.home() / ".cupy" / "kernel_cache"
    except RuntimeError:  # no HOME and no passwd entry
        return None


def _usable(image: bytes, kind: str) -> bool:
    """Whether a cached ``image`` is whole (a cubin as long as it declares; PTX text)."""
    if kind == "ptx":
        return image.startswith(b"//") and b"\0" not in image
    try:
        _elf.check_whole(image)
    except _elf.ElfError:
        return False
    return True


def module_image(job: NvrtcJob) -> bytes:
    """The compiled image of ``job``: from the disk cache when a whole one is there, else compiled
    now and stored (atomically; silently not stored where the cache folder is not writable).
    Compiling all eight families takes about 1 s of one core (NVRTC 13.5, 2-core EPYC); a
    cached load, a few milliseconds."""
    folder = _cache_dir()
    path = None if folder is None else folder / f"gpustack_{job.family}_{job.key}.{job.kind}"
    if path is not None:
        try:
            image = path.read_bytes()
        except OSError:
            pass
        else:
            if _usable(image, job.kind):
                return image
            logger.info("kernel cache: %s is damaged; compiling it again", path)
    image = compile_job(job)
    if path is not None:
        staged = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            staged.write_bytes(image)
            os.replace(staged, path)  # atomic: a concurrent process sees all of it or nothing
        except OSError as exc:
            logger.debug("kernel cache: cannot store %s (%s); compiled in memory only", path, exc)
            with contextlib.suppress(OSError):
                staged.unlink()
    return image


def _load(job: NvrtcJob, image: bytes):
    """``{kernel: cupy.cuda.function.Function}`` of ``image`` loaded on the current device, from
    memory (``cuModuleLoadData``; PTX NUL-terminated as the driver reads it)."""
    from cupy.cuda.function import Module

    module = Module()
    try:
        module.load(image + b"\0" if job.kind == "ptx" else image)
        return {name: module.get_function(name) for name in FAMILIES[job.family]}
    except Exception as exc:  # noqa: BLE001 - CUDADriverError and the like: the driver refused the image
        hint = ("the driver is older than this NVRTC and cannot compile its PTX; update the driver or "
                "install the CuPy/NVRTC of the driver's CUDA version" if job.kind == "ptx" else "")
        raise BackendUnavailableError(f"CUDA backend unavailable: the driver could not load kernels/{job.family}.cu "
                                      f"(index type {job.index_t}, {job.kind}, {' '.join(job.options[-1:])}): "
                                      f"{type(exc).__name__}: {exc}; {hint + '; ' if hint else ''}"
                                      f"run with --backend cpu") from exc


_loaded: dict[tuple[int, str], dict] = {}  # (device id, index type) -> {kernel: Function}
_loading = threading.Lock()


def load_modules(index_t: str = "int") -> dict:
    """Every kernel of every family for ``index_t`` on the current device, compiled (several at
    once, on threads) or taken from the cache, and loaded; once per device and index type.
    The cuda backend calls it when it starts, so that a missing NVRTC, a compile error or an
    image the driver refuses stops the run before its first frame."""
    import cupy

    device = cupy.cuda.Device()
    with _loading:
        key = (device.id, index_t)
        if key not in _loaded:
            arch = int(device.compute_capability)
            jobs = [nvrtc_job(family, index_t, arch) for family in FAMILIES]
            with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
                images = list(pool.map(module_image, jobs))
            kernels = {}
            for job, image in zip(jobs, images):
                kernels.update(_load(job, image))
            _loaded[key] = kernels
        return _loaded[key]


# ---------------------------------------------------------------------------------------------
# Launch plans


@dataclass(frozen=True)
class Launch:
    """One kernel launch: what to run, on which grid, with which typed arguments."""

    kernel: str
    index_t: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple

    @property
    def family(self) -> str:
        return KERNEL_FAMILY[self.kernel]


def _check(a, name: str, dtype, shape=None, ndim=None):
    """Raise unless ``a`` is a C-contiguous array of ``dtype`` (and ``shape`` or ``ndim``)."""
    if not hasattr(a, "dtype") or not hasattr(a, "flags"):
        raise TypeError(f"{name}: expected an array; got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected a {np.dtype(dtype).name} array; got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions; got shape {tuple(a.shape)}")
    if shape is not None and tuple(a.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}; got {tuple(a.shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (use ascontiguousarray)")


def _index_type(*arrays) -> str:
    """``int`` while every array has fewer than 2**31 elements, else ``long long``."""
    return "long long" if max(a.size for a in arrays) >= INT32_LIMIT else "int"


def _grid_2d(w: int, h: int, c: int = 1) -> tuple[int, int, int]:
    bx, by, _ = BLOCK_2D
    grid = (-(-w // bx), -(-h // by), c)
    if grid[1] > _GRID_YZ_LIMIT or grid[2] > _GRID_YZ_LIMIT or grid[0] > _GRID_X_LIMIT:
        raise InputError(f"a {c}x{h}x{w} plane is too large for the CUDA kernels' grid (at most "
                         f"{_GRID_YZ_LIMIT * by} rows and {_GRID_YZ_LIMIT} channels); run with --backend cpu")
    return grid


def _grid_1d(n: int) -> tuple[int, int, int]:
    grid = (-(-n // BLOCK_1D[0]), 1, 1)
    if grid[0] > _GRID_X_LIMIT:
        raise InputError(f"{n} elements are too many for one CUDA launch; run with --backend cpu")
    return grid


def _radius(r) -> np.int32:
    if int(r) != r or r < 0:
        raise ValueError(f"r: expected a radius >= 0; got {r}")
    return np.int32(r)


def _i32(*values):
    return tuple(np.int32(v) for v in values)


def plan_convert_lut_u8(src, lut, dst, gains=None) -> Launch:
    """``dst`` (C, H, W) float32 = ``gains * lut[src]``, ``src`` (H, W, C) uint8, ``lut`` float32 of 256."""
    return _plan_convert_lut(src, lut, dst, gains, U8, "gs_convert_lut_u8")


def plan_convert_lut_u16(src, lut, dst, gains=None) -> Launch:
    """``dst`` (C, H, W) float32 = ``gains * lut[src]``, ``src`` (H, W, C) uint16, ``lut`` float32 of 65536."""
    return _plan_convert_lut(src, lut, dst, gains, U16, "gs_convert_lut_u16")


def _gains8(gains, c):
    """The C host gains (None: ones) as the eight float scalars the kernels take (1 for the
    channels beyond C)."""
    from ..cpu.convert import gains_or_ones

    g8 = np.ones(MAX_CHANNELS, np.float32)
    g8[:c] = gains_or_ones(gains, c)
    return tuple(g8)


def _plan_convert_lut(src, lut, dst, gains, dtype, kernel) -> Launch:
    _check(src, "src", dtype, ndim=3)
    h, w, c = src.shape
    _check(lut, "lut", F32, shape=(np.iinfo(dtype).max + 1,))
    _check(dst, "dst", F32, shape=(c, h, w))
    return Launch(kernel, _index_type(src, dst), _grid_1d(h * w), BLOCK_1D,
                  (src, lut, dst, *_i32(h, w, c), *_gains8(gains, c)))


def plan_convert_f32(src, dst, gains=None) -> Launch:
    """``dst`` (C, H, W) float32 = ``gains * src`` (H, W, C) float32, transposed."""
    _check(src, "src", F32, ndim=3)
    h, w, c = src.shape
    _check(dst, "dst", F32, shape=(c, h, w))
    return Launch("gs_convert_f32", _index_type(src, dst), _grid_1d(h * w), BLOCK_1D,
                  (src, dst, *_i32(h, w, c), *_gains8(gains, c)))


def plan_warp_lut_u8(src, lut, affine, gains, dst) -> Launch:
    """``dst`` (C, OH, OW) = ``lut[src]`` (H, W, C) uint8 resampled at ``affine``, times ``gains``."""
    return _plan_warp(src, lut, affine, gains, dst, U8, "gs_warp_lut_u8")


def plan_warp_lut_u16(src, lut, affine, gains, dst) -> Launch:
    """``dst`` (C, OH, OW) = ``lut[src]`` (H, W, C) uint16 resampled at ``affine``, times ``gains``."""
    return _plan_warp(src, lut, affine, gains, dst, U16, "gs_warp_lut_u16")


def plan_warp_f32(src, affine, gains, dst) -> Launch:
    """``dst`` (C, OH, OW) = ``src`` (H, W, C) float32 resampled at ``affine``, times ``gains``."""
    return _plan_warp(src, None, affine, gains, dst, F32, "gs_warp_f32")


def plan_warp_planar_f32(src, affine, gains, dst) -> Launch:
    """``dst`` (C, OH, OW) = ``src`` (C, H, W) planar float32 resampled at ``affine``, times ``gains``."""
    return _plan_warp(src, None, affine, gains, dst, F32, "gs_warp_planar_f32", planar=True)


def _plan_warp(src, lut, affine, gains, dst, dtype, kernel, planar=False) -> Launch:
    """``affine``: the (2, 3) float64 matrix (6 values) mapping output (col, row, 1) to source
    (col, row); ``gains``: C float32 (host values: they travel as kernel arguments)."""
    _check(src, "src", dtype, ndim=3)
    if planar:
        c, h, w = src.shape
    else:
        h, w, c = src.shape
    if lut is not None:
        _check(lut, "lut", F32, shape=(np.iinfo(dtype).max + 1,))
    _check(dst, "dst", F32, ndim=3)
    if dst.shape[0] != c:
        raise ValueError(f"dst: expected {c} channels (the source's); got shape {tuple(dst.shape)}")
    _, oh, ow = dst.shape
    a = np.asarray(affine, dtype=np.float64).reshape(-1)
    if a.size != 6:
        raise ValueError(f"affine: expected a (2, 3) matrix; got {np.shape(affine)}")
    arrays = (src, dst) if lut is None else (src, lut, dst)
    return Launch(kernel, _index_type(src, dst), _grid_2d(ow, oh), BLOCK_2D,
                  (*arrays, *_i32(h, w, c, oh, ow), *a.astype(np.float64), *_gains8(gains, c)))


def plan_pyramid_reduce(src, dst) -> Launch:
    """``dst`` (C, (H+1)//2, (W+1)//2) = blur-and-decimate of ``src`` (C, H, W)."""
    _check(src, "src", F32, ndim=3)
    c, h, w = src.shape
    oh, ow = (h + 1) // 2, (w + 1) // 2
    _check(dst, "dst", F32, shape=(c, oh, ow))
    return Launch("gs_pyramid_reduce", _index_type(src, dst), _grid_2d(ow, oh, c), BLOCK_2D,
                  (src, dst, *_i32(h, w, oh, ow)))


def plan_pyramid_expand_sub(fine, coarse) -> Launch:
    """In place: ``fine`` (C, H, W) -= expand(``coarse`` (C, (H+1)//2, (W+1)//2))."""
    return _plan_expand(fine, coarse, "gs_pyramid_expand_sub")


def plan_pyramid_expand_add(fine, coarse) -> Launch:
    """In place: ``fine`` (C, H, W) += expand(``coarse`` (C, (H+1)//2, (W+1)//2))."""
    return _plan_expand(fine, coarse, "gs_pyramid_expand_add")


def _plan_expand(fine, coarse, kernel) -> Launch:
    _check(fine, "fine", F32, ndim=3)
    c, h, w = fine.shape
    hc, wc = (h + 1) // 2, (w + 1) // 2
    _check(coarse, "coarse", F32, shape=(c, hc, wc))
    return Launch(kernel, _index_type(fine, coarse), _grid_2d(w, h, c), BLOCK_2D, (fine, coarse, *_i32(h, w, hc, wc)))


def plan_pyramid_laplacian(fine, coarse, out) -> Launch:
    """``out`` (C, H, W) = ``fine`` (C, H, W) - expand(``coarse`` (C, (H+1)//2, (W+1)//2))."""
    _check(fine, "fine", F32, ndim=3)
    c, h, w = fine.shape
    hc, wc = (h + 1) // 2, (w + 1) // 2
    _check(coarse, "coarse", F32, shape=(c, hc, wc))
    _check(out, "out", F32, shape=(c, h, w))
    return Launch("gs_pyramid_laplacian", _index_type(fine, coarse, out), _grid_2d(w, h, c), BLOCK_2D,
                  (fine, coarse, out, *_i32(h, w, hc, wc)))


def plan_fuse_sqsum(lap, q) -> Launch:
    """``q`` (H, W) = sum over channels of ``lap`` (C, H, W) squared."""
    _check(lap, "lap", F32, ndim=3)
    c, h, w = lap.shape
    _check(q, "q", F32, shape=(h, w))
    return Launch("gs_fuse_sqsum", _index_type(lap, q), _grid_1d(h * w), BLOCK_1D, (lap, q, *_i32(h, w, c)))


def plan_fuse_select(lap, rowbox, best_lap, best_e, r) -> Launch:
    """Where the column box sum of ``rowbox`` beats ``best_e``, take it and ``lap`` into ``best_lap``."""
    _check(lap, "lap", F32, ndim=3)
    c, h, w = lap.shape
    _check(rowbox, "rowbox", F32, shape=(h, w))
    _check(best_lap, "best_lap", F32, shape=(c, h, w))
    _check(best_e, "best_e", F32, shape=(h, w))
    return Launch("gs_fuse_select", _index_type(lap, best_lap), _grid_2d(w, h), BLOCK_2D,
                  (lap, rowbox, best_lap, best_e, *_i32(h, w, c), _radius(r)))


def plan_fuse_accumulate(acc, g) -> Launch:
    """In place: ``acc += g`` (both (C, H, W))."""
    _check(g, "g", F32, ndim=3)
    _check(acc, "acc", F32, shape=g.shape)
    index_t = _index_type(acc, g)
    return Launch("gs_fuse_accumulate", index_t, _grid_1d(g.size), BLOCK_1D,
                  (acc, g, _INDEX_DTYPE[index_t](g.size)))


def plan_fuse_divide(acc, n, out) -> Launch:
    """``out = acc / n`` (both (C, H, W)), ``n`` a float32 scalar."""
    _check(acc, "acc", F32, ndim=3)
    _check(out, "out", F32, shape=acc.shape)
    index_t = _index_type(acc, out)
    return Launch("gs_fuse_divide", index_t, _grid_1d(acc.size), BLOCK_1D,
                  (acc, out, _INDEX_DTYPE[index_t](acc.size), np.float32(n)))


def plan_filter_box_rows(src, dst, r) -> Launch:
    """``dst`` (H, W) = box sums of ``src`` (H, W) along rows, radius ``r``."""
    return _plan_box(src, dst, r, "gs_filter_box_rows")


def plan_filter_box_cols(src, dst, r) -> Launch:
    """``dst`` (H, W) = box sums of ``src`` (H, W) down columns, radius ``r``."""
    return _plan_box(src, dst, r, "gs_filter_box_cols")


def _plan_box(src, dst, r, kernel) -> Launch:
    _check(src, "src", F32, ndim=2)
    h, w = src.shape
    _check(dst, "dst", F32, shape=(h, w))
    return Launch(kernel, _index_type(src), _grid_2d(w, h), BLOCK_2D, (src, dst, *_i32(h, w), _radius(r)))


def _plan_pixels(kernel, planes: dict, head: tuple, tail: tuple, images: dict | None = None) -> Launch:
    """A 1-D launch over the pixels of the (H, W) ``planes`` and the (C, H, W) ``images`` (the
    caller checked the first image's dimensions). Arguments: the ``head`` arrays, n = H * W
    as gs_index_t, the ``tail`` scalars."""
    names = list(planes)
    first = planes[names[0]]
    _check(first, names[0], F32, ndim=2)
    for name in names[1:]:
        _check(planes[name], name, F32, shape=first.shape)
    arrays = list(planes.values())
    if images:
        c = next(iter(images.values())).shape[0]
        for name, image in images.items():
            _check(image, name, F32, shape=(c, *first.shape))
            arrays.append(image)
    index_t = _index_type(*arrays)
    return Launch(kernel, index_t, _grid_1d(first.size), BLOCK_1D, (*head, _INDEX_DTYPE[index_t](first.size), *tail))


def plan_depth_track(rowbox, best_s, prev_s, best_k, prev_of_best, next_of_best, sum_s, r, k, side) -> Launch:
    """Fold frame ``k``'s scores (column box sums of ``rowbox``) into the six (H, W) depth-state planes;
    ``prev_s`` holds frame k-1's scores (``side`` 1), frame k+1's (``side`` -1) or nothing (0)."""
    _check(rowbox, "rowbox", F32, ndim=2)
    h, w = rowbox.shape
    planes = {"best_s": best_s, "prev_s": prev_s, "best_k": best_k, "prev_of_best": prev_of_best,
              "next_of_best": next_of_best, "sum_s": sum_s}
    for name, plane in planes.items():
        _check(plane, name, F32, shape=(h, w))
    if int(k) != k or not 0 <= k < _FRAME_INDEX_LIMIT:
        raise ValueError(f"k: expected a frame index in [0, {_FRAME_INDEX_LIMIT}); got {k}")
    if side not in (-1, 0, 1):
        raise ValueError(f"side: expected -1, 0 or 1; got {side}")
    return Launch("gs_depth_track", _index_type(rowbox), _grid_2d(w, h), BLOCK_2D,
                  (rowbox, *planes.values(), *_i32(h, w), _radius(r), np.float32(k), np.int32(side)))


def plan_depth_finalize(best_s, best_k, prev_of_best, next_of_best, sum_s, n, depth, conf) -> Launch:
    """Depth = best frame + parabola offset; confidence = (best - mean) / best (all (H, W))."""
    planes = {"best_s": best_s, "best_k": best_k, "prev_of_best": prev_of_best, "next_of_best": next_of_best,
              "sum_s": sum_s, "depth": depth, "conf": conf}
    return _plan_pixels("gs_depth_finalize", planes, tuple(planes.values()), (np.float32(n),))


def plan_depth_weight(depth, conf, num) -> Launch:
    """``num = depth * conf`` (all (H, W))."""
    planes = {"depth": depth, "conf": conf, "num": num}
    return _plan_pixels("gs_depth_weight", planes, tuple(planes.values()), ())


def plan_depth_ratio(num, den, fallback, out) -> Launch:
    """``out = num / den`` where ``den > 0``, else ``fallback`` (all (H, W))."""
    planes = {"num": num, "den": den, "fallback": fallback, "out": out}
    return _plan_pixels("gs_depth_ratio", planes, tuple(planes.values()), ())


def plan_depthmap_accumulate(frame, depth, acc, k) -> Launch:
    """``acc += max(0, 1 - |depth - k|) * frame`` (``frame``, ``acc`` (C, H, W); ``depth`` (H, W))."""
    _check(frame, "frame", F32, ndim=3)
    return _plan_pixels("gs_depthmap_accumulate", {"depth": depth}, (frame, depth, acc),
                        (np.int32(frame.shape[0]), np.float32(k)), {"frame": frame, "acc": acc})


def plan_depthmap_blend(acc, pyr, conf, lo, inv_width, out) -> Launch:
    """``out = pyr + m * (acc - pyr)``, ``m = clip((conf - lo) * inv_width, 0, 1)``."""
    _check(acc, "acc", F32, ndim=3)
    return _plan_pixels("gs_depthmap_blend", {"conf": conf}, (acc, pyr, conf, out),
                        (np.int32(acc.shape[0]), np.float32(lo), np.float32(inv_width)),
                        {"acc": acc, "pyr": pyr, "out": out})


def _score_inputs(coarse, coarse_score, out):
    """The dtypes of a level's score inputs (``check_soft_score`` checked their shapes), and what the
    kernel gets for ``coarse_score``: ``coarse`` stands in (not read) when it is None."""
    _check(coarse, "coarse", F32, ndim=3)
    _check(out, "out", F32, ndim=2)
    if coarse_score is None:
        return coarse
    _check(coarse_score, "coarse_score", F32, ndim=2)
    return coarse_score


def plan_soft_score(fine, coarse, coarse_score, r, out) -> Launch:
    """``out`` (H, W) = the focus score of a level: box sums (radius ``r``) of the squared
    Laplacian coefficients ``fine - expand(coarse)`` summed over channels (``fine`` (C, H, W),
    ``coarse`` (C, (H+1)//2, (W+1)//2)), plus ``expand(coarse_score)`` unless it is None."""
    from ..cpu.soft import check_soft_score

    _check(fine, "fine", F32, ndim=3)
    check_soft_score(fine, coarse, coarse_score, r, out)
    c, h, w = fine.shape
    return Launch("gs_soft_score", _index_type(fine, coarse, out), _grid_2d(w, h), BLOCK_2D,
                  (fine, coarse, _score_inputs(coarse, coarse_score, out), out, *_i32(h, w, c), _radius(r),
                   np.int32(coarse_score is not None)))


def plan_soft_fold(frame, coarse, coarse_score, focus, r, score, max_s, den, depth_den, depth_num, sum_s, acc, acc_lap,
                   k, floor, dshift, power, dpower, rmin, spare=None) -> Launch:
    """Score frame ``k`` into ``score`` (H, W) (``plan_soft_score``'s score of ``frame`` (C, H, W) and its
    next level ``coarse``, on channel ``focus`` or every channel (None), radius ``r``, plus
    ``expand(coarse_score)`` unless None) and fold it into the soft state: five (H, W) planes and
    two (C, H, W) sums; ``floor``, ``dshift`` and ``rmin`` float32, ``power`` and ``dpower`` ints >= 0.
    ``depth_den``, ``depth_num`` and ``sum_s`` all None: a state without the maps' sums (``spare``
    stands in for them, ``_spare``)."""
    from ..cpu.soft import check_maps, check_soft_fold

    _check(frame, "frame", F32, ndim=3)
    check_soft_fold(frame, coarse, coarse_score, focus, r, score)
    c, h, w = frame.shape
    coarse_in = _score_inputs(coarse, coarse_score, score)
    if int(k) != k or not 0 <= k < _FRAME_INDEX_LIMIT:
        raise ValueError(f"k: expected a frame index in [0, {_FRAME_INDEX_LIMIT}); got {k}")
    for name, value in (("power", power), ("dpower", dpower)):
        if int(value) != value or value < 0:
            raise ValueError(f"{name}: expected an integer >= 0; got {value}")
    maps = check_maps(depth_den, depth_num, sum_s)
    planes = {"score": score, "max_s": max_s, "den": den}
    if maps:
        planes.update(depth_den=depth_den, depth_num=depth_num, sum_s=sum_s)
    sums = () if maps else _spare(spare, 3)
    return _plan_pixels("gs_soft_fold", planes, (frame, coarse, coarse_in, *planes.values(), *sums, acc, acc_lap),
                        (*_i32(h, w, c, -1 if focus is None else focus), _radius(r), np.int32(coarse_score is not None),
                         np.int32(maps), np.float32(floor), np.float32(dshift), np.float32(k), np.int32(power),
                         np.int32(dpower), np.float32(rmin)),
                        {"frame": frame, "acc": acc, "acc_lap": acc_lap})


def _spare(spare, n: int) -> tuple:
    """``n`` one-sample float32 device arrays of ``spare`` (``SPARE_SAMPLES``, its own allocation),
    for the kernel parameters that a launch does not use (the maps' planes of a state without them):
    each its own memory, since the kernels' ``__restrict__`` pointers may not alias."""
    if spare is None:
        raise ValueError("a state without the maps' sums needs the backend's spare samples")
    _check(spare, "spare", F32, shape=(SPARE_SAMPLES,))
    return tuple(spare[i:i + 1] for i in range(n))


#: Samples of the backend's ``spare`` array (``_spare``): the most unused parameters of one launch.
SPARE_SAMPLES = 5


def plan_soft_finish(acc, acc_lap, den, depth_den, depth_num, max_s, sum_s, n, depth, conf, spare=None) -> Launch:
    """In place ``acc /= den``, ``acc_lap /= den`` ((C, H, W)); ``depth = depth_num / depth_den`` and
    the confidence (all (H, W)); ``n`` the frame count (float32). ``depth_den``, ``depth_num``,
    ``sum_s``, ``depth`` and ``conf`` all None: the means only (``spare`` stands in, ``_spare``)."""
    from ..cpu.soft import check_maps

    _check(acc, "acc", F32, ndim=3)
    maps = check_maps(depth_den, depth_num, sum_s, depth, conf)
    if maps:
        planes = {"den": den, "depth_den": depth_den, "depth_num": depth_num, "max_s": max_s, "sum_s": sum_s,
                  "depth": depth, "conf": conf}
        head = (acc, acc_lap, *planes.values())
    else:
        planes = {"den": den, "max_s": max_s}
        unused = _spare(spare, 5)
        head = (acc, acc_lap, den, *unused[:2], max_s, *unused[2:])
    return _plan_pixels("gs_soft_finish", planes, head,
                        (np.int32(acc.shape[0]), np.float32(n), np.int32(maps)), {"acc": acc, "acc_lap": acc_lap})


def plan_soft_contrast(max_s, sum_s, n, floor, out) -> Launch:
    """``out`` = (max_s - sum_s / n) / (that + floor), 0 where not positive (all (H, W))."""
    planes = {"max_s": max_s, "sum_s": sum_s, "out": out}
    return _plan_pixels("gs_soft_contrast", planes, tuple(planes.values()), (np.float32(n), np.float32(floor)))


def plan_encode_lut_u8(src, lut, dst) -> Launch:
    """``dst`` (H, W, C) uint8 = ``lut[index(src)]``, ``src`` (C, H, W) float32, ``lut`` uint8."""
    return _plan_encode(src, lut, dst, U8, "gs_encode_lut_u8")


def plan_encode_lut_u16(src, lut, dst) -> Launch:
    """``dst`` (H, W, C) uint16 = ``lut[index(src)]``, ``src`` (C, H, W) float32, ``lut`` uint16."""
    return _plan_encode(src, lut, dst, U16, "gs_encode_lut_u16")


def _plan_encode(src, lut, dst, dtype, kernel) -> Launch:
    _check(src, "src", F32, ndim=3)
    c, h, w = src.shape
    _check(lut, "lut", dtype, ndim=1)
    if not 1 <= lut.size < _FRAME_INDEX_LIMIT:
        raise ValueError(f"lut: expected 1 to {_FRAME_INDEX_LIMIT - 1} entries; got {lut.size}")
    _check(dst, "dst", dtype, shape=(h, w, c))
    index_t = _index_type(src, dst)
    return Launch(kernel, index_t, _grid_1d(h * w), BLOCK_1D,
                  (src, lut, dst, _INDEX_DTYPE[index_t](h * w), np.int32(c), np.int32(lut.size)))


def plan_develop_bilinear(mosaic, cfa, black, scale, matrix, dst) -> Launch:
    """``dst`` (3, H, W) = ``matrix`` @ bilinear demosaic of ``(mosaic - black) * scale``."""
    return plan_develop(mosaic, cfa, black, scale, matrix, "bilinear", dst)


def plan_develop_mhc(mosaic, cfa, black, scale, matrix, dst) -> Launch:
    """``dst`` (3, H, W) = ``matrix`` @ Malvar-He-Cutler demosaic of ``(mosaic - black) * scale``."""
    return plan_develop(mosaic, cfa, black, scale, matrix, "mhc", dst)


def plan_develop(mosaic, cfa, black, scale, matrix, method, dst) -> Launch:
    """``gs_develop_<method>`` (``method`` "bilinear" or "mhc"; rcd: ``plan_develop_rcd``): ``mosaic``
    (H, W) uint16 (H, W >= 2); ``cfa`` (2, 2) Bayer colour indices; ``black``, ``scale`` (2, 2) and
    ``matrix`` (3, 3) float32 host arrays (they travel as 17 float scalars); ``dst`` (3, H, W) float32."""
    if method == "rcd":
        raise ValueError("method: rcd runs in seven launches; plan it with plan_develop_rcd")
    red_row, red_col, h, w = _check_develop(mosaic, cfa, black, scale, matrix, method, dst)
    params = (*black.reshape(-1), *scale.reshape(-1), *matrix.reshape(-1))
    return Launch(f"gs_develop_{method}", _index_type(mosaic, dst), _grid_2d(w, h), BLOCK_2D,
                  (mosaic, dst, *_i32(h, w, red_row, red_col), *(np.float32(v) for v in params)))


def _check_develop(mosaic, cfa, black, scale, matrix, method, dst) -> tuple[int, int, int, int]:
    """The cpu backend's validation and messages, then the device arrays': (red_row, red_col, H, W)."""
    from ..cpu.develop import check_develop

    red_row, red_col = check_develop(mosaic, cfa, black, scale, matrix, method, dst)
    _check(mosaic, "mosaic", U16, ndim=2)
    h, w = mosaic.shape
    _check(dst, "dst", F32, shape=(3, h, w))
    return red_row, red_col, h, w


def rcd_work_shape(h: int, w: int) -> tuple[int, int, int]:
    """The (5, H + 20, W + 20) float32 work planes of an rcd development of an (H, W) mosaic
    (``RCD_PAD`` = GS_RCD_PAD of kernels/develop.cu, 10 mirrored samples a side)."""
    from ..cpu.develop import RCD_PAD

    return (5, h + 2 * RCD_PAD, w + 2 * RCD_PAD)


def plan_develop_rcd(mosaic, cfa, black, scale, matrix, work, dst) -> list[Launch]:
    """The seven launches of the RCD demosaic (kernels/develop.cu), in order: arguments as
    ``plan_develop``, plus ``work`` (``rcd_work_shape(H, W)`` float32, contents ignored)."""
    red_row, red_col, h, w = _check_develop(mosaic, cfa, black, scale, matrix, "rcd", dst)
    _check(work, "work", F32, shape=rcd_work_shape(h, w))
    _, hp, wp = work.shape
    index_t = _index_type(mosaic, dst, work)
    padded, image = _grid_2d(wp, hp), _grid_2d(w, h)
    bs = tuple(np.float32(v) for v in (*black.reshape(-1), *scale.reshape(-1)))
    m = tuple(np.float32(v) for v in matrix.reshape(-1))
    cfa_args = _i32(hp, wp, red_row, red_col)

    def on_padded(kernel, *args):
        return Launch(kernel, index_t, padded, BLOCK_2D, (work, *args))

    return [Launch("gs_develop_rcd_normalise", index_t, padded, BLOCK_2D, (mosaic, work, *_i32(h, w), *bs)),
            on_padded("gs_develop_rcd_vh", *_i32(hp, wp)),
            on_padded("gs_develop_rcd_green", *cfa_args),
            on_padded("gs_develop_rcd_pq", *cfa_args),
            on_padded("gs_develop_rcd_rb", *cfa_args),
            on_padded("gs_develop_rcd_rb_at_green", *cfa_args),
            Launch("gs_develop_rcd_finish", index_t, image, BLOCK_2D, (work, dst, *_i32(h, w), *m))]


# ---------------------------------------------------------------------------------------------
# Launching on the GPU


@dataclass(frozen=True)
class Copy2D:
    """A strided copy on the device: ``rows`` rows of ``width`` bytes, row i read at byte
    ``src_offset + i * src_pitch`` of ``src`` and written at byte ``dst_offset + i * dst_pitch``
    of ``dst`` (cudaMemcpy2DAsync's arguments, offsets relative to each array's first byte)."""

    dst: object
    dst_offset: int
    dst_pitch: int
    src: object
    src_offset: int
    src_pitch: int
    width: int
    rows: int


def plan_copy(src, dst) -> list[Copy2D]:
    """``dst[...] = src``: the same shape and dtype, C-contiguous; one flat copy (none when empty)."""
    from ..cpu._common import check_copy

    check_copy(src, dst)
    return [Copy2D(dst, 0, src.nbytes, src, 0, src.nbytes, src.nbytes, 1)] if src.nbytes else []


def plan_crop(src, row0, col0, dst) -> list[Copy2D]:
    """``dst`` (..., h, w) = ``src[..., row0:row0 + h, col0:col0 + w]`` (same dtype and leading
    dimensions, C-contiguous): one strided copy per leading index."""
    from ..cpu._common import check_crop

    check_crop(src, row0, col0, dst)
    (hs, ws), (h, w) = src.shape[-2:], dst.shape[-2:]
    size = src.dtype.itemsize
    if h == 0 or w == 0:
        return []
    return [Copy2D(dst, p * h * w * size, w * size, src, (p * hs * ws + int(row0) * ws + int(col0)) * size, ws * size,
                   w * size, h) for p in range(int(np.prod(dst.shape[:-2], dtype=np.int64)))]


def run_copy(plan: Copy2D, stream) -> None:
    """Run ``plan`` on ``stream``; asynchronous."""
    import cupy

    rt = cupy.cuda.runtime
    rt.memcpy2DAsync(plan.dst.data.ptr + plan.dst_offset, plan.dst_pitch, plan.src.data.ptr + plan.src_offset,
                     plan.src_pitch, plan.width, plan.rows, rt.memcpyDeviceToDevice, stream.ptr)


#: set to 1 to synchronise after every launch, so that a kernel that faults is named (debugging)
SYNC_ENV = "GPUSTACK_CUDA_SYNC"


def sync_requested() -> bool:
    return os.environ.get(SYNC_ENV, "0") not in ("", "0")


def launch(plan: Launch, stream, *, sync: bool = False) -> None:
    """Run ``plan`` on ``stream`` (a ``cupy.cuda.Stream``); asynchronous like any launch, unless
    ``sync``: then wait for it, so that a fault is reported with this kernel's name."""
    if 0 in plan.grid:
        return
    for arg in plan.args:
        if isinstance(arg, np.ndarray):
            raise TypeError(f"{plan.kernel}: got a NumPy array; the cuda backend needs device arrays "
                            f"(move it with be.to_device)")
    kernel = load_modules(plan.index_t)[plan.kernel]
    from cupy_backends.cuda.api.driver import CUDADriverError
    from cupy_backends.cuda.api.runtime import CUDARuntimeError

    try:
        kernel(plan.grid, plan.block, plan.args, stream=stream)
        if sync:
            stream.synchronize()
    except (CUDADriverError, CUDARuntimeError) as exc:
        raise KernelLaunchError(f"CUDA kernel {plan.kernel} (kernels/{plan.family}.cu) failed: {exc}; "
                                f"{describe(plan)}; run with --backend cpu") from exc


def describe(plan: Launch) -> str:
    """The launch in words: grid, block, index type and each argument's type (and shape)."""
    def arg(a):
        if hasattr(a, "shape") and not isinstance(a, np.generic):
            return f"{a.dtype}{list(a.shape)}"
        return f"{type(a).__name__} {a}"

    return (f"grid {plan.grid}, block {plan.block}, index type {plan.index_t}, arguments "
            f"({', '.join(arg(a) for a in plan.args)})")
