"""The ``cuda`` backend: CuPy arrays and the CUDA C++ kernels of ``kernels/`` (NVRTC, ``--fmad=false``).

Every op launches one kernel of ``kernels/*.cu`` (through ``_kernels``) on the
backend's compute stream, the twin of the Numba op of the ``cpu`` backend with
the same float32 arithmetic in the same order, so both give the same bits.

Only ``get_backend("cuda")`` imports this module; it imports CuPy. It also
imports without CuPy (``CudaBackend()`` then raises), so that the static checks
of the kernel sources run anywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import inspect

import numpy as np

from ...errors import BackendUnavailableError
from ..cpu._common import check_copy, check_crop
from ..cpu.warp import check_warp
from . import _kernels as _k

try:
    import cupy
except Exception as _exc:  # noqa: BLE001 - missing, or a broken CUDA install (raises all sorts of things)
    cupy = None
    _CUPY_ERROR = f"{type(_exc).__name__}: {_exc}"

GIB = 2**30
logger = logging.getLogger(__name__)
_ENCODE_LUT_BYTES = (1 << 20) * 2 + 65536 * 4  # the largest encode and decode tables


def estimate_device_bytes(channels: int, height: int, width: int, levels: int | None = None) -> int:
    """About how many bytes of device memory a stack of (height, width, channels) frames needs.

    Counts the fusion state (Gaussian pyramid, best Laplacian and energy per level, the
    running coarse sum, the energy scratch planes, the depth bookkeeping), the finishing
    planes (depth, confidence, smoothing, encoded output), the depthmap method's second
    pass, a RAW frame's rcd work planes, the frames in flight (the uploaded frame and two
    staging buffers, 4 bytes a sample at most) and the tables, plus 10 % for the memory
    pool's rounding.
    ``levels=None`` counts every level down to one pixel (an upper bound).
    """
    c, plane = channels, height * width
    shapes = [(height, width)]
    while (levels is None and shapes[-1] != (1, 1)) or (levels is not None and len(shapes) < levels):
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    all_levels = sum(h * w for h, w in shapes)
    fine_levels = all_levels - shapes[-1][0] * shapes[-1][1]
    floats = (c * all_levels          # Gaussian pyramid, turned Laplacian in place
              + c * fine_levels       # best coefficient per level
              + fine_levels           # best energy per level
              + c * shapes[-1][0] * shapes[-1][1]  # running sum of the coarsest level
              + 2 * plane             # squared sums and row box sums
              + 5 * plane             # depth bookkeeping
              + 6 * plane             # depth, confidence, smoothing planes
              + 2 * c * plane         # depthmap pass: accumulator and converted frame
              + 5 * (height + 20) * (width + 20))  # a RAW frame's rcd work planes
    frames = 3 * 4 * c * plane        # uploaded frame + two staging buffers
    encoded = 2 * c * plane           # uint16 output
    return int(1.1 * (4 * floats + frames + encoded + _ENCODE_LUT_BYTES))


class _Staging:
    """One slot of the double-buffered upload: a pinned host buffer, a device buffer, and
    the events that say when each may be overwritten."""

    def __init__(self):
        self.nbytes = 0
        self.host = None       # np.uint8 view of pinned host memory
        self._pinned = None    # the cupy.cuda.PinnedMemoryPointer that owns it
        self.dev = None        # cupy.cuda.MemoryPointer
        self.copied = cupy.cuda.Event(disable_timing=True)    # host -> device staging copy done
        self.consumed = cupy.cuda.Event(disable_timing=True)  # device staging -> result copy done

    def allocate(self, nbytes: int) -> None:
        self._pinned = cupy.cuda.alloc_pinned_memory(nbytes)
        self.host = np.frombuffer(self._pinned, np.uint8, nbytes)
        self.dev = cupy.cuda.alloc(nbytes)
        self.nbytes = nbytes


def _op(plan):
    """A backend method that runs the kernel planned by ``plan`` (a ``_kernels.plan_*``)."""

    def method(self, *args):
        self._run(plan(*args))

    method.__name__ = method.__qualname__ = plan.__name__.removeprefix("plan_")
    method.__doc__ = plan.__doc__
    sig = inspect.signature(plan)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(parameters=[self_param, *sig.parameters.values()], return_annotation=None)
    return method


class CudaBackend:
    """Every op of ``gpustack.backends.base.Backend`` on the current CUDA device.

    All work runs in order on one compute stream (``self.stream``); uploads go through a
    second stream (``self.copy_stream``) so that the copy of frame k+1 overlaps the
    compute of frame k.
    """

    name = "cuda"
    xp = cupy

    def __init__(self):
        if cupy is None:
            raise BackendUnavailableError(f"CUDA backend unavailable: CuPy failed to import ({_CUPY_ERROR}); "
                                          f"run with --backend cpu")
        try:
            self.device = cupy.cuda.Device()
            self.device_name = _describe_device(self.device)
            # A blocking stream: it also waits for work on the legacy default stream, so CuPy glue
            # run outside ``with be.stream`` still sees the kernels' results in order.
            self.stream = cupy.cuda.Stream(non_blocking=False)
            self.copy_stream = cupy.cuda.Stream(non_blocking=True)
            self._slots = [_Staging(), _Staging()]
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise BackendUnavailableError(f"CUDA backend unavailable: {exc}; run with --backend cpu") from exc
        self._next_slot = 0
        self._geometry = None  # (channels, height, width, levels) for the out-of-memory message
        self._managed = None   # a cupy MemoryPool on managed memory, once frames outgrow the device
        if os.environ.get("GPUSTACK_CUDA_MANAGED") == "1":  # force it (tests, or to leave room for others)
            self._use_managed("GPUSTACK_CUDA_MANAGED=1")

    # -- memory ---------------------------------------------------------------------------------

    def estimate_device_bytes(self, channels: int, height: int, width: int, levels: int | None = None) -> int:
        """See the module function ``estimate_device_bytes``."""
        return estimate_device_bytes(channels, height, width, levels)

    def free_device_bytes(self) -> int:
        """Device memory free now: the driver's free memory plus what CuPy's pool holds unused."""
        free, _total = cupy.cuda.runtime.memGetInfo()
        return int(free + cupy.get_default_memory_pool().free_bytes())

    def check_memory(self, channels: int, height: int, width: int, levels: int | None = None) -> int:
        """Raise ``BackendUnavailableError`` if a stack of such frames clearly does not fit;
        else return the estimate in bytes. Also names the frame size in later messages."""
        self._geometry = (channels, height, width, levels)
        need = estimate_device_bytes(channels, height, width, levels)
        free = self.free_device_bytes()
        if need > free and self._managed is None:
            host = _host_available_bytes()
            if not self._managed_supported() or need > free + host:
                raise BackendUnavailableError(self._oom_message(need, free))
            self._use_managed(f"{width}x{height} frames need about {need / GIB:.1f} GiB of GPU memory and "
                              f"{free / GIB:.1f} GiB are free")
        return need

    def _managed_supported(self) -> bool:
        rt = cupy.cuda.runtime
        attr = getattr(rt, "cudaDevAttrConcurrentManagedAccess", 89)  # 89 in every CUDA since 8.0
        try:
            return bool(rt.deviceGetAttribute(attr, self.device.id))
        except Exception:  # noqa: BLE001 - an old driver without the attribute
            return False

    def _use_managed(self, why: str) -> None:
        """Allocate from now on in CUDA managed memory: the driver pages it between host and device
        as the kernels touch it, so a stack larger than the device still runs, with the same
        kernels and the same output bytes, only slower (instead of tiles, whose pyramid halos would
        change the result). The state of a stack is allocated after ``check_memory``."""
        self._managed = cupy.cuda.MemoryPool(cupy.cuda.malloc_managed)
        logger.warning("%s: using CUDA managed memory (pages move between host and GPU as needed; "
                       "slower than fitting on the GPU, same result)", why)

    def _allocator(self):
        return (cupy.cuda.using_allocator(self._managed.malloc) if self._managed is not None
                else contextlib.nullcontext())

    def _oom_message(self, need: int, free: int | None = None) -> str:
        if free is None:
            free = self.free_device_bytes()
        if self._geometry is not None:
            c, h, w, levels = self._geometry
            need = max(need, estimate_device_bytes(c, h, w, levels))
            what = f"{w}x{h} frames"
        else:
            what = "this stack"
        return (f"out of GPU memory for {what}: need about {need / GIB:.1f} GiB, {free / GIB:.1f} GiB free; "
                f"run with --backend cpu or smaller frames")

    @contextlib.contextmanager
    def _allocating(self, nbytes: int):
        """Turn CuPy's out-of-memory error into a BackendUnavailableError that says what to do."""
        try:
            yield
        except cupy.cuda.memory.OutOfMemoryError as exc:
            raise BackendUnavailableError(self._oom_message(nbytes)) from exc

    def _note_shape(self, shape, dtype) -> None:
        # The first planar float32 image allocated is the frame (the fusion's pyramid base).
        if self._geometry is None and len(shape) == 3 and np.dtype(dtype) == np.float32:
            self._geometry = (*shape, None)

    def empty(self, shape, dtype):
        shape = tuple(shape) if np.ndim(shape) else (int(shape),)
        self._note_shape(shape, dtype)
        with self._allocating(int(np.prod(shape)) * np.dtype(dtype).itemsize), self.stream, self._allocator():
            return cupy.empty(shape, dtype=dtype)

    def full(self, shape, value, dtype):
        shape = tuple(shape) if np.ndim(shape) else (int(shape),)
        self._note_shape(shape, dtype)
        with self._allocating(int(np.prod(shape)) * np.dtype(dtype).itemsize), self.stream, self._allocator():
            return cupy.full(shape, value, dtype=dtype)

    # -- transfers ------------------------------------------------------------------------------

    def to_device(self, host_array):
        """A device copy of ``host_array``, owned by the caller, ready for the compute stream.

        Synchronisation (two slots used in turn, each a pinned host buffer plus a device
        staging buffer): (1) the host waits until the slot's previous host-to-device copy
        has read its pinned buffer, then copies the array into it; (2) the copy stream waits
        until the compute stream has read the slot's device buffer (event ``consumed``),
        then copies host -> device staging and records ``copied``; (3) the compute stream
        waits for ``copied``, copies staging -> a fresh array from the pool (allocated on the
        compute stream, so the pool never hands its memory to anything else while kernels
        queued there still use it) and records ``consumed``. With two slots, the upload of
        frame k+1 only waits for the staging copy of frame k-1, so it runs on the copy
        engine while the kernels of frame k run; the host returns at once.
        """
        if cupy is not None and isinstance(host_array, cupy.ndarray):
            with self.stream:
                return cupy.ascontiguousarray(host_array)
        a = np.asarray(host_array)
        if a.dtype.hasobject:
            raise TypeError(f"to_device: cannot move a {a.dtype} array to the GPU")
        with self._allocating(a.nbytes):
            with self.stream, self._allocator():
                out = cupy.empty(a.shape, dtype=a.dtype)
            if a.nbytes == 0:
                return out
            slot = self._slots[self._next_slot]
            self._next_slot ^= 1
            if slot.nbytes < a.nbytes:
                self.synchronize()  # nothing may still use the slot's old buffers
                with self.stream:
                    slot.allocate(a.nbytes)
            slot.copied.synchronize()                                            # (1)
            np.copyto(slot.host[:a.nbytes].view(a.dtype).reshape(a.shape), a, casting="no")
            self.copy_stream.wait_event(slot.consumed)                           # (2)
            cupy.cuda.runtime.memcpyAsync(slot.dev.ptr, slot.host.ctypes.data, a.nbytes,
                                          cupy.cuda.runtime.memcpyHostToDevice, self.copy_stream.ptr)
            slot.copied.record(self.copy_stream)
            self.stream.wait_event(slot.copied)                                  # (3)
            cupy.cuda.runtime.memcpyAsync(out.data.ptr, slot.dev.ptr, a.nbytes,
                                          cupy.cuda.runtime.memcpyDeviceToDevice, self.stream.ptr)
            slot.consumed.record(self.stream)
        return out

    def to_host(self, array):
        """A NumPy copy of ``array``, once every op queued before has finished (synchronises)."""
        if isinstance(array, np.ndarray):
            return array
        return array.get(stream=self.stream, blocking=True)

    def synchronize(self) -> None:
        self.copy_stream.synchronize()
        self.stream.synchronize()

    def copy(self, src, dst) -> None:
        """``dst[...] = src`` (same shape and dtype), a device-to-device copy on the compute stream."""
        check_copy(src, dst)
        if src.nbytes:
            cupy.cuda.runtime.memcpyAsync(dst.data.ptr, src.data.ptr, src.nbytes,
                                          cupy.cuda.runtime.memcpyDeviceToDevice, self.stream.ptr)

    def crop(self, src, row0, col0, dst) -> None:
        """``dst`` (..., h, w) = ``src[..., row0:row0 + h, col0:col0 + w]``: one strided 2-D copy per
        leading index (channel), on the compute stream."""
        check_crop(src, row0, col0, dst)
        (hs, ws), (h, w) = src.shape[-2:], dst.shape[-2:]
        size = src.dtype.itemsize
        planes = int(np.prod(dst.shape[:-2]))
        if h == 0 or w == 0:
            return
        for p in range(planes):
            s = src.data.ptr + (p * hs * ws + int(row0) * ws + int(col0)) * size
            cupy.cuda.runtime.memcpy2DAsync(dst.data.ptr + p * h * w * size, w * size, s, ws * size, w * size, h,
                                            cupy.cuda.runtime.memcpyDeviceToDevice, self.stream.ptr)

    # -- ops ------------------------------------------------------------------------------------

    def _run(self, plan) -> None:
        """Launch ``plan`` on the compute stream (the one place ops reach the GPU)."""
        _k.launch(plan, self.stream)

    def convert(self, src, lut, dst, gains=None) -> None:
        """Fill ``dst`` (C, H, W) float32 from ``src`` (H, W, C): through ``lut`` for uint8 or
        uint16 samples, copied for float32 samples (already linear); times ``gains`` (C float32,
        host values; None: 1)."""
        gains = None if gains is None else _host(gains)
        if src.dtype == np.float32:
            self._run(_k.plan_convert_f32(src, dst, gains))
        elif src.dtype == np.uint8:
            self._run(_k.plan_convert_lut_u8(src, lut, dst, gains))
        elif src.dtype == np.uint16:
            self._run(_k.plan_convert_lut_u16(src, lut, dst, gains))
        else:
            raise TypeError(f"convert: expected uint8, uint16 or float32 samples; got {src.dtype}")

    def warp(self, src, lut, affine, gains, dst) -> None:
        """Fill ``dst`` (C, H, W) float32 with ``src`` (H, W, C) resampled at ``affine`` (the (2, 3)
        float64 matrix mapping output (col, row, 1) to source (col, row); host values), times
        ``gains`` (C float32, host values); ``lut`` decodes integer samples (None for float32)."""
        affine = np.asarray(affine, dtype=np.float64)
        gains = np.asarray(_host(gains), dtype=np.float32)
        check_warp(src, gains, dst)
        if src.dtype == np.float32:
            self._run(_k.plan_warp_f32(src, affine, gains, dst))
        elif src.dtype == np.uint8:
            self._run(_k.plan_warp_lut_u8(src, lut, affine, gains, dst))
        elif src.dtype == np.uint16:
            self._run(_k.plan_warp_lut_u16(src, lut, affine, gains, dst))
        else:
            raise TypeError(f"warp: expected uint8, uint16 or float32 samples; got {src.dtype}")

    def warp_planar(self, src, affine, gains, dst) -> None:
        """``warp`` of a planar float32 source ``src`` (C, H, W) (a RAW frame ``develop`` wrote)."""
        affine = np.asarray(affine, dtype=np.float64)
        gains = np.asarray(_host(gains), dtype=np.float32)
        check_warp(src, gains, dst, planar=True)
        self._run(_k.plan_warp_planar_f32(src, affine, gains, dst))

    pyramid_reduce = _op(_k.plan_pyramid_reduce)
    pyramid_expand_sub = _op(_k.plan_pyramid_expand_sub)
    pyramid_expand_add = _op(_k.plan_pyramid_expand_add)
    pyramid_laplacian = _op(_k.plan_pyramid_laplacian)
    fuse_sqsum = _op(_k.plan_fuse_sqsum)
    fuse_select = _op(_k.plan_fuse_select)
    fuse_accumulate = _op(_k.plan_fuse_accumulate)
    fuse_divide = _op(_k.plan_fuse_divide)
    filter_box_rows = _op(_k.plan_filter_box_rows)
    filter_box_cols = _op(_k.plan_filter_box_cols)
    depth_finalize = _op(_k.plan_depth_finalize)
    depth_weight = _op(_k.plan_depth_weight)
    depth_ratio = _op(_k.plan_depth_ratio)
    depthmap_accumulate = _op(_k.plan_depthmap_accumulate)
    depthmap_blend = _op(_k.plan_depthmap_blend)

    def depth_track(self, rowbox, state, r, k, side) -> None:
        """Fold frame ``k``'s focus scores (column sums over 2r+1 rows of ``rowbox``) into the
        depth state (``stages.fuse.DepthState``); ``state.prev_s`` holds the scores of frame k-1
        (``side`` 1), of frame k+1 (``side`` -1) or nothing (``side`` 0)."""
        self._run(_k.plan_depth_track(rowbox, state.best_s, state.prev_s, state.best_k, state.prev_of_best,
                                      state.next_of_best, state.sum_s, r, k, side))

    def soft_fold(self, frame, lap, score, state, k, floor, power, rmin) -> None:
        """Fold frame ``k`` (``frame``, its finest Laplacian level ``lap``, its focus ``score``) into
        the soft fusion's ``state`` (``stages.soft.SoftState``)."""
        self._run(_k.plan_soft_fold(frame, lap, score, state.max_s, state.den, state.depth_num, state.sum_s,
                                    state.acc, state.acc_lap, k, floor, power, rmin))

    def soft_finish(self, state, n, depth, conf) -> None:
        """The soft fusion's weighted means (in place in ``state``), depth and confidence."""
        self._run(_k.plan_soft_finish(state.acc, state.acc_lap, state.den, state.depth_num, state.max_s,
                                      state.sum_s, n, depth, conf))

    def develop(self, mosaic, cfa, black, scale, matrix, method, dst) -> None:
        """Develop a Bayer ``mosaic`` (H, W) uint16 into ``dst`` (3, H, W) float32: normalise with
        ``black`` and ``scale`` ((2, 2) float32 per CFA position, host values), demosaic by the
        pattern ``cfa`` ((2, 2) colour indices R=0 G=1 B=2, host values) with ``method``
        ("bilinear", "mhc" or "rcd"; rcd in seven launches through pooled work planes), apply
        ``matrix`` ((3, 3) float32, host values)."""
        params = [_host(a) for a in (cfa, black, scale, matrix)]
        if method == "rcd":
            shape = _k.rcd_work_shape(*mosaic.shape)
            work = self.empty((int(np.prod(shape)),), np.float32).reshape(shape)  # flat: not the frame
            for plan in _k.plan_develop_rcd(mosaic, *params, work, dst):
                self._run(plan)
        else:
            self._run(_k.plan_develop(mosaic, *params, method, dst))

    def encode(self, src, lut, dst) -> None:
        """Fill ``dst`` (H, W, C) uint8/uint16 from ``src`` (C, H, W) float32 through ``lut``."""
        if dst.dtype == np.uint8:
            self._run(_k.plan_encode_lut_u8(src, lut, dst))
        elif dst.dtype == np.uint16:
            self._run(_k.plan_encode_lut_u16(src, lut, dst))
        else:
            raise TypeError(f"encode: expected a uint8 or uint16 output; got {dst.dtype}")


def _host_available_bytes() -> int:
    """Host memory available now (``MemAvailable``; 0 where unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _host(a):
    """``a`` as a NumPy array (a small parameter array that may have been moved to the device)."""
    return a.get() if cupy is not None and isinstance(a, cupy.ndarray) else a


def _describe_device(device) -> str:
    """GPU name, compute capability, memory, driver and runtime versions."""
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(device.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def version(v: int) -> str:
        return f"{v // 1000}.{v % 1000 // 10}"

    return (f"{name} (compute capability {props['major']}.{props['minor']}, "
            f"{props['totalGlobalMem'] / GIB:.0f} GiB; CUDA driver {version(rt.driverGetVersion())}, "
            f"runtime {version(rt.runtimeGetVersion())}; CuPy {cupy.__version__})")
