"""Microscopy z-stacks: OME-TIFF and ImageJ hyperstacks, read through tifffile's series and metadata.

A microscopy file is not a pile of pages: its axes (T, C, Z, Y, X, and S for RGB samples) say
which pages are focal planes. :func:`microscopy_sources` turns one such file into one
:class:`~gpustack.io.frames.FrameSource` per focal plane (Z), each read as an (H, W, C) frame
holding every channel (C, and S samples) of that plane: a channel is never a focal plane. The
metadata give what the outputs carry (:class:`StackInfo`): channel names, the physical pixel size,
the z-step (``PhysicalSizeZ``, or the spacing of the planes' ``PositionZ`` when every plane has
one; ImageJ: ``spacing`` and the resolution tags), and the dtype and significant bits. Samples are
kept as they are (a 12-bit camera in 16-bit samples stays 0..4095: no rescaling), and the
pipeline treats them as linear light.

A file with a T axis gives one stack per time point (``StackInfo.time``), unless ``time`` picks
one; a file with several images (OME series: stage positions) gives one stack per position,
unless ``position`` picks one. Files of one plane each (a folder from a microscope) are frames of
one stack, in name order or, with ``--order z``, by the z position in their metadata.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import tifffile

from ..errors import DecodeError, InputError
from ..options import length_um

logger = logging.getLogger(__name__)

#: sample types read as they are; others are refused with what to do
DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
#: the most channels (C times S) a frame may have: the kernels' gains (backends/cpu/convert.py)
MAX_CHANNELS = 8
_PLANE_AXES = "YXS"


@dataclass(frozen=True)
class Calibration:
    """The physical calibration of a stack and where each number came from.

    ``pixel_size``: (row, column) = (Y, X) pixel size in microns, or None; ``z_step``: the distance
    between focal planes in microns, or None. ``*_source``: ``"OME-XML PhysicalSizeX/Y"``,
    ``"ImageJ resolution tags"``, ``"option --pixel-size"``... or None when unknown.
    """

    pixel_size: tuple[float, float] | None = None
    pixel_size_source: str | None = None
    z_step: float | None = None
    z_step_source: str | None = None

    def to_dict(self) -> dict:
        return {"pixel_size_um": None if self.pixel_size is None else {"y": self.pixel_size[0],
                                                                        "x": self.pixel_size[1]},
                "pixel_size_source": self.pixel_size_source, "z_step_um": self.z_step,
                "z_step_source": self.z_step_source}

    def overridden(self, pixel_size: float | None, z_step: float | None) -> "Calibration":
        """This calibration with the options' values, where given, in place of the metadata's."""
        cal = self
        if pixel_size is not None:
            cal = replace(cal, pixel_size=(pixel_size, pixel_size), pixel_size_source="option --pixel-size")
        if z_step is not None:
            cal = replace(cal, z_step=z_step, z_step_source="option --z-step")
        return cal


@dataclass(frozen=True)
class StackInfo:
    """What a microscopy file says about one of its stacks (shared by the stack's frame sources)."""

    path: Path
    format: str                      # "OME-TIFF", "ImageJ hyperstack", "ND2", ...
    axes: str                        # the file's axes as its reader names them (e.g. "TZCYX")
    shape: tuple                     # and their sizes
    dtype: np.dtype
    channel_names: tuple[str, ...]
    calibration: Calibration
    planes: int                      # focal planes (Z) of this stack
    significant_bits: int | None = None
    series: int = 0                  # OME image / position index
    positions: int = 1               # how many the file holds
    time: int | None = None          # time point of this stack (None: the file has no T axis)
    times: int = 1
    z_positions: tuple | None = field(default=None, repr=False)  # per plane, microns (metadata)

    @property
    def key(self) -> tuple:
        """Frames of one stack share this; frames from separate single-plane files share it too."""
        return (self.series, self.time)

    def describe(self) -> dict:
        """For the sidecar."""
        return {"path": str(self.path), "format": self.format, "axes": self.axes, "shape": list(self.shape),
                "dtype": str(self.dtype), "channels": list(self.channel_names),
                "significant_bits": self.significant_bits, "series": self.series, "positions": self.positions,
                "time": self.time, "times": self.times, **self.calibration.to_dict()}


class _Complaints(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def broken_chain_refused(path: Path):
    """DecodeError when tifffile, while the file is opened and its pages listed, finds a page
    offset past the end of the file: the chain of pages was cut (a truncated file, which would
    otherwise be read as its first pages only, and an OME-TIFF whose XML was cut as a plain TIFF)."""
    handler = _Complaints()
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
    cut = [m for m in handler.messages if "invalid page offset" in m]
    if cut:
        raise DecodeError(path, f"cannot decode: its pages end early ({cut[0].split('> ')[-1]}); the file is "
                                f"truncated or corrupt — re-copy it or remove it from the frames")


def is_microscopy(tf: tifffile.TiffFile) -> bool:
    """An OME-TIFF or an ImageJ hyperstack (their axes, not their pages, say what a plane is)."""
    return bool(tf.is_ome or tf.is_imagej)


def microscopy_sources(path: Path, tf: tifffile.TiffFile, *, time: int | None = None,
                       position: int | None = None) -> list:
    """One FrameSource per focal plane of the file's stack(s) (see the module docstring)."""
    from .frames import FrameSource

    stacks = read_stacks(path, tf, time=time, position=position)
    sources = []
    for info in stacks:
        for z in range(info.planes):
            where = [f"z={z}"]
            if info.time is not None and info.times > 1:
                where.insert(0, f"t={info.time}")
            if info.positions > 1:
                where.insert(0, f"position={info.series}")
            name = path.name if info.planes == 1 and len(stacks) == 1 else f"{path.name}[{', '.join(where)}]"
            sources.append(FrameSource(path, z, name, reader=partial(read_plane, info, z), stack=info))
    return sources


def read_stacks(path: Path, tf: tifffile.TiffFile, *, time: int | None = None,
                position: int | None = None) -> list[StackInfo]:
    """The stacks of an OME-TIFF or ImageJ file, as selected by ``time`` and ``position``."""
    len(tf.pages)  # every page indexed now, so a cut chain is found while the file is listed
    series = [s for s in tf.series if s.kind in ("ome", "imagej")] or list(tf.series[:1])
    stacks = []
    for index in selected(path, position, len(series)):
        info = _stack_info(path, tf, series[index], index, len(series))
        stacks += [replace(info, time=t) for t in selected_times(path, time, info.times, "T" in info.axes)]
    return stacks


def selected(path: Path, position: int | None, positions: int) -> list[int]:
    """The stage positions ``--position`` picks (all of them when None); InputError past the end."""
    if position is None:
        return list(range(positions))
    if not 0 <= position < positions:
        raise InputError(f"{path}: --position {position} asked for, but the file holds {_count(positions, 'position')} "
                         f"(0 to {positions - 1}); pick one of those")
    return [position]


def selected_times(path: Path, time: int | None, times: int, has_t: bool) -> list:
    """The time points ``--time`` picks: each one (all when None), or [None] for a file without a T
    axis; InputError for one the file does not hold."""
    if time is not None and not (has_t and 0 <= time < times):
        what = f"has {times} time points (0 to {times - 1})" if has_t else "has no T axis"
        raise InputError(f"{path}: --time {time} asked for, but the file {what}; "
                         f"{'pick one of those' if has_t else 'omit --time'}")
    if time is not None:
        return [time]
    return list(range(times)) if has_t else [None]


def check_samples(path: Path, dtype, channels: int) -> None:
    """DecodeError or InputError for samples or a number of channels the fusion cannot take."""
    if np.dtype(dtype) not in DTYPES:
        raise DecodeError(path, f"holds {np.dtype(dtype)} samples; gpustack reads uint8, uint16 and float32 "
                                f"microscopy data — convert the stack (e.g. Fiji: Image > Type > 16-bit)")
    if channels > MAX_CHANNELS:
        raise InputError(f"{path}: has {channels} channels; gpustack fuses at most {MAX_CHANNELS} at once — "
                         f"split the channels into several files (Fiji: Image > Color > Split Channels)")


def _count(n, what):
    return f"{n} {what}{'s' if n != 1 else ''}"


def _stack_info(path: Path, tf: tifffile.TiffFile, s, index: int, positions: int) -> StackInfo:
    axes, shape = s.axes, tuple(int(n) for n in s.shape)
    extra = set(axes) - set("TCZYXS")
    if extra or not {"Y", "X"} <= set(axes):
        raise DecodeError(path, f"has axes {axes} {shape}; gpustack reads T, C, Z, Y, X and S (RGB samples) — "
                                f"save the stack with those axes (e.g. from Fiji as OME-TIFF)")
    dtype = np.dtype(s.dtype)
    sizes = dict(zip(axes, shape))
    check_samples(path, dtype, sizes.get("C", 1) * sizes.get("S", 1))
    fmt = "OME-TIFF" if tf.is_ome else "ImageJ hyperstack"
    meta = _ome_meta(tf, index) if tf.is_ome else _imagej_meta(tf)
    names = meta.get("names") or ()
    if len(names) != sizes.get("C", 1):
        names = tuple(f"C{c}" for c in range(sizes.get("C", 1)))
    if sizes.get("S", 1) > 1:
        rgb = ("R", "G", "B", "A")
        names = tuple(f"{n}:{rgb[k] if k < 4 else k}" if len(names) > 1 else rgb[k] if k < 4 else f"S{k}"
                      for n in names for k in range(sizes["S"]))
    planes = sizes.get("Z", 1)
    z_step, z_source = meta.get("z_step"), meta.get("z_step_source")
    z_positions = meta.get("z_positions")
    if z_positions is not None and len(z_positions) == planes and planes > 1:
        steps = np.diff(np.asarray(z_positions, np.float64))
        if z_step is None and np.all(steps != 0):
            z_step, z_source = float(abs(np.median(steps))), "OME-XML Plane PositionZ"
    cal = Calibration(meta.get("pixel_size"), meta.get("pixel_size_source"), z_step, z_source if z_step else None)
    _check_contents(path, s, shape)
    return StackInfo(path, fmt, axes, shape, dtype, tuple(str(n) for n in names), cal, planes,
                     significant_bits=meta.get("bits"), series=index, positions=positions,
                     time=0 if "T" in axes else None, times=sizes.get("T", 1), z_positions=z_positions)


def _check_contents(path: Path, s, shape) -> None:
    """Metadata that contradict the pixel data: planes the axes promise that the file does not hold."""
    declared = math.prod(n for a, n in zip(s.axes, shape) if a not in _PLANE_AXES)
    pages = len(s.pages)
    missing = sum(p is None for p in s.pages)
    if pages < declared or missing:
        held = pages - missing
        raise DecodeError(path, f"its metadata declare {declared} planes ({s.axes} {shape}) but the file holds "
                                f"{held}; the file may be truncated, or its metadata wrong — re-export it")
    key = s.keyframe
    plane = tuple(n for a, n in zip(s.axes, shape) if a in _PLANE_AXES)
    if tuple(key.shape) != plane and tuple(np.squeeze(np.empty(key.shape, np.uint8)).shape) != tuple(
            n for n in plane if n != 1):
        raise DecodeError(path, f"its metadata declare planes of {plane} but its pages are {key.shape}; "
                                f"the metadata contradict the pixel data — re-export the file")


def _unit_um(value, unit, default="µm") -> float | None:
    try:
        return length_um(f"{float(value)!r}{unit or default}")
    except (InputError, TypeError, ValueError):
        return None


def _listed(x) -> list:
    return x if isinstance(x, list) else [] if x is None else [x]


def _ome_meta(tf: tifffile.TiffFile, index: int) -> dict:
    """Channel names, pixel size, z-step and plane positions of OME image ``index`` (tifffile's parser)."""
    try:
        ome = tifffile.xml2dict(tf.ome_metadata)["OME"]
        pixels = _listed(ome.get("Image"))[index]["Pixels"]
    except Exception as exc:  # noqa: BLE001 - a malformed OME-XML: read the pixels, say what was lost
        logger.warning("%s: OME-XML metadata unreadable (%s: %s); no channel names or calibration",
                       tf.filehandle.name, type(exc).__name__, exc)
        return {}
    out = {"names": tuple(c.get("Name") or f"C{i}" for i, c in enumerate(_listed(pixels.get("Channel"))))}
    sx = _unit_um(pixels.get("PhysicalSizeX"), pixels.get("PhysicalSizeXUnit"))
    sy = _unit_um(pixels.get("PhysicalSizeY"), pixels.get("PhysicalSizeYUnit"))
    if sx and sy:
        out["pixel_size"], out["pixel_size_source"] = (sy, sx), "OME-XML PhysicalSizeX/Y"
    sz = _unit_um(pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit"))
    if sz:
        out["z_step"], out["z_step_source"] = sz, "OME-XML PhysicalSizeZ"
    bits = pixels.get("SignificantBits")
    if bits:
        out["bits"] = int(bits)
    z = {}
    for plane in _listed(pixels.get("Plane")):
        if plane.get("PositionZ") is not None and plane.get("TheC", 0) == 0 and plane.get("TheT", 0) == 0:
            z[int(plane.get("TheZ", 0))] = _unit_um(plane["PositionZ"], plane.get("PositionZUnit"))
    n = int(pixels.get("SizeZ", 1))
    if z and len(z) == n and None not in z.values():
        out["z_positions"] = tuple(z[k] for k in range(n))
    return out


def _imagej_meta(tf: tifffile.TiffFile) -> dict:
    """Pixel size (resolution tags with the ``unit``) and z-step (``spacing``) of an ImageJ file."""
    meta = tf.imagej_metadata or {}
    out = {}
    unit = meta.get("unit") or ""
    unit = {"micron": "um", "microns": "um", "\\u00B5m": "um"}.get(unit, unit)
    page = tf.pages.first
    xr, yr = page.tags.get("XResolution"), page.tags.get("YResolution")
    if unit and xr is not None and yr is not None:
        (xn, xd), (yn, yd) = xr.value, yr.value
        if xn and yn:
            sx, sy = _unit_um(xd / xn, unit), _unit_um(yd / yn, unit)
            if sx and sy:
                out["pixel_size"], out["pixel_size_source"] = (sy, sx), "ImageJ resolution tags and unit"
    if meta.get("spacing") and unit:
        sz = _unit_um(meta["spacing"], unit)
        if sz:
            out["z_step"], out["z_step_source"] = sz, "ImageJ spacing"
    return out


def read_plane(info: StackInfo, z: int) -> tuple[np.ndarray, dict]:
    """Focal plane ``z`` of the stack ``info``: (H, W, C) with every channel (and sample), as stored."""
    with tifffile.TiffFile(info.path) as tf:
        s = [s for s in tf.series if s.kind in ("ome", "imagej")] or list(tf.series[:1])
        s = s[info.series]
        sizes = dict(zip(s.axes, s.shape))
        lead = [a for a in s.axes if a not in _PLANE_AXES]
        if tuple(s.shape) != info.shape:
            raise DecodeError(info.path, "changed since it was listed; list the frames again")
        h, w = sizes["Y"], sizes["X"]
        nc, ns = sizes.get("C", 1), sizes.get("S", 1)
        out = np.empty((h, w, nc * ns), info.dtype)
        for c in range(nc):
            at = {"T": info.time or 0, "Z": z, "C": c}
            index = int(np.ravel_multi_index([at[a] for a in lead], [sizes[a] for a in lead])) if lead else 0
            page = s.pages[index]
            if page is None:
                raise DecodeError(info.path, f"plane z={z}, channel {c} is missing; the file may be truncated")
            plane = page.asarray()
            if plane.ndim == 3 and page.axes.startswith("S"):
                plane = np.moveaxis(plane, 0, -1)
            plane = plane.reshape(h, w, ns)
            out[:, :, c * ns:(c + 1) * ns] = plane
    return out, {"bits": info.significant_bits or info.dtype.itemsize * 8, "z": z,
                 **({} if info.time is None else {"t": info.time})}


def z_position(source) -> float | None:
    """The z position (microns) of a microscopy plane source, from its file's metadata; else None."""
    info = source.stack
    if info is None or info.z_positions is None:
        return None
    return info.z_positions[source.page]


def z_order(sources: list) -> list:
    """``sources`` (in name order) sorted by their z position in the metadata (``--order z``); names
    break ties. InputError naming the first file without one."""
    for s in sources:
        if z_position(s) is None:
            raise InputError(f"--order z: {s.name} has no z position in its metadata (OME-XML Plane PositionZ); "
                             f"use --order name")
    return sorted(sources, key=z_position)  # stable: name order breaks ties


def array_sources(planes: np.ndarray, *, channel_names=None, pixel_size=None, z_step=None, name="array") -> list:
    """Frame sources for a microscopy z-stack held in memory, ``planes`` (Z, C, H, W) (the napari
    widget's layer): each focal plane one frame with every channel, read as a file's would be
    (linear, not rescaled), with ``channel_names`` and the calibration (microns) given."""
    from .frames import FrameSource

    planes = np.asarray(planes)
    if planes.ndim != 4:
        raise InputError(f"{name}: a z-stack in memory must be (Z, C, H, W); got shape {planes.shape}")
    z, c, h, w = planes.shape
    dtype = planes.dtype if planes.dtype in DTYPES else np.dtype(np.float32)
    check_samples(Path(name), dtype, c)
    names = tuple(channel_names or (f"C{i}" for i in range(c)))
    if len(names) != c:
        raise InputError(f"{name}: {c} channels but {len(names)} channel names")
    cal = Calibration(None if pixel_size is None else (float(pixel_size[0]), float(pixel_size[1])),
                      None if pixel_size is None else "given", z_step, None if z_step is None else "given")
    info = StackInfo(Path(name), "array", "ZCYX", planes.shape, dtype, names, cal, z)

    def read(k):
        return np.ascontiguousarray(np.moveaxis(planes[k], 0, -1), dtype=dtype), {"bits": dtype.itemsize * 8, "z": k}

    return [FrameSource(None, k, f"{name}[z={k}]", reader=partial(read, k), stack=info) for k in range(z)]
