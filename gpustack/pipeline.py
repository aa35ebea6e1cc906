"""The streaming pipeline: read -> (develop, align: later stages) -> fuse -> finish -> write.

This module only schedules: it lists and reads frames (on worker threads,
bounded read-ahead), hands each to the backend, folds it into the fusion state,
and writes the results. All pixel work is in ``gpustack.stages`` (backend
neutral) and the backends' kernels. On the cpu backend the next frame is loaded
(converted, or warped: the largest cost per moving frame) on a worker thread
while the main thread folds the current one (``_loaded``), so two cores are
busy even where one op alone does not keep both so.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import itertools
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ._version import __version__
from .backends import get_backend
from .color import decode_lut, encode_lut
from .errors import InputError
from .io.raw import bin2x2, develop_params
from .io import (FrameSource, StagedOutputs, check_outputs, file_stats, list_frames, read_frame, sidecar_path,
                 sources_from_arrays, write_depth, write_image, write_sidecar)
from .options import StackOptions, is_ome_path
from .prefetch import prefetch
from .io import ome_write
from .io.ome import Calibration
from .stages.align import Aligner, coverage_mask, covered_box, processing_order, resolve_reference
from .stages.channels import PerChannelFusion, check_per_channel, resolve_channel
from .stages.check import FrameSpec, check_frame, check_like
from .stages.depthmap import blend_params, smooth_depth
from .stages.estimate import prepare_proxy
from .stages.footprint import stack_footprint
from .stages.proxy import channel_means, make_proxy
from .stages.fuse import PyramidFusion, check_levels
from .stages import microscopy
from .stages.soft import SoftFusion

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
    alignment: dict | None = None  # affine (reference -> frame), gains, neighbour, scores


@dataclass
class StackResult:
    """The outcome of ``gpustack.stack``.

    Attributes
    ----------
    image : (H, W[, C]) uint16 or uint8 ndarray
        The fused image as written (sRGB-encoded unless ``linear``).
    linear : (H, W[, C]) float32 ndarray
        The fused image in linear light, unclipped.
    depth : (H, W) float32 ndarray or None
        Sub-frame index of the sharpest frame per pixel (microns with ``z_step``),
        smoothed by ``depth_smooth``; None with ``maps=False`` (as ``depth_raw``, ``confidence``,
        ``height`` and ``height_confidence``).
    depth_raw : (H, W) float32 ndarray or None
        The same before smoothing.
    confidence : (H, W) float32 ndarray or None
        How clearly one frame stood out, 0 (flat focus response) to 1.
    frames : list of FrameInfo
        In shot order, with each frame's alignment (affine, gains, match scores).
    reference : int
        The frame whose geometry the output has.
    crop : (row0, row1, col0, col1) or None
        The part of the reference canvas kept (the area every aligned frame covers).
    options : StackOptions
    backend : str
    timings : dict of seconds
    outputs : dict of the paths written
    height : (H, W) or (C, H, W) float32 ndarray or None
        Microns above the first plane (``depth`` times the z-step of the metadata or option), NaN
        where ``confidence`` is below ``confidence_threshold``; None without a z-step. One plane per
        channel with ``per_channel`` (then ``depth``, ``depth_raw`` and ``confidence`` are
        (C, H, W) too).
    height_confidence : (H, W) or (C, H, W) float32 ndarray or None
        What the height map is thresholded on (``--confidence-map``): for the soft method how far
        the best plane's focus score stands above the mean, in noise floors ``n``, as ``n / (n + 1)``
        (0.8: four noise floors); for the others ``confidence``.
    channel_names : tuple of str
        The channels' names (microscopy metadata; ``C0``, ``C1``... otherwise).
    calibration : gpustack.io.ome.Calibration
        Pixel size and z-step used, and where each came from.
    microscopy : dict or None
        What the microscopy file said of the stack (format, axes, time point, position).
    inputs : list of dict
        The input files as they were when the run began: ``path``, ``size`` (bytes) and ``mtime_ns``
        (``gpustack batch`` compares them to tell whether a stack's outputs are up to date).
    stacks : list of StackResult
        When the input held several stacks (time points, positions): all of them, this one first.
    """

    image: np.ndarray
    linear: np.ndarray
    depth: np.ndarray | None
    depth_raw: np.ndarray | None
    confidence: np.ndarray | None
    frames: list
    options: StackOptions
    backend: str
    device: str
    timings: dict
    outputs: dict
    reference: int = 0
    crop: tuple | None = None
    height: np.ndarray | None = None
    height_confidence: np.ndarray | None = None
    channel_names: tuple = ()
    calibration: Calibration = field(default_factory=Calibration)
    microscopy: dict | None = None
    stacks: list = field(default_factory=list, repr=False)
    inputs: list = field(default_factory=list)
    exif: bytes | None = field(default=None, repr=False)
    icc: bytes | None = field(default=None, repr=False)

    @property
    def transforms(self) -> list:
        """Per frame (shot order) the (2, 3) affine mapping output (col, row, 1) to frame (col, row),
        before the crop (None where the run did not align)."""
        return [None if f.alignment is None else np.array(f.alignment["affine"]) for f in self.frames]

    def to_dict(self) -> dict:
        """Everything but the pixels, JSON-ready (the sidecar's content)."""
        import numba

        versions = {"gpustack": __version__, "python": platform.python_version(), "numpy": np.__version__,
                    "numba": numba.__version__}
        # only what this run used: importing CuPy (or rawpy) just to name its version costs a CPU run
        # up to a second and can print driver warnings on a machine without a GPU
        for mod in ("tifffile", "imageio", "PIL", "rawpy", "cupy"):
            version = getattr(sys.modules.get(mod), "__version__", None)
            if version is not None:
                versions[mod] = version
        d = self.depth
        extra = {}
        if self.microscopy is not None or self.height is not None:
            extra = {"channels": list(self.channel_names), "calibration": self.calibration.to_dict(),
                     "microscopy": self.microscopy,
                     "height": None if self.height is None else microscopy.height_description(self.options, self)}
        if self.stacks:
            extra["stacks"] = [{"microscopy": r.microscopy, "frames": len(r.frames), "timings": r.timings}
                               for r in self.stacks]
        return {
            "gpustack": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "options": self.options.to_dict(),
            "backend": self.backend,
            "device": self.device,
            "versions": versions,
            "image": {"shape": list(self.image.shape), "dtype": str(self.image.dtype)},
            "depth": None if d is None else {"unit": "micron" if self.options.z_step else "frame",
                                             "min": float(d.min()), "max": float(d.max())},
            **extra,
            "reference": self.reference,
            "crop": None if self.crop is None else {"row0": self.crop[0], "row1": self.crop[1],
                                                    "col0": self.crop[2], "col1": self.crop[3]},
            "inputs": self.inputs,
            "frames": [dataclasses.asdict(f) for f in self.frames],
            "timings": self.timings,
            "outputs": self.outputs,
        }


def _is_array(x) -> bool:
    if hasattr(x, "__cuda_array_interface__") and not hasattr(x, "__array_interface__"):
        raise InputError(f"a frame is a {type(x).__module__}.{type(x).__name__} in GPU memory; pass frames as NumPy "
                         f"arrays (e.g. cupy.asnumpy(frame)): they are read and aligned on the host, and the "
                         f"cuda backend uploads them itself")
    return hasattr(x, "__array_interface__")


def _plan_sources(inputs, options: StackOptions):
    """(sources, total): a list of FrameSource, or a lazy iterator for a one-shot iterator of arrays."""
    selection = {"order": options.order, "time": options.time, "position": options.position}
    if isinstance(inputs, (str, Path)):
        return list_frames([inputs], **selection), None
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
            return list_frames(items, **selection), None
        if all(isinstance(x, FrameSource) for x in items):  # e.g. gpustack.io.ome.array_sources
            return items, None
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
        """The device copy of the frame's host decoding table (``_host_lut``); None for float32 and RAW
        frames."""
        host = None if frame.raw is not None else _host_lut(frame, self.linear)
        if host is None:
            return None
        key = ("dec", frame.data.dtype.str, _transfer(frame, self.linear))
        if key not in self._cache:
            self._cache[key] = self.be.to_device(host)
        return self._cache[key]

    def encode(self, bits):
        key = ("enc", bits)
        if key not in self._cache:
            self._cache[key] = self.be.to_device(encode_lut(bits, "linear" if self.linear else "srgb"))
        return self._cache[key]


def run(inputs, options: StackOptions | None = None, *, progress: Callable[[ProgressEvent], None] | None = None,
        **kwargs) -> StackResult:
    """Stack ``inputs`` with ``options`` (or keyword options); see ``gpustack.stack``."""
    if options is None:
        options = StackOptions(**kwargs)
    elif kwargs:
        options = options.replace(**kwargs)
    t_start = time.perf_counter()

    def emit(stage, index, total, name):
        if progress is not None:
            progress(ProgressEvent(stage, index, total, name, time.perf_counter() - t_start))

    sources, total = _plan_sources(inputs, options)
    if isinstance(sources, list):
        stacks = microscopy.split_stacks(sources)
        for group in stacks:
            if len(group) < 2:
                raise InputError(f"focus stacking needs at least 2 frames; got 1 ({group[0].name}); "
                                 f"add the other frames of the stack")
        input_paths = [s.path for s in sources if s.path is not None]
    else:
        stacks, input_paths = [sources], []
    microscopy.check_request(stacks, options)
    outputs = [options.output, options.depth_map, options.height_map, options.confidence_map]
    if options.output is not None and options.sidecar:
        outputs.append(sidecar_path(options.output))
    check_outputs(outputs, input_paths, options.overwrite)
    inputs_seen = file_stats(input_paths)  # before reading: a file changed meanwhile reads as changed later

    be = get_backend(options.backend)
    logger.info("backend %s: %s", be.name, getattr(be, "device_name", ""))
    if hasattr(be, "compile_ahead"):  # cpu: this run's kernels compile on a thread while the first frames are read
        be.compile_ahead(options)
    setup_s = time.perf_counter() - t_start
    results = []
    for group in stacks:
        if len(stacks) > 1:
            logger.info("stack %d of %d: %s", len(results) + 1, len(stacks), microscopy.stack_name(group))
        results.append(_fuse_stack(be, group, len(group) if isinstance(group, list) else total, options, emit))
        results[-1].timings["setup_s"] = setup_s
    result = results[0]
    result.inputs = inputs_seen
    if len(results) > 1:
        result.stacks = results
    n = sum(len(r.frames) for r in results)
    t0 = time.perf_counter()
    with StagedOutputs() as staged:  # every output written first, then all published, or none
        _write_outputs(results, options, staged)
        timings = result.timings
        timings["write_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_start
        h, w = result.image.shape[:2]
        mp = h * w / 1e6
        timings["frames_per_s"] = n / timings["total_s"]
        timings["mp_frames_per_s"] = mp * n / timings["total_s"]
        if options.output is not None and options.sidecar:
            side = sidecar_path(options.output)
            result.outputs["sidecar"] = str(side)
            write_sidecar(side, result.to_dict(), overwrite=options.overwrite, stage=staged)
        staged.commit()
    emit("write", n, total or n, str(options.output or ""))
    logger.info("%d frames of %.1f MP in %.2f s (%.1f MP-frames/s)", n, mp, timings["total_s"],
                timings["mp_frames_per_s"])
    return result


def _fuse_stack(be, sources, total, options: StackOptions, emit) -> StackResult:
    """Fuse one stack (a list of sources, or an iterator of array sources): everything but writing."""
    t_start = time.perf_counter()
    timings = {}
    info = sources[0].stack if isinstance(sources, list) else None
    calibration = info.calibration if info is not None else Calibration()
    if info is not None and info.planes == 1 and calibration.z_step is None:  # single-plane files
        z_step = microscopy.z_step_of_planes(sources)
        if z_step is not None:
            calibration = dataclasses.replace(calibration, z_step=z_step,
                                              z_step_source="spacing of the files' PositionZ")
    calibration = calibration.overridden(options.pixel_size, options.z_step)
    linear = options.linear or info is not None  # microscopy data are linear light
    brightness = options.brightness and info is None  # and their intensities are kept as they are
    if info is not None:
        names = info.channel_names
        focus = resolve_channel(options.focus_channel, names, where=str(info.path))
    else:
        names, focus = (), None
    luts = _Luts(be, linear)
    loader = _Loader(be, luts, options)
    maps = options.makes_maps
    # a height map and its confidence
    heights = maps and (calibration.z_step is not None or options.confidence_map is not None)

    if isinstance(sources, list):
        reference = resolve_reference(options.reference, len(sources))
        order = processing_order(len(sources), reference)
    else:
        if options.reference not in (None, 0):
            raise InputError("a reference other than the first frame needs the frames as files, a list or an "
                             "(N, H, W[, C]) array, not a one-shot iterator")
        reference, order = 0, None
    needs_alignment = options.align != "none" or brightness
    aligner = Aligner(options.align, reference, brightness) if needs_alignment else None
    frames_info: dict[int, FrameInfo] = {}
    fusion = first = None
    t_fuse = time.perf_counter()
    stream = _read_stream(sources, order, options, aligner, be)
    loaded = None
    try:
        head = next(stream, None)
        if head is not None:
            frame = first = head[0]
            h, w, c = frame.shape
            if info is None:
                names = tuple(f"C{i}" for i in range(c))
                focus = resolve_channel(options.focus_channel, names, where="the frames")
            if frame.kind == "raw":
                logger.info("RAW frames developed by %s", "the backend's kernels (demosaic %s, colour %s)"
                            % (options.demosaic, options.color) if frame.raw is not None
                            else frame.info.get("develop", "LibRaw"))
            levels = check_levels(h, w, options.levels)
            per_channel = options.per_channel and c > 1
            if per_channel:
                check_per_channel(options.method)
            if hasattr(be, "check_memory"):  # device backends: fail up front, with the sizes
                be.check_memory(stack_footprint(c, h, w, levels, frame_bytes=frame.data.nbytes,
                                                mosaic=frame.raw is not None, moved=options.align != "none",
                                                method=options.method, demosaic=options.demosaic,
                                                output_bytes=_output_bits(options, frame) // 8,
                                                per_channel=per_channel,
                                                height_map=heights, maps=maps),
                                f"{w}x{h} frames with {c} channel(s)")
            fusion = _make_fusion(be, options, c, h, w, levels, focus, per_channel, heights, maps)
            logger.info("%dx%d, %d channel(s), %s %s, method %s%s, reference frame %d (%s)", w, h, c,
                        frame.kind, "mosaic" if frame.raw is not None else frame.data.dtype, options.method,
                        "" if options.method == "soft" else f" ({levels} pyramid levels)", frame.index, frame.name)
            if info is not None and options.align != "none":
                logger.info("%s: aligning the planes (%s); a stage z-stack that does not move needs none: "
                            "--align none", info.format, options.align)
            if info is not None:
                logger.info("%s: channels %s; %s%s", info.format, ", ".join(names),
                            microscopy.describe_calibration(calibration),
                            "" if focus is None else f"; focus judged on channel {focus} ({names[focus]})")
            loaded = _loaded(be, loader, itertools.chain([head], stream), fusion.input)
            del head, frame
        for frame, fa, buffer, load_s in loaded or ():
            t0 = time.perf_counter()
            fusion.use_input(buffer)
            fusion.fold(frame.index)
            frames_info[frame.index] = FrameInfo(
                frame.index, frame.name, None if frame.path is None else str(frame.path), tuple(frame.shape),
                "mosaic uint16" if frame.raw is not None else str(frame.data.dtype), frame.kind,
                _transfer(frame, linear), read_s=frame.info.get("read_s", 0.0),
                fuse_s=load_s + time.perf_counter() - t0,
                info={k: v for k, v in frame.info.items() if k != "read_s" and not k.startswith("_")},
                alignment=None if fa is None else fa.to_dict())
            logger.debug("[%d/%s] fused %s in %.3f s", fusion.count, total or "?", frame.name,
                         frames_info[frame.index].fuse_s)
            emit("fuse", fusion.count, total, frame.name)
            del frame
    finally:
        if loaded is not None:
            loaded.close()  # the load ahead first: it pulls from the stream
        stream.close()
    buffer = loaded = None  # the last frame's buffer is the fusion's input: free with the fusion
    if fusion is None or fusion.count < 2:
        name = first.name if first is not None else "none"
        raise InputError(f"focus stacking needs at least 2 frames; got {0 if first is None else 1} ({name}); "
                         f"add the other frames of the stack")
    n = fusion.count
    frames_list = [frames_info[k] for k in sorted(frames_info)]
    be.synchronize()
    timings["fuse_s"] = time.perf_counter() - t_fuse
    timings["align_s"] = sum(fa.seconds for fa in aligner.results.values()) if aligner else 0.0

    t0 = time.perf_counter()
    contrast = fusion.contrast() if heights else None
    index = fusion.height_index() if heights else None
    depth_raw, conf = fusion.depth()  # (the soft method's weighted means too)
    per_channel = isinstance(depth_raw, list)
    depth_raws, confs = (depth_raw, conf) if per_channel else ([depth_raw], [conf])
    if not maps:
        depth_raws, confs = [], []
    contrasts = [] if contrast is None else contrast if per_channel else [contrast]
    indices = [] if index is None else index if per_channel else [index]
    fused = fusion.collapse()
    fusion = None  # the state's other planes (about two thirds of it) are free before the finish allocates
    depths = []
    for k, (d, cf) in enumerate(zip(depth_raws, confs)):
        depth, conf_sum, area = smooth_depth(be, d, cf, options.depth_smooth)
        depths.append(depth)
        del d, cf
    emit("finish", n, total or n, "")
    if options.method == "depthmap":
        fused = _depthmap_pass(be, fused, depths[0], conf_sum, area, sources, order, aligner, loader, options, emit,
                               n)
    conf_sum = None
    affines = [aligner.results[k].affine for k in sorted(aligner.results)] if aligner else []
    crop = None
    if affines and options.crop:
        c, h, w = fused.shape
        r0, r1, c0, c1 = covered_box(affines, h, w)
        if (r0, r1, c0, c1) != (0, h, 0, w):
            crop = (r0, r1, c0, c1)
            fused = _cropped(be, fused, r0, r1, c0, c1)
            depths, depth_raws, confs, contrasts, indices = (
                [_cropped(be, a, r0, r1, c0, c1) for a in planes]
                for planes in (depths, depth_raws, confs, contrasts, indices))
            logger.info("cropped to %dx%d at (%d, %d): the area every aligned frame covers", c1 - c0, r1 - r0,
                        c0, r0)
    c, h, w = fused.shape
    bits = _output_bits(options, first)
    encoded = be.empty((h, w, c), np.uint8 if bits == 8 else np.uint16)
    be.encode(fused, luts.encode(bits), encoded)
    image = be.to_host(encoded)
    linear_h = np.ascontiguousarray(np.moveaxis(be.to_host(fused), 0, -1))

    def host(planes):
        if not planes:  # (no maps)
            return None
        out = [be.to_host(a) for a in planes]
        return np.stack(out) if per_channel else out[0]

    depth_h, depth_raw_h, conf_h = host(depths), host(depth_raws), host(confs)
    if options.z_step and maps:
        depth_h = depth_h * np.float32(options.z_step)
        depth_raw_h = depth_raw_h * np.float32(options.z_step)
    height_conf = host(contrasts) if contrasts else conf_h
    if affines and not options.crop and maps:
        covered = coverage_mask(affines, h, w)
        conf_h = np.where(covered, conf_h, np.float32(0))
        height_conf = np.where(covered, height_conf, np.float32(0))
    if c == 1:
        image, linear_h = image[:, :, 0], linear_h[:, :, 0]
    height = None
    if calibration.z_step is not None and maps:
        # the plane index of the highest focus score, sub-plane by a parabola (the pyramid method's
        # depth before smoothing; the soft method tracks it for the height map)
        height = microscopy.height_map(host(indices or depth_raws), height_conf, calibration.z_step,
                                       options.confidence_threshold)
    timings["finish_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    return StackResult(image=image, linear=linear_h, depth=depth_h, depth_raw=depth_raw_h, confidence=conf_h,
                       frames=frames_list, options=options, backend=be.name,
                       device=getattr(be, "device_name", ""), timings=timings, outputs={},
                       reference=reference, crop=crop, height=height, height_confidence=height_conf,
                       channel_names=tuple(names),
                       calibration=calibration, microscopy=None if info is None else info.describe(),
                       exif=first.exif, icc=first.icc)


def _write_outputs(results, options: StackOptions, staged) -> None:
    """Write every requested output of ``results`` (one stack, or several from one file) into ``staged``."""
    result = results[0]
    if options.output is not None:
        if options.output_format == "ome-tiff":
            _write_ome(options.output, [_ome_image(r, options) for r in results], results, result.channel_names,
                       _image_text(result), options, staged)
        else:
            write_image(options.output, result.image, fmt=options.output_format, exif=result.exif, icc=result.icc,
                        overwrite=options.overwrite, stage=staged)
        result.outputs["image"] = str(options.output)
    if options.depth_map is not None:
        unit = f"microns (z_step {options.z_step})" if options.z_step else "frame index"
        description = f"gpustack {__version__} depth map, {unit}"
        _write_map(options.depth_map, "depth", [r.depth for r in results], results, options, description, staged)
        result.outputs["depth_map"] = str(options.depth_map)
    if options.height_map is not None:
        _write_map(options.height_map, "height", [r.height for r in results], results, options,
                             microscopy.height_text(options, result), staged)
        result.outputs["height_map"] = str(options.height_map)
    if options.confidence_map is not None:
        _write_map(options.confidence_map, "confidence", [r.height_confidence for r in results], results, options,
                   f"gpustack {__version__} confidence map (the height map's): how clearly one plane stood out, "
                   f"0 to 1; the height map is NaN below {options.confidence_threshold:g}", staged)
        result.outputs["confidence_map"] = str(options.confidence_map)


def _output_bits(options, frame) -> int:
    """Bits per sample of the encoded image: ``options.output_bits``, except that an OME-TIFF keeps
    the input's sample type when ``bits`` is not given (uint8 in, uint8 out)."""
    if options.bits is None and options.output_format == "ome-tiff" and frame.data.dtype == np.uint8:
        return 8
    return options.output_bits


def _ome_image(result, options) -> np.ndarray:
    """The fused image as an OME-TIFF holds it, (C, H, W): the input's sample type (uint8 or uint16
    samples as encoded, linear; float32 input: the linear float32 result), or ``bits`` when given."""
    dtypes = {f.dtype for f in result.frames}
    if options.bits is None and dtypes == {"float32"}:
        image = result.linear
    else:
        image = result.image
    return np.moveaxis(image[:, :, None] if image.ndim == 2 else image, -1, 0)


def _image_text(result) -> str:
    info = result.microscopy
    source = f" from {info['path']} ({info['format']})" if info else ""
    return (f"gpustack {__version__}: {len(result.frames)} focal planes fused into one image{source}, method "
            f"{result.options.method}, {'each channel by its own focus' if result.options.per_channel else ''}"
            f"{'' if result.options.per_channel else 'every channel from the same planes'}; linear samples, "
            f"not rescaled")


def _write_map(path, kind, maps, results, options, description, staged) -> None:
    """A depth, height or confidence map: (H, W), or (C, H, W) per channel, per stack; an OME-TIFF
    (calibrated, a channel per map plane, a T axis and positions as the input had) for ``.ome.tif``
    paths, else a float32 TIFF (a page per channel)."""
    if is_ome_path(path):
        planes = [m[None] if m.ndim == 2 else m for m in maps]
        names = tuple(f"{kind} {n}" for n in results[0].channel_names) if planes[0].shape[0] > 1 else (kind,)
        _write_ome(path, planes, results, names, description, options, staged)
    else:
        write_depth(path, maps[0], overwrite=options.overwrite, description=description, stage=staged)


def _write_ome(path, images, results, names, description, options, staged) -> None:
    """``images`` ((C, H, W), one per stack) as an OME-TIFF: an image per stage position, a T axis
    over the time points."""
    positions: dict = {}
    for image, r in zip(images, results):
        info = r.microscopy or {}
        positions.setdefault(info.get("series", 0), []).append(image)
    ome_write.write_ome(path, [np.stack(v) for v in positions.values()], channel_names=names,
                        pixel_size=results[0].calibration.pixel_size, description=description,
                        name=path.name, overwrite=options.overwrite, stage=staged)


def _make_fusion(be, options, c, h, w, levels, focus=None, per_channel=False, heights=False, maps=True):
    """The fusion state of ``options.method`` (the depthmap method's first pass is the pyramid's);
    with ``per_channel``, one single-channel state per channel; ``heights``: what a height map needs;
    ``maps``: the depth map and its confidence."""
    if per_channel:
        return PerChannelFusion(be, lambda: _make_fusion(be, options, 1, h, w, levels, heights=heights, maps=maps),
                                c, h, w)
    if options.method == "soft":
        return SoftFusion(be, c, h, w, focus_channel=focus, track_depth=heights, maps=maps)
    return PyramidFusion(be, c, h, w, levels=levels, energy_radius=options.energy_radius,
                         depth_radius=options.depth_radius, focus_channel=focus, maps=maps)


def _cropped(be, a, r0, r1, c0, c1):
    """A new array holding ``a[..., r0:r1, c0:c1]``, on the backend."""
    out = be.empty((*a.shape[:-2], r1 - r0, c1 - c0), a.dtype)
    be.crop(a, r0, c0, out)
    return out


def _read_stream(sources, order, options, aligner, be):
    """(frame, FrameAlignment or None) in processing order, running ahead of the fusion: frames
    decoded on the reader threads (with their alignment proxy); pair motions estimated several at
    once (``estimator_threads``; threads, not processes: a process pool would re-import the
    caller's main module, which breaks every script without a ``__main__`` guard); then composed
    along the chain in order, with the brightness gains measured once each transform is known.
    Frames are decoded into the backend's ``host_buffer`` memory where the decoder allows
    (``read_frame``); the readers keep ``_reader_ahead`` frames."""
    items = ((i, src) for i, src in zip(order, (sources[i] for i in order))) if order else enumerate(sources)
    n = estimator_threads()
    # decoded frames waiting for the fusion: queue_size in all, the n in the estimation stage
    # included, beyond the ones being decoded
    waiting = max(0, options.queue_size - n) if aligner is not None else options.queue_size
    ahead = _reader_ahead(be, options.workers + waiting)
    with_proxy = aligner is not None and aligner.model != "none"
    with_means = aligner is not None and aligner.brightness

    first = _first_frame_hint(be, options)

    def read(item):
        return _timed_read(item, options, be.host_buffer, with_proxy, with_means, first)

    frames = _checked(prefetch(read, items, workers=options.workers, ahead=ahead))
    if aligner is None:
        return ((f, None) for f in frames)

    def planned():  # in processing order, on the thread that pulls the stream
        for frame in frames:
            info = frame.info
            proxy, scale, offset = info.pop("_proxy", None), info.pop("_proxy_scale", 1), info.pop("_proxy_offset", 0.0)
            neighbour, nb_proxy = aligner.plan(frame.index, proxy)
            yield frame, neighbour, nb_proxy, proxy, scale, offset

    def estimate(item):  # several pairs at once
        frame, neighbour, nb_proxy, proxy, scale, offset = item
        t0 = time.perf_counter()
        est = aligner.estimate(nb_proxy, proxy, scale, offset)
        return frame, neighbour, proxy, scale, est, time.perf_counter() - t0

    def compose(item):  # in processing order
        frame, neighbour, proxy, scale, est, seconds = item
        measure = None
        means_src = frame.info.pop("_means_source", None)
        if means_src is not None:
            data, lut, pitch, offset = means_src
            h, w, _ = frame.shape
            measure = lambda affine: channel_means(data, lut, affine, full_shape=(h, w), pitch=pitch,  # noqa: E731
                                                   offset=offset)
        fa = aligner.compose(frame.index, neighbour, est, None if proxy is None else proxy.shape, scale,
                             frame.shape[2], measure)
        fa.seconds += seconds
        return frame, fa

    # in flight beyond the readers' frames: n being estimated; composing (a few ms) runs on the
    # thread that pulls the stream, holding no extra frame (memory is bounded by the stages'
    # sizes, whatever the number of frames)
    return _mapped(compose, prefetch(estimate, planned(), workers=n, ahead=n))


def _checked(frames):
    """The decoded frames, each checked against the first one (the reference) before any stage pairs
    or fuses it; closing it closes ``frames``."""
    first = None
    try:
        for frame in frames:
            if first is None:
                first = FrameSpec.of(frame)
            else:
                check_like(frame, first)
            yield frame
    finally:
        frames.close()


def _mapped(fn, stream):
    """``fn`` of each item of ``stream``, closing ``stream`` when closed."""
    try:
        for item in stream:
            yield fn(item)
    finally:
        stream.close()


def estimator_threads() -> int:
    """Pair estimates running at once: half the cores, 1 to 4 (on 2 cores one, so the estimates do
    not take both cores from the fusion; with a GPU doing the fusion, more keep ahead of it)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _transfer(frame, linear: bool) -> str:
    return "linear" if linear or frame.raw is not None else frame.transfer


def _host_lut(frame, linear: bool):
    """The host decoding table of a decoded (not RAW) frame's samples; None for float32 samples."""
    dtype = frame.data.dtype
    return None if dtype == np.float32 else decode_lut(dtype, _transfer(frame, linear))


def _first_frame_hint(be, options):
    """``hint(frame)``, which gives the backend's ``compile_ahead`` the first decoded frame's samples
    and decoding table (once, from whichever reader thread decodes a frame first: all frames have the
    same types, ``check_like``), before its proxy is made; None for a backend without it."""
    if not hasattr(be, "compile_ahead"):
        return None
    lock, given = threading.Lock(), []

    def hint(frame):
        if frame.raw is not None:  # a RAW mosaic is developed by other kernels, each on first call
            return
        with lock:
            if given:
                return
            given.append(True)
        be.compile_ahead(options, frame.data, _host_lut(frame, options.linear))

    return hint


def _timed_read(item, options, alloc, with_proxy=False, with_means=False, first=None):
    """Read one frame on a reader thread, into ``alloc``'s memory where the decoder allows (the
    backend's ``host_buffer``); with its alignment proxy and the image its brightness is
    measured on (``_``-prefixed ``info`` keys, not reported). A RAW mosaic also gets its develop
    parameters, and a half-size development (2x2 binning) stands in for it on the host. ``first``
    (``_first_frame_hint``) is given the frame before anything else is done with it."""
    index, src = item
    t0 = time.perf_counter()
    frame = read_frame(src, index, raw_develop=options.raw_develop, alloc=alloc)
    check_frame(frame, aligned=options.align != "none")  # before any stage (the proxy below) uses it
    if first is not None:
        first(frame)
    if frame.raw is not None:
        params = develop_params(frame.raw, options.color)
        frame.info["_develop"] = params
    frame.info.setdefault("read_s", time.perf_counter() - t0)
    if not (with_proxy or with_means):
        return frame
    if frame.raw is not None:
        # bin2x2 cell (i, j) is centred on full-size (2i + 0.5, 2j + 0.5)
        data, lut, pitch, offset = bin2x2(frame.raw, *params), None, 2, 0.5
    else:
        data = frame.data
        lut = _host_lut(frame, options.linear)
        pitch, offset = 1, 0.0
    if with_proxy:
        proxy, scale = make_proxy(data, lut)
        # the estimator's pyramid, bands and energies, once per frame (each frame is in two pairs)
        frame.info["_proxy"] = prepare_proxy(proxy)
        frame.info["_proxy_scale"], frame.info["_proxy_offset"] = scale * pitch, offset
    if with_means:
        # every 4th full-size pixel is all channel_means reads: keep no more of a binned frame
        frame.info["_means_source"] = (data[::2, ::2], lut, 4, offset) if pitch == 2 else (data, lut, 1, 0.0)
    return frame


class _Loader:
    """Brings a decoded frame into a planar linear float32 image on the backend: converted, or
    warped and gained when aligned; a RAW mosaic developed first (into a scratch image when it
    must then be warped)."""

    def __init__(self, be, luts, options):
        self.be = be
        self.luts = luts
        self.options = options
        self._scratch = None

    def load(self, frame, fa, dst) -> None:
        be = self.be
        src = be.to_device(frame.data)
        moved = fa is not None and not fa.is_still  # a gain alone is applied by convert / develop's copy
        if frame.raw is not None:
            black, scale, matrix = frame.info["_develop"]
            if fa is not None and np.any(fa.gains != 1):  # the gains ride on the colour matrix's rows
                matrix = (fa.gains.astype(np.float64)[:, None] * matrix.astype(np.float64)).astype(np.float32)
            out = dst
            if moved:
                if self._scratch is None or self._scratch.shape != dst.shape:
                    self._scratch = be.empty(dst.shape, np.float32)
                out = self._scratch
            be.develop(src, frame.raw.cfa, black, scale, matrix, self.options.demosaic, out)
            if moved:
                be.warp_planar(out, fa.affine, np.ones(3, np.float32), dst)
        elif moved:
            be.warp(src, self.luts.decode(frame), fa.affine, fa.gains, dst)
        else:
            be.convert(src, self.luts.decode(frame), dst, None if fa is None else fa.gains)


def _reader_ahead(be, frames: int) -> int:
    """Decoded frames the readers may hold ahead of the fusion, ``frames`` as the options allow: one
    fewer on a ``concurrent`` backend, whose ``_loaded`` holds one decoded frame more (at least one)."""
    return max(1, frames - (1 if be.concurrent else 0))


def _loaded(be, loader, items, buffer):
    """``(frame, fa, buf, seconds)`` for each ``(frame, fa)`` of ``items``: the frame loaded (converted, or
    warped when it moved: ``_Loader``) into ``buf``, in ``seconds``. On a ``concurrent`` backend the next
    frame is taken from ``items`` and loaded on a worker thread while the caller folds this one, into the
    other of two buffers (``buffer`` and one more of its size: the one planar frame in flight; the caller
    must be done with ``buf`` when it asks for the next item), and each frame's decoded pixels are freed
    once it is loaded; otherwise every frame is taken and loaded into ``buffer`` when the caller asks for
    it. Closing it waits for the load under way; it does not close ``items``.

    The worker takes the next item itself: the stream's own work (composing the transform, measuring
    the brightness, waiting for the pair's estimate) then runs beside the fold instead of before it,
    on the caller's thread (a prefetch pulls its items on the thread that asks for a result)."""
    concurrent = be.concurrent
    buffers = [buffer, be.empty(tuple(buffer.shape), buffer.dtype)] if concurrent else [buffer]
    numbered = enumerate(items)

    def load(item):
        k, (frame, fa) = item
        buf = buffers[k % len(buffers)]
        t0 = time.perf_counter()
        loader.load(frame, fa, buf)
        if concurrent:
            _drop_pixels(frame)
        return frame, fa, buf, time.perf_counter() - t0

    if not concurrent:
        return (load(item) for item in numbered)

    def take_and_load(_):  # one worker: the tasks run in turn, so items are taken in order
        item = next(numbered, None)
        return None if item is None else load(item)

    def results():
        stream = prefetch(take_and_load, itertools.count(), workers=1, ahead=1)
        try:
            for result in stream:
                if result is None:
                    return
                yield result
        finally:
            stream.close()

    return results()


def _drop_pixels(frame) -> None:
    """Free a loaded frame's decoded pixels (host memory, CPU backend) while its record lives on (until it
    is folded; the first frame's for the whole run): ``data`` becomes a read-only stand-in of the same
    shape and dtype that holds one sample."""
    d = frame.data
    frame.data = np.lib.stride_tricks.as_strided(np.zeros(1, d.dtype), d.shape, (0,) * d.ndim, writeable=False)


def _depthmap_pass(be, pyr, depth, conf_sum, area, sources, order, aligner, loader, options, emit, n):
    """Pass 2 of the depthmap method: re-read the frames, take each pixel from the frames its
    smoothed depth names, and fall back to the pyramid result where confidence is low."""
    c, h, w = pyr.shape
    acc = be.full((c, h, w), 0.0, np.float32)
    planar = be.empty((c, h, w), np.float32)
    items = ((i, sources[i]) for i in order)
    reader = _checked(prefetch(lambda item: _timed_read(item, options, be.host_buffer), items,
                               workers=options.workers, ahead=_reader_ahead(be, options.workers + options.queue_size)))
    loaded = _loaded(be, loader, ((f, aligner.results.get(f.index) if aligner else None) for f in reader), planar)
    try:
        for done, (frame, _fa, buffer, _s) in enumerate(loaded, 1):
            be.depthmap_accumulate(buffer, depth, acc, np.float32(frame.index))
            emit("blend", done, n, frame.name)
    finally:
        loaded.close()
        reader.close()
    buffer = loaded = None  # the second buffer, before the blend
    lo, inv_width = blend_params(options.contrast_threshold, area)
    be.depthmap_blend(acc, pyr, conf_sum, lo, inv_width, planar)
    return planar
