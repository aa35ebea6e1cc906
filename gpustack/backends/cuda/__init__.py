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
import inspect
import logging

import numpy as np

from ...errors import BackendUnavailableError, KernelLaunchError
from .._reuse import ReusedBuffers
from ..cpu.warp import check_warp
from . import _kernels as _k

try:
    import cupy
except Exception as _exc:  # noqa: BLE001 - missing, or a broken CUDA install (raises all sorts of things)
    cupy = None
    _CUPY_ERROR = f"{type(_exc).__name__}: {_exc}"

GIB = 2**30
_CUDA_ERROR_MEMORY_ALLOCATION = 2  # cudaErrorMemoryAllocation (a failed cudaHostAlloc, say)
logger = logging.getLogger(__name__)


class _Staging:
    """One slot of the double-buffered upload: a pinned host buffer, a device buffer, and
    the events that say when each may be overwritten (blocking events: a host wait sleeps
    instead of spinning a core the frame readers need)."""

    def __init__(self):
        self.nbytes = 0
        self.source = None     # a pinned frame being uploaded straight from (kept until ``copied``)
        self.host = None       # np.uint8 view of pinned host memory
        self._pinned = None    # the cupy.cuda.PinnedMemoryPointer that owns it
        self.dev = None        # cupy.cuda.MemoryPointer
        self.copied = cupy.cuda.Event(block=True, disable_timing=True)    # host -> device staging copy done
        self.consumed = cupy.cuda.Event(block=True, disable_timing=True)  # device staging -> result copy done

    def allocate(self, nbytes: int) -> None:
        self.host = self._pinned = self.dev = None  # the old buffers go back before the new ones are taken
        self.nbytes = 0
        self._pinned = cupy.cuda.alloc_pinned_memory(nbytes)
        self.host = np.frombuffer(self._pinned, np.uint8, nbytes)
        self.dev = cupy.cuda.alloc(nbytes)
        self.nbytes = nbytes


def _pinned_frames() -> ReusedBuffers:
    """Pinned host buffers for decoded frames (``host_buffer``), reused by exact size (``_reuse``): a
    reader that decodes into one saves the upload its host copy into the staging buffer."""
    return ReusedBuffers(cupy.cuda.pinned_memory.PinnedMemory, lambda mem: cupy.cuda.PinnedMemoryPointer(mem, 0))


