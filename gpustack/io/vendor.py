"""Vendor microscopy files (Nikon ND2, Zeiss CZI, Leica LIF) through bioio and its reader plugins.

An optional extra, ``pip install 'gpustack[microscopy]'`` (bioio with bioio-nd2, bioio-czi and
bioio-lif): without it, a vendor file is refused with one line that names the extra. The file's
scenes are its stage positions, each one stack (or one per time point); every focal plane (Z) is
one frame holding every channel, as for OME-TIFF (:mod:`gpustack.io.ome`), with the channel names
and the physical pixel sizes of bioio's metadata.

The tests run this code against a stand-in of bioio's ``BioImage`` interface (CI), and against
bioio itself through its OME-TIFF plugin where bioio is installed (an OME-TIFF the tests write,
opened as a vendor file would be); ND2, CZI and LIF have no writer the tests could make files
with, so those plugins are untested here (README, Microscopy).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DecodeError, InputError
from .ome import Calibration, StackInfo, check_samples, selected, selected_times

logger = logging.getLogger(__name__)

#: extension -> (format, the bioio plugin that reads it)
VENDOR_FORMATS = {".nd2": ("Nikon ND2", "bioio-nd2"), ".czi": ("Zeiss CZI", "bioio-czi"),
                  ".lif": ("Leica LIF", "bioio-lif")}
EXTRA = "pip install 'gpustack[microscopy]'"
_open = threading.local()  # per reader thread: the file last opened (bioio parses metadata on open)


def _bioio(path: Path, fmt: str, plugin: str):
    try:
        import bioio
    except ImportError as exc:
        raise InputError(f"{path}: reading {fmt} files needs the microscopy extra: {EXTRA} (bioio and "
                         f"{plugin}); or export the stack as OME-TIFF (Fiji: File > Save As > OME-TIFF)") from exc
    return bioio


def _image(path: Path, fmt: str, plugin: str):
    bioio = _bioio(path, fmt, plugin)
    cached = getattr(_open, "image", None)
    if cached is not None and cached[0] == path:
        return cached[1]
    try:
        image = bioio.BioImage(path)
    except Exception as exc:  # noqa: BLE001 - bioio raises its own and the plugins' errors
        name = type(exc).__name__
        if "Unsupported" in name or "plugin" in str(exc).lower():
            raise InputError(f"{path}: no bioio reader for {fmt} files is installed: {EXTRA} (or pip install "
                             f"{plugin})") from exc
        raise DecodeError(path, f"cannot read: {name}: {str(exc).splitlines()[0][:120] if str(exc) else ''}; "
                                f"the file may be truncated or corrupt — re-copy or re-export it") from exc
    _open.image = (path, image)
    return image


def vendor_sources(path: Path, *, time: int | None = None, position: int | None = None) -> list:
    """One FrameSource per focal plane of each stack of a vendor file (see the module docstring)."""
    from .frames import FrameSource

    fmt, plugin = VENDOR_FORMATS[path.suffix.lower()]
    image = _image(path, fmt, plugin)
    scenes = list(image.scenes)
    sources = []
    for index in selected(path, position, len(scenes)):
        image.set_scene(index)
        info = _stack_info(path, image, fmt, index, len(scenes))
        for t in selected_times(path, time, info.times, info.times > 1):
            stack = replace(info, time=t)
            for z in range(info.planes):
                where = ", ".join(p for p in (f"position={index}" if len(scenes) > 1 else "",
                                              f"t={t}" if info.times > 1 else "", f"z={z}") if p)
                sources.append(FrameSource(path, z, f"{path.name}[{where}]",
                                           reader=partial(read_vendor_plane, stack, plugin, z), stack=stack))
    return sources


def _stack_info(path, image, fmt, index, positions) -> StackInfo:
    dims = image.dims
    sizes = {a: int(getattr(dims, a, 1) or 1) for a in "TCZYXS"}
    dtype = np.dtype(image.dtype)
    check_samples(path, dtype, sizes["C"] * sizes["S"])
    names = tuple(str(n) for n in (image.channel_names or ()))
    if len(names) != sizes["C"]:
        names = tuple(f"C{c}" for c in range(sizes["C"]))
    px = image.physical_pixel_sizes
    pixel = (float(px.Y), float(px.X)) if px.Y and px.X else None
    cal = Calibration(pixel, f"{fmt} metadata (bioio)" if pixel else None, float(px.Z) if px.Z else None,
                      f"{fmt} metadata (bioio)" if px.Z else None)
    return StackInfo(path, fmt, dims.order, tuple(image.shape), dtype, names, cal, sizes["Z"],
                     significant_bits=None, series=index, positions=positions,
                     time=0 if sizes["T"] > 1 else None, times=sizes["T"])


def read_vendor_plane(info: StackInfo, plugin: str, z: int) -> tuple[np.ndarray, dict]:
    """Focal plane ``z`` of ``info``'s stack: (H, W, C) with every channel (and sample)."""
    image = _image(info.path, info.format, plugin)
    image.set_scene(info.series)
    has_s = "S" in image.dims.order
    order = "YXCS" if has_s else "YXC"
    data = np.asarray(image.get_image_data(order, T=info.time or 0, Z=z))
    h, w = data.shape[:2]
    data = np.ascontiguousarray(data.reshape(h, w, -1))
    return data, {"bits": info.dtype.itemsize * 8, "z": z, **({} if info.time is None else {"t": info.time})}
