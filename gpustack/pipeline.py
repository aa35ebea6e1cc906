"""The streaming pipeline: read -> (develop, align: later stages) -> fuse -> finish -> write.

This module only schedules: it lists and reads frames (on worker threads,
bounded read-ahead), hands each to the backend, folds it into the fusion state,
and writes the results. All pixel work is in ``gpustack.stages`` (backend
neutral) and the backends' kernels.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ._version import __version__
from .backends import get_backend
from .color import decode_lut, encode_lut
from .errors import InputError
from .io import (check_outputs, list_frames, read_frame, sidecar_path, sources_from_arrays, write_depth,
                 write_image, write_sidecar)
from .options import StackOptions
from .prefetch import prefetch
from .stages.depthmap import blend_params, smooth_depth
from .stages.fuse import PyramidFusion, check_levels

logger = logging.getLogger(__name__)


@dataclass
class ProgressEvent:
    """Sent to the ``progress`` callback after each unit of work.

    ``stage`` is ``"fuse"`` (pass 1, one event per frame), ``"blend"`` (the
    depthmap method's pass 2, per frame), ``"finish"`` or ``"write"``. ``total``
    is 0 when the number of frames is not known in advance (an iterator of arrays).
    """

    stage: str
    index: int
    total: int
    name: str
    elapsed: float


@dataclass
class FrameInfo:
    """What the run learnt about one frame."""

    index: int
    name: str
    path: str | None
    shape: tuple
    dtype: str
    kind: str
    transfer: str
    read_s: float = 0.0
    fuse_s: float = 0.0
    info: dict = field(default_factory=dict)


@dataclass
class StackResult:
    """The outcome of ``gpustack.stack``.

    Attributes
    ----------
    image : (H, W[, C]) uint16 or uint8 ndarray
        The fused image as written (sRGB-encoded unless ``linear``).
    linear : (H, W[, C]) float32 ndarray
        The fused image in linear light, unclipped.
    depth : (H, W) float32 ndarray
        Sub-frame index of the sharpest frame per pixel (microns with ``z_step``),
        smoothed by ``depth_smooth``.
    depth_raw : (H, W) float32 ndarray
        The same before smoothing.
    confidence : (H, W) float32 ndarray
        How clearly one frame stood out, 0 (flat focus response) to 1.
    frames : list of FrameInfo
    options : StackOptions
    backend : str
    timings : dict of seconds
    outputs : dict of the paths written
    """

    image: np.ndarray
    linear: np.ndarray
    depth: np.ndarray
    depth_raw: np.ndarray
    confidence: np.ndarray
    frames: list
    options: StackOptions
    backend: str
    device: str
    timings: dict
    outputs: dict

    def to_dict(self) -> dict:
        """Everything but the pixels, JSON-ready (the sidecar's content)."""
        import numba

        versions = {"gpustack": __version__, "python": platform.python_version(), "numpy": np.__version__,
                    "numba": numba.__version__}
        for mod in ("tifffile", "imageio", "PIL", "rawpy", "cupy"):
            try:
                versions[mod] = __import__(mod).__version__
            except Exception:
                pass
        d = self.depth
        return {
            "gpustack": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "options": self.options.to_dict(),
            "backend": self.backend,
            "device": self.device,
            "versions": versions,
            "image": {"shape": list(self.image.shape), "dtype": str(self.image.dtype)},
            "depth": {"unit": "micron" if self.options.z_step else "frame",
                      "min": float(d.min()), "max": float(d.max())},
            "frames": [dataclasses.asdict(f) for f in self.frames],
            "timings": self.timings,
            "outputs": self.outputs,
        }


def _is_array(x) -> bool:
    return hasattr(x, "__array_interface__") or hasattr(x, "__cuda_array_interface__")


def _plan_sources(inputs, options: StackOptions):
    """(sources, total): a list of FrameSource, or a lazy iterator for a one-shot iterator of arrays."""
    if isinstance(inputs, (str, Path)):
        return list_frames([inputs], order=options.order), None
    if _is_array(inputs):
        arr = np.asarray(inputs)
        if arr.ndim not in (3, 4):
            raise InputError(f"an array input is a stack of frames along axis 0, shape (N, H, W) or (N, H, W, C); "
                             f"got shape {arr.shape}")
        return sources_from_arrays(list(arr)), None
    if isinstance(inputs, collections.abc.Sequence):
        items = list(inputs)
        if not items:
            raise InputError("no frames given; pass the frame files, a folder, or a list of arrays")
        if all(isinstance(x, (str, Path)) for x in items):
            return list_frames(items, order=options.order), None
        if all(_is_array(x) for x in items):
            return sources_from_arrays(items), None
        raise InputError("inputs mix paths and arrays; pass either paths or arrays")
    if isinstance(inputs, collections.abc.Iterable):
        if options.method == "depthmap":
            raise InputError("method 'depthmap' reads the frames twice; pass a list or an (N, H, W[, C]) array "
                             "rather than a one-shot iterator")

        def lazy():
            for i, arr in enumerate(inputs):
                if not _is_array(arr):
                    raise InputError(f"item {i} of the input iterator is a {type(arr).__name__}, not an array")
                src = sources_from_arrays([arr])[0]
                src.name = f"array[{i}]"
                yield src
        return lazy(), 0
    raise InputError(f"inputs must be paths or arrays; got {type(inputs).__name__}")


class _Luts:
    """Decoding and encoding tables, moved to the device once."""

    def __init__(self, be, linear: bool):
        self.be = be
        self.linear = linear
        self._cache = {}

    def decode(self, frame):
        if frame.data.dtype == np.float32:
            return None
        transfer = "linear" if self.linear else frame.transfer
        key = ("dec", frame.data.dtype.str, transfer)
        if key not in self._cache:
            self._cache[key] = self.be.to_device(decode_lut(frame.data.dtype, transfer))
        return self._cache[key]

    def encode(self, bits):
        key = ("enc", bits)
        if key not in self._cache:
            self._cache[key] = self.be.to_device(encode_lut(bits, "linear" if self.linear else "srgb"))
        return self._cache[key]


def _check_like_first(frame, first) -> None:
    if frame.data.shape[:2] != first.data.shape[:2]:
        h, w = frame.data.shape[:2]
        h0, w0 = first.data.shape[:2]
        raise InputError(f"frame {frame.index} ({frame.name}) is {w}x{h} but frame 0 ({first.name}) is {w0}x{h0}; "
                         f"all frames must have the same size")
    if frame.data.shape[2] != first.data.shape[2]:
        raise InputError(f"frame {frame.index} ({frame.name}) has {frame.data.shape[2]} channel(s) but frame 0 "
                         f"({first.name}) has {first.data.shape[2]}; all frames must be all colour or all grayscale")
    if frame.data.dtype != first.data.dtype or frame.kind != first.kind:
        raise InputError(f"frame {frame.index} ({frame.name}) is {frame.kind} {frame.data.dtype} but frame 0 "
                         f"({first.name}) is {first.kind} {first.data.dtype}; all frames must be of one kind")


def run(inputs, options: StackOptions | None = None, *, progress: Callable[[ProgressEvent], None] | None = None,
        **kwargs) -> StackResult:
    """Stack ``inputs`` with ``options`` (or keyword options); see ``gpustack.stack``."""
    if options is None:
        options = StackOptions(**kwargs)
    elif kwargs:
        options = options.replace(**kwargs)
    t_start = time.perf_counter()
    timings = {}

    def emit(stage, index, total, name):
        if progress is not None:
            progress(ProgressEvent(stage, index, total, name, time.perf_counter() - t_start))

    sources, total = _plan_sources(inputs, options)
    if isinstance(sources, list):
        total = len(sources)
        if total < 2:
            raise InputError(f"focus stacking needs at least 2 frames; got 1 ({sources[0].name}); "
                             f"add the other frames of the stack")
        input_paths = [s.path for s in sources if s.path is not None]
    else:
        input_paths = []
    outputs = [options.output, options.depth_map]
    if options.output is not None and options.sidecar:
        outputs.append(sidecar_path(options.output))
    check_outputs(outputs, input_paths, options.overwrite)

    be = get_backend(options.backend)
    logger.info("backend %s: %s", be.name, getattr(be, "device_name", ""))
    luts = _Luts(be, options.linear)
    timings["setup_s"] = time.perf_counter() - t_start

    ahead = options.workers + options.queue_size
    frames_info: list[FrameInfo] = []
    fusion = first = None
    t_fuse = time.perf_counter()
    reader = prefetch(_timed_read, _indexed(sources), workers=options.workers, ahead=ahead)
    try:
        for frame in reader:
            if first is None:
                first = frame
                h, w, c = frame.data.shape
                levels = check_levels(h, w, options.levels)
                fusion = PyramidFusion(be, c, h, w, levels=levels, energy_radius=options.energy_radius,
                                       depth_radius=options.depth_radius)
                logger.info("%dx%d, %d channel(s), %s %s, %d pyramid levels", w, h, c, frame.kind,
                            frame.data.dtype, levels)
            else:
                _check_like_first(frame, first)
            t0 = time.perf_counter()
            be.convert(be.to_device(frame.data), luts.decode(frame), fusion.input)
            fusion.fold()
            info = FrameInfo(frame.index, frame.name, None if frame.path is None else str(frame.path),
                             tuple(frame.data.shape), str(frame.data.dtype), frame.kind,
                             "linear" if options.linear else frame.transfer,
                             read_s=frame.info.get("read_s", 0.0), fuse_s=time.perf_counter() - t0,
                             info={k: v for k, v in frame.info.items() if k != "read_s"})
            frames_info.append(info)
            logger.debug("[%d/%s] fused %s in %.3f s", frame.index + 1, total or "?", frame.name, info.fuse_s)
            emit("fuse", frame.index + 1, total, frame.name)
            del frame
    finally:
        reader.close()
    if fusion is None or fusion.count < 2:
        name = first.name if first is not None else "none"
        raise InputError(f"focus stacking needs at least 2 frames; got {0 if first is None else 1} ({name}); "
                         f"add the other frames of the stack")
    n = fusion.count
    be.synchronize()
    timings["fuse_s"] = time.perf_counter() - t_fuse

    t0 = time.perf_counter()
    depth_raw, conf = fusion.depth()
    fused = fusion.collapse()
    depth, conf_sum, area = smooth_depth(be, depth_raw, conf, options.depth_smooth)
    emit("finish", n, total or n, "")
    if options.method == "depthmap":
        fused = _depthmap_pass(be, fused, depth, conf_sum, area, sources, luts, options, emit, n)
    c, h, w = fused.shape
    bits = options.output_bits
    encoded = be.empty((h, w, c), np.uint8 if bits == 8 else np.uint16)
    be.encode(fused, luts.encode(bits), encoded)
    image = be.to_host(encoded)
    linear = np.ascontiguousarray(np.moveaxis(be.to_host(fused), 0, -1))
    depth_h = be.to_host(depth)
    depth_raw_h = be.to_host(depth_raw)
    if options.z_step:
        depth_h = depth_h * np.float32(options.z_step)
        depth_raw_h = depth_raw_h * np.float32(options.z_step)
    conf_h = be.to_host(conf)
    if c == 1:
        image, linear = image[:, :, 0], linear[:, :, 0]
    timings["finish_s"] = time.perf_counter() - t0

    result = StackResult(image=image, linear=linear, depth=depth_h, depth_raw=depth_raw_h, confidence=conf_h,
                         frames=frames_info, options=options, backend=be.name,
                         device=getattr(be, "device_name", ""), timings=timings, outputs={})
    t0 = time.perf_counter()
    if options.output is not None:
        write_image(options.output, image, fmt=options.output_format, exif=first.exif, icc=first.icc,
                    overwrite=options.overwrite)
        result.outputs["image"] = str(options.output)
    if options.depth_map is not None:
        unit = f"microns (z_step {options.z_step})" if options.z_step else "frame index"
        write_depth(options.depth_map, depth_h, overwrite=options.overwrite,
                    description=f"gpustack {__version__} depth map, {unit}")
        result.outputs["depth_map"] = str(options.depth_map)
    timings["write_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    mp = h * w / 1e6
    timings["frames_per_s"] = n / timings["total_s"]
    timings["mp_frames_per_s"] = mp * n / timings["total_s"]
    if options.output is not None and options.sidecar:
        side = sidecar_path(options.output)
        result.outputs["sidecar"] = str(side)
        write_sidecar(side, result.to_dict(), overwrite=options.overwrite)
    emit("write", n, total or n, str(options.output or ""))
    logger.info("%d frames of %.1f MP in %.2f s (%.1f MP-frames/s)", n, mp, timings["total_s"],
                timings["mp_frames_per_s"])
    return result


def _indexed(sources):
    for i, src in enumerate(sources):
        yield i, src


def _timed_read(item):
    index, src = item
    t0 = time.perf_counter()
    frame = read_frame(src, index)
    frame.info.setdefault("read_s", time.perf_counter() - t0)
    return frame


def _depthmap_pass(be, pyr, depth, conf_sum, area, sources, luts, options, emit, n):
    """Pass 2 of the depthmap method: re-read the frames, take each pixel from the frames its
    smoothed depth names, and fall back to the pyramid result where confidence is low."""
    c, h, w = pyr.shape
    acc = be.full((c, h, w), 0.0, np.float32)
    planar = be.empty((c, h, w), np.float32)
    ahead = options.workers + options.queue_size
    reader = prefetch(_timed_read, _indexed(sources), workers=options.workers, ahead=ahead)
    try:
        for frame in reader:
            be.convert(be.to_device(frame.data), luts.decode(frame), planar)
            be.depthmap_accumulate(planar, depth, acc, np.float32(frame.index))
            emit("blend", frame.index + 1, n, frame.name)
    finally:
        reader.close()
    lo, inv_width = blend_params(options.contrast_threshold, area)
    be.depthmap_blend(acc, pyr, conf_sum, lo, inv_width, planar)
    return planar