def _is_pinned(a: np.ndarray) -> bool:
    """Whether ``a`` lies in pinned host memory of CuPy's (a ``host_buffer``, or a view of one)."""
    owner = a
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    return cupy is not None and isinstance(owner, cupy.cuda.PinnedMemoryPointer)


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
    compute of frame k. Nothing runs on CuPy's default stream. Every kernel module is
    compiled (or taken from the cache) and loaded when the backend starts, so a missing
    NVRTC, a compile error or an image the driver refuses stops a run before its first
    frame. Memory is plain device memory (never managed memory, which on a shared GPU
    could oversubscribe the device): a stack that does not fit stops before its first
    upload (``check_memory``). ``GPUSTACK_CUDA_SYNC=1`` waits after every launch, so that
    a kernel that faults is named.
    """

    name = "cuda"
    concurrent = False  # one compute stream: frames are loaded in turn (see Backend.concurrent)
    xp = cupy

    def __init__(self):
        if cupy is None:
            raise BackendUnavailableError(f"CUDA backend unavailable: CuPy failed to import ({_CUPY_ERROR}); "
                                          f"{_k.install_hint()}, or run with --backend cpu")
        try:
            self.device = cupy.cuda.Device()
            self.device_name = _describe_device(self.device)
            # A blocking stream: should anything reach CuPy's legacy default stream, it is ordered
            # with the kernels; nothing of ours does.
            self.stream = cupy.cuda.Stream(non_blocking=False)
            self.copy_stream = cupy.cuda.Stream(non_blocking=True)
            self._slots = [_Staging(), _Staging()]
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise BackendUnavailableError(f"CUDA backend unavailable: {exc}; run with --backend cpu") from exc
        self._next_slot = 0
        self._pinned_frames = _pinned_frames()
        self._sync = _k.sync_requested()
        self._what = "this stack"  # the frames' size in words, for the out-of-memory message
        _k.load_modules("int")

    # -- memory ---------------------------------------------------------------------------------

    def free_device_bytes(self) -> int:
        """Device memory free now: the driver's free memory plus what CuPy's pool holds unused."""
        free, _total = cupy.cuda.runtime.memGetInfo()
        return int(free + cupy.get_default_memory_pool().free_bytes())

    def check_memory(self, footprint, what: str) -> int:
        """Raise ``BackendUnavailableError`` naming the sizes unless the stack's peak memory
        (``footprint``, a ``stages.footprint.Footprint``) fits in the free device memory; load the
        64-bit-index kernels when its largest array needs them. Returns the free bytes."""
        self._what = what
        free = self.free_device_bytes()
        if footprint.peak > free:
            raise BackendUnavailableError(self._oom_message(footprint.peak, free, footprint.phase))
        if footprint.largest >= _k.INT32_LIMIT:
            _k.load_modules("long long")
        return free

    def _oom_message(self, need: int, free: int | None = None, phase: str | None = None) -> str:
        if free is None:
            free = self.free_device_bytes()
        _free, total = cupy.cuda.runtime.memGetInfo()
        peak = f" at its peak ({phase})" if phase else ""
        return (f"out of GPU memory for {self._what}: need about {need / GIB:.2f} GiB{peak}, "
                f"{free / GIB:.2f} GiB of {total / GIB:.0f} GiB free on {self.device_name.split(' (')[0]}; "
                f"run with --backend cpu, or use smaller frames, or free the GPU")

    @contextlib.contextmanager
    def _allocating(self, nbytes: int):
        """Turn a failed device or pinned-host allocation into a BackendUnavailableError that says
        what to do."""
        try:
            yield
        except cupy.cuda.memory.OutOfMemoryError as exc:
            raise BackendUnavailableError(self._oom_message(nbytes)) from exc
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            if exc.status != _CUDA_ERROR_MEMORY_ALLOCATION:
                raise
            raise BackendUnavailableError(f"out of pinned host memory for {self._what} ({nbytes / GIB:.2f} GiB "
                                          f"for an upload buffer): {exc}; run with --backend cpu, or use "
                                          f"smaller frames") from exc

    @contextlib.contextmanager
    def _checked(self, doing: str):
        """Name what was being done when the device reports an error (often an earlier kernel's fault,
        reported at the next synchronisation)."""
        try:
            yield
        except (cupy.cuda.runtime.CUDARuntimeError, cupy.cuda.driver.CUDADriverError) as exc:
            raise KernelLaunchError(f"the GPU reported an error while {doing}: {exc}; an earlier kernel may have "
                                    f"faulted: run again with {_k.SYNC_ENV}=1 to name it, or with --backend cpu"
                                    ) from exc

    def empty(self, shape, dtype):
        shape = tuple(shape) if np.ndim(shape) else (int(shape),)
        with self._allocating(int(np.prod(shape)) * np.dtype(dtype).itemsize), self.stream:
            return cupy.empty(shape, dtype=dtype)

    def full(self, shape, value, dtype):
        shape = tuple(shape) if np.ndim(shape) else (int(shape),)
        with self._allocating(int(np.prod(shape)) * np.dtype(dtype).itemsize), self.stream:
            return cupy.full(shape, value, dtype=dtype)

    # -- transfers ------------------------------------------------------------------------------

    def to_device(self, host_array):
        """A device copy of ``host_array``, owned by the caller, ready for the compute stream.

        Synchronisation (two slots used in turn, each a pinned host buffer plus a device
        staging buffer): (1) the host waits until the slot's previous host-to-device copy
        has read its pinned buffer, then copies the array into it (unless the array is itself
        in pinned memory, a ``host_buffer``: then the copy reads it directly, and the slot
        holds it until its next use, after that wait); (2) the copy stream waits
        until the compute stream has read the slot's device buffer (event ``consumed``),
        then copies host -> device staging and records ``copied``; (3) the compute stream
        waits for ``copied``, copies staging -> a fresh array from the pool (allocated on the
        compute stream, so the pool never hands its memory to anything else while kernels
        queued there still use it) and records ``consumed``. With two slots, the upload of
        frame k+1 only waits for the staging copy of frame k-1, so it runs on the copy
        engine while the kernels of frame k run; the host returns at once.
        """
        if cupy is not None and isinstance(host_array, cupy.ndarray):
            with self._allocating(host_array.nbytes), self.stream:
                return cupy.array(host_array, order="C", copy=True)
        a = np.asarray(host_array)
        if a.dtype.hasobject:
            raise TypeError(f"to_device: cannot move a {a.dtype} array to the GPU")
        with self._allocating(a.nbytes):
            with self.stream:
                out = cupy.empty(a.shape, dtype=a.dtype)
            if a.nbytes == 0:
                return out
            slot = self._slots[self._next_slot]
            self._next_slot ^= 1
            direct = _is_pinned(a) and a.flags.c_contiguous  # decoded into a host_buffer: no host copy
            with self._checked("uploading a frame"):
                if slot.nbytes < a.nbytes:
                    self.synchronize()  # nothing may still use the slot's old buffers
                    with self.stream:
                        slot.allocate(a.nbytes)
                slot.copied.synchronize()                                            # (1)
                slot.source = a if direct else None  # held until this slot's next upload has waited (1)
                if not direct:
                    np.copyto(slot.host[:a.nbytes].view(a.dtype).reshape(a.shape), a, casting="no")
                source = a.ctypes.data if direct else slot.host.ctypes.data
                self.copy_stream.wait_event(slot.consumed)                           # (2)
                cupy.cuda.runtime.memcpyAsync(slot.dev.ptr, source, a.nbytes,
                                              cupy.cuda.runtime.memcpyHostToDevice, self.copy_stream.ptr)
                slot.copied.record(self.copy_stream)
                self.stream.wait_event(slot.copied)                                  # (3)
                cupy.cuda.runtime.memcpyAsync(out.data.ptr, slot.dev.ptr, a.nbytes,
                                              cupy.cuda.runtime.memcpyDeviceToDevice, self.stream.ptr)
                slot.consumed.record(self.stream)
        return out

    def host_buffer(self, shape, dtype) -> np.ndarray:
        """A host array in pinned memory for a frame to be decoded into: ``to_device`` then
        uploads it without first copying it into its staging buffer (so the array must not be
        written once it has been passed to ``to_device``). Returned to a pool of its own when
        the array (and every view of it) is gone."""
        with self._allocating(int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize):
            return self._pinned_frames.array(shape, dtype)

    def to_host(self, array):
        """A NumPy copy of ``array``, once every op queued before has finished (synchronises).
        Always a copy into host memory of its own (``get`` with ``out``: under
        ``CUPY_ENABLE_UMP=1`` a plain ``get`` would return a view of device memory, unsynchronised)."""
        if isinstance(array, np.ndarray):
            return array
        out = np.empty(array.shape, array.dtype)
        with self._checked("copying a result to the host"):
            array.get(stream=self.stream, out=out, blocking=True)
        return out

    def synchronize(self) -> None:
        with self._checked("waiting for the GPU"):
            self.copy_stream.synchronize()
            self.stream.synchronize()

    def copy(self, src, dst) -> None:
        """``dst[...] = src`` (same shape and dtype): a device-to-device copy on the compute stream."""
        self._copy(_k.plan_copy(src, dst))

    def crop(self, src, row0, col0, dst) -> None:
        """``dst`` (..., h, w) = ``src[..., row0:row0 + h, col0:col0 + w]``: one strided copy per
        leading index (channel), on the compute stream."""
        self._copy(_k.plan_crop(src, row0, col0, dst))

    def _copy(self, plans) -> None:
        """Run ``_kernels.Copy2D`` plans on the compute stream (the one place copies reach the GPU)."""
        for plan in plans:
            _k.run_copy(plan, self.stream)
        if self._sync:
            self.synchronize()

    def _param(self, a):
        """A small parameter array (gains, an affine, a CFA pattern) as host values, wherever it is
        (None stays None)."""
        if a is None or isinstance(a, (np.ndarray, np.generic, list, tuple, int, float)):
            return None if a is None else np.asarray(a)
        return np.asarray(self.to_host(a))  # a device array

    # -- ops ------------------------------------------------------------------------------------

    def _run(self, plan) -> None:
        """Launch ``plan`` on the compute stream (the one place ops reach the GPU)."""
        _k.launch(plan, self.stream, sync=self._sync)

    def convert(self, src, lut, dst, gains=None) -> None:
        """Fill ``dst`` (C, H, W) float32 from ``src`` (H, W, C): through ``lut`` for uint8 or
        uint16 samples, copied for float32 samples (already linear); times ``gains`` (C float32,
        host values; None: 1)."""
        gains = self._param(gains)
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
        affine = np.asarray(self._param(affine), dtype=np.float64)
        gains = np.asarray(self._param(gains), dtype=np.float32)
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
        affine = np.asarray(self._param(affine), dtype=np.float64)
        gains = np.asarray(self._param(gains), dtype=np.float32)
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

    soft_score = _op(_k.plan_soft_score)

    def soft_fold(self, frame, coarse, coarse_score, focus, r, score, state, k, floor, dshift, power, dpower,
                  rmin) -> None:
        """Score frame ``k`` (``frame``, its next pyramid level ``coarse``, the next level's score) into
        ``score`` and fold it into the soft fusion's ``state`` (``stages.soft.SoftState``)."""
        self._run(_k.plan_soft_fold(frame, coarse, coarse_score, focus, r, score, state.max_s, state.den,
                                    state.depth_den, state.depth_num, state.sum_s, state.acc, state.acc_lap, k,
                                    floor, dshift, power, dpower, rmin, spare=self._spare()))

    def soft_finish(self, state, n, depth, conf) -> None:
        """The soft fusion's weighted means (in place in ``state``), depth and confidence (a state
        without the maps' sums: the means only, ``depth`` and ``conf`` None)."""
        self._run(_k.plan_soft_finish(state.acc, state.acc_lap, state.den, state.depth_den, state.depth_num,
                                      state.max_s, state.sum_s, n, depth, conf, spare=self._spare()))

    def _spare(self):
        """A few float32 samples for the kernel parameters a launch does not use (``_kernels._spare``),
        allocated on first use."""
        spare = getattr(self, "_spare_samples", None)
        if spare is None:
            spare = self._spare_samples = self.empty((_k.SPARE_SAMPLES,), np.float32)
        return spare

    def soft_contrast(self, state, n, floor, out) -> None:
        """The soft fusion's height-map confidence (``backends/cpu/soft.soft_contrast``); before ``soft_finish``."""
        self._run(_k.plan_soft_contrast(state.max_s, state.sum_s, n, floor, out))

    def develop(self, mosaic, cfa, black, scale, matrix, method, dst) -> None:
        """Develop a Bayer ``mosaic`` (H, W) uint16 into ``dst`` (3, H, W) float32: normalise with
        ``black`` and ``scale`` ((2, 2) float32 per CFA position, host values), demosaic by the
        pattern ``cfa`` ((2, 2) colour indices R=0 G=1 B=2, host values) with ``method``
        ("bilinear", "mhc" or "rcd"; rcd in seven launches through pooled work planes), apply
        ``matrix`` ((3, 3) float32, host values)."""
        params = [self._param(a) for a in (cfa, black, scale, matrix)]
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
