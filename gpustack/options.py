"""Every option of a stack run: names, defaults, choices and range checks.

One name per option in Python and on the command line
(``energy_radius`` is ``--energy-radius``). The CLI builds its choices from the
registries below, so the two cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

#: ``--backend``: where the pixel work runs. ``auto`` picks ``cuda`` when CuPy sees a device.
BACKENDS = ("auto", "cpu", "cuda")

#: ``--method``: how frames are fused.
METHODS = {
    "soft": "per pixel a soft selection of the sharpest frames, one pass (default: cleanest at occlusion edges, "
            "keeps the sharp frames' tone)",
    "pyramid": "Laplacian pyramid, per level the coefficient of highest local energy (the former default; "
               "coarsest level averaged over the frames)",
    "depthmap": "pixels taken from the frame(s) the smoothed depth map names (reads the frames twice)",
}

#: ``--order``: the shot order of the frames.
ORDERS = {
    "name": "natural sort of the file names (frame2 before frame10)",
    "exif": "EXIF capture time (DateTimeOriginal + sub-seconds), names break ties",
    "reverse": "natural sort of the names, reversed",
    "z": "microscopy: the z position in each file's metadata (OME-XML PositionZ), names break ties",
}

#: ``--align``: the transform model fitted between neighbouring frames.
ALIGN_MODELS = {
    "none": "no alignment (microscopes and rails that do not move or breathe)",
    "translation": "shifts only",
    "scale": "shifts and magnification (focus breathing)",
    "similarity": "shifts, magnification and rotation (default)",
    "affine": "a general affine transform",
}

#: ``--raw-develop``: who develops camera RAW frames.
RAW_DEVELOP = {
    "backend": "our kernels develop 2x2 Bayer mosaics on the backend (default); LibRaw develops the rest",
    "libraw": "LibRaw develops every RAW frame on the host (linear, as-shot white balance)",
}

#: ``--demosaic``: how the backend's RAW development fills in the missing colours.
DEMOSAIC = {
    "rcd": "ratio corrected demosaicing, edge-directed (default; the sharpest, 4-5x mhc's time on a CPU)",
    "mhc": "Malvar-He-Cutler gradient-corrected linear interpolation (fast)",
    "bilinear": "bilinear interpolation",
}

#: ``--color``: the colour space of RAW frames developed on the backend.
COLORS = {
    "srgb": "linear sRGB through the camera's colour matrix (default)",
    "camera": "white-balanced camera RGB (no colour matrix)",
}

#: ``--bits``: sample depth of the fused image; ``None`` means by format (TIFF/PNG 16, JPEG 8).
BITS = (8, 16)

#: Output formats by file extension (``.ome.tif`` / ``.ome.tiff``: OME-TIFF, see ``output_format``).
OUTPUT_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}

#: What ``--stacks`` accepts: how a root is cut into stacks.
DISCOVERY = {
    "subfolders": "each folder (recursively) that holds frames is one stack, named by its path relative to ROOT",
    "files": "each multi-page TIFF, OME-TIFF or microscopy file is one stack (one per stage position)",
}
#: ``gpustack batch --format``: the fused image's format (default: ome.tif for microscopy inputs, tif otherwise).
BATCH_FORMATS = (".tif", ".png", ".jpg", ".ome.tif")

#: Length units accepted by ``--pixel-size`` and ``--z-step`` (and read from microscopy metadata),
#: in microns. ``µ`` may be the micro sign (U+00B5) or the Greek mu (U+03BC); no unit: microns.
LENGTH_UNITS = {"nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "mm": 1e3,
                "cm": 1e4, "m": 1e6, "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4}
_LENGTH = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf(?:inity)?|nan)\s*([^\d\s].*?)?\s*$",
                     re.IGNORECASE)

#: ``confidence_threshold`` default: below it the height map is NaN (see ``StackOptions``).
CONFIDENCE_THRESHOLD = 0.8


def length_um(value, name: str = "length") -> float:
    """A length in microns from a number (microns) or a text with a unit: ``2.5um``, ``0.5 µm``,
    ``500nm``, ``2.5`` (microns). InputError naming ``name`` for anything else, or a value that is
    not positive and finite. The one place units are parsed (options and microscopy metadata)."""
    bad = f"{name} must be a positive, finite number of microns, or a length such as 2.5um, 0.5 µm or 500nm; got {value!r}"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number, unit = float(value), "um"
    elif isinstance(value, str) and (match := _LENGTH.match(value)):
        number, unit = float(match.group(1)), (match.group(2) or "um").strip().lower()
        if unit not in LENGTH_UNITS:
            raise InputError(f"{name}: unknown unit {match.group(2)!r} in {value!r}; use one of nm, um (µm), mm")
    else:
        raise InputError(bad)
    microns = number * LENGTH_UNITS[unit]
    if not (math.isfinite(microns) and microns > 0):
        raise InputError(bad)
    return microns


@dataclass(frozen=True)
class StackOptions:
    """Options of one stack run; every field but ``maps`` (which the command sets from the maps it is
    asked to write) is also a ``gpustack stack`` option.

    Parameters
    ----------
    backend : {"auto", "cpu", "cuda"}
        Where the pixel work runs.
    method : {"soft", "pyramid", "depthmap"}
        Fusion method (``soft``, the default: ``gpustack.stages.soft``).
    order : {"name", "exif", "reverse"}
        Shot order of file inputs (arrays are taken in the order given).
    linear : bool
        Frames are linear light and the output stays linear: no sRGB curve is
        removed from integer inputs nor applied to the output. RAW and float
        inputs are always linear on reading.
    output : path or None
        Where to write the fused image (.tif/.tiff, .png, .jpg/.jpeg).
    depth_map : path or None
        Where to write the depth map (float32 TIFF: frame index, or microns with ``z_step``).
    overwrite : bool
        Replace existing outputs.
    bits : {8, 16} or None
        Sample depth of the written image; by format when None.
    levels : int or None
        ``pyramid`` and ``depthmap`` methods: pyramid levels, 2 or more (the finest and the coarsest count); None picks as many as keep the
        coarsest level at least 16 pixels on its short side, at most 10.
    energy_radius : int
        ``pyramid`` and ``depthmap`` methods: local energy window radius: the focus measure of a pyramid coefficient
        is the sum of squared coefficients (all channels) in a
        (2r+1) x (2r+1) window.
    depth_radius : int
        ``pyramid`` and ``depthmap`` methods: focus-score window radius of the depth map: the finest level's squared
        coefficients summed over (2r+1) x (2r+1) (wider than ``energy_radius``:
        steadier depth, same pixel choice).
    depth_smooth : int
        Radius in pixels of the confidence-weighted smoothing of the depth map.
    contrast_threshold : float
        ``depthmap`` method: where the depth confidence (0..1) is below this,
        the pyramid result is used instead.
    align : {"none", "translation", "scale", "similarity", "affine"}
        Transform model between neighbouring frames, composed along the chain to the reference.
    reference : int or None
        Index (0-based, in shot order; negative indices are refused) of the frame whose geometry the
        output has; the middle frame when None.
    brightness : bool
        Match each frame's per-channel brightness to the reference (linear-light gain).
    crop : bool
        Crop the output to the area every aligned frame covers; otherwise keep the reference
        canvas and set the confidence of uncovered pixels to 0.
    raw_develop : {"backend", "libraw"}
        Camera RAW frames: developed by the backend's kernels (2x2 Bayer mosaics; others by
        LibRaw, with a log line) or all by LibRaw.
    demosaic : {"rcd", "mhc", "bilinear"}
        Demosaic of the backend's RAW development: ratio corrected (edge-directed, the default),
        Malvar-He-Cutler (linear, faster on a CPU) or bilinear.
    color : {"srgb", "camera"}
        Output colours of the backend's RAW development: linear sRGB, or white-balanced camera RGB.
    z_step : float, str or None
        Distance between frames (focal planes): microns, or a text with a unit (``"2.5um"``,
        ``"500nm"``), stored in microns; overrides a microscopy file's z-step. The depth map is then
        written in microns.
    pixel_size : float, str or None
        Pixel size (X and Y) in microns or with a unit, as ``z_step``; overrides a microscopy
        file's calibration. Written into OME-TIFF outputs.
    time : int or None
        Microscopy files with a T axis: fuse only this time point (0-based); None fuses each time
        point as its own stack (outputs with a T axis).
    position : int or None
        Microscopy files with several stage positions (OME images): fuse only this one (0-based);
        None fuses each as its own stack.
    focus_channel : str, int or None
        The channel (name, or 0-based index) whose focus measure chooses the planes; every channel
        is taken from the same planes at each pixel. None: the sum of the focus energies of all
        channels.
    per_channel : bool
        Fuse each channel on its own (its own depth map): for samples whose channels lie at
        different depths. The height and depth maps then have one plane per channel.
    height_map : path or None
        Where to write the height map: float32 OME-TIFF in microns (``z_step`` times the sub-plane
        index, 0 at the first plane, growing with the plane index), the XY calibration of the image,
        NaN where the confidence is below ``confidence_threshold``. Needs a z-step (metadata or option).
    confidence_map : path or None
        Where to write the confidence (float32 0..1) as a TIFF (OME-TIFF for ``.ome.tif``).
    confidence_threshold : float
        Below this confidence (0..1) the height map is NaN: no plane stood out there (a dark
        background has no focus information).
    maps : bool
        Make the depth map and its confidence (``StackResult.depth``, ``depth_raw``,
        ``confidence``, and ``height`` where a z-step is known). False leaves them None and skips
        their per-frame work (with the ``soft`` method about a fifth of the fold, and three
        full-size planes of memory); refused with a map to write. The ``depthmap`` method makes the
        depth map whatever this says: it fuses by it. The command line sets it from the maps it is
        asked to write (``--depth-map``, ``--height-map``, ``--confidence-map``).
    sidecar : bool
        Write ``<output>.json`` with options, versions, per-frame information and timings.
    workers : int
        Reader threads decoding frames ahead of the fusion.
    queue_size : int
        Decoded frames waiting for the fusion at most, besides the ones being decoded (the ones
        the alignment is estimating count): with ``workers`` and the frame being fused, the bound
        on the frames in memory.
    """

    backend: str = "auto"
    method: str = "soft"
    order: str = "name"
    linear: bool = False
    output: Path | None = None
    depth_map: Path | None = None
    overwrite: bool = False
    bits: int | None = None
    levels: int | None = None
    energy_radius: int = 2
    depth_radius: int = 4
    depth_smooth: int = 2
    contrast_threshold: float = 0.3
    align: str = "similarity"
    reference: int | None = None
    brightness: bool = True
    crop: bool = True
    raw_develop: str = "backend"
    demosaic: str = "rcd"
    color: str = "srgb"
    z_step: float | None = None
    pixel_size: float | None = None
    time: int | None = None
    position: int | None = None
    focus_channel: str | int | None = None
    per_channel: bool = False
    height_map: Path | None = None
    confidence_map: Path | None = None
    confidence_threshold: float = CONFIDENCE_THRESHOLD
    maps: bool = True
    sidecar: bool = True
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    queue_size: int = 1

    def __post_init__(self):
        _choice("backend", self.backend, BACKENDS)
        _choice("method", self.method, METHODS)
        _choice("order", self.order, ORDERS)
        _choice("align", self.align, ALIGN_MODELS)
        _choice("raw_develop", self.raw_develop, RAW_DEVELOP)
        _choice("demosaic", self.demosaic, DEMOSAIC)
        _choice("color", self.color, COLORS)
        if self.reference is not None and (isinstance(self.reference, bool) or not isinstance(self.reference, int)
                                           or self.reference < 0):
            raise InputError(f"reference must be a frame index: 0 for the first frame in shot order, 1 for the "
                             f"next...; got {self.reference!r}")
        for name in ("output", "depth_map", "height_map", "confidence_map"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.output is not None and self.output.suffix.lower() not in OUTPUT_FORMATS:
            kinds = ", ".join(sorted(OUTPUT_FORMATS))
            if self.output.is_dir():
                raise InputError(f"output {self.output} is a folder; give the file to write, such as "
                                 f"{self.output / 'fused.tif'} (one of {kinds})")
            what = f"unknown extension {self.output.suffix!r}" if self.output.suffix else "no extension"
            raise InputError(f"output {self.output}: {what}; use one of {kinds}")
        for name, what in (("depth_map", "depth map"), ("height_map", "height map"), ("confidence_map", "confidence map")):
            path = getattr(self, name)
            if path is not None and path.suffix.lower() not in (".tif", ".tiff"):
                raise InputError(f"{what} {path}: must be a .tif or .tiff file (float32 TIFF; .ome.tif for OME-TIFF)")
            if path is not None and not self.maps:
                raise InputError(f"{what} {path}: maps=False makes no maps; leave maps at True to write it")
        if self.bits is not None:
            _choice("bits", self.bits, BITS)
            if self.output is not None and self.output_format == "jpeg" and self.bits != 8:
                raise InputError(f"output {self.output}: JPEG holds 8 bits per sample; use --bits 8 or a .tif/.png output")
        if self.levels is not None:
            _int_range("levels", self.levels, 2, 16)
        _int_range("energy_radius", self.energy_radius, 0, 8)
        _int_range("depth_radius", self.depth_radius, 0, 16)
        _int_range("depth_smooth", self.depth_smooth, 0, 64)
        _int_range("workers", self.workers, 1, 256)
        _int_range("queue_size", self.queue_size, 1, 64)
        if not (_finite(self.contrast_threshold) and 0.0 <= self.contrast_threshold <= 1.0):
            raise InputError(f"contrast_threshold must be a number from 0 to 1; got {self.contrast_threshold!r}")
        for name in ("z_step", "pixel_size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, length_um(value, name))
        for name in ("time", "position"):
            value = getattr(self, name)
            if value is not None:
                _int_range(name, value, 0, 2**31 - 1)
        if self.focus_channel is not None:
            fc = self.focus_channel
            if isinstance(fc, str) and fc.strip().isdigit():
                fc = int(fc.strip())
            if isinstance(fc, bool) or not isinstance(fc, (str, int)) or (isinstance(fc, int) and fc < 0) or fc == "":
                raise InputError(f"focus_channel must be a channel name or a 0-based channel index; got {fc!r}")
            object.__setattr__(self, "focus_channel", fc)
            if self.per_channel:
                raise InputError("focus_channel and per_channel exclude each other: per_channel fuses every channel "
                                 "by its own focus; choose one")
        if not (_finite(self.confidence_threshold) and 0.0 <= self.confidence_threshold <= 1.0):
            raise InputError(f"confidence_threshold must be a number from 0 to 1; got {self.confidence_threshold!r}")

    @property
    def output_format(self) -> str | None:
        """``"tiff"``, ``"png"``, ``"jpeg"`` or ``"ome-tiff"`` (``.ome.tif``) from the output's extension
        (None without output)."""
        if self.output is None:
            return None
        return "ome-tiff" if is_ome_path(self.output) else OUTPUT_FORMATS[self.output.suffix.lower()]

    @property
    def makes_maps(self) -> bool:
        """Whether the run makes the depth map and its confidence: ``maps``, or the depthmap method,
        which fuses by its depth map."""
        return self.maps or self.method == "depthmap"

    @property
    def output_bits(self) -> int:
        """Sample depth of the fused image as written (and as returned in ``StackResult.image``)."""
        if self.bits is not None:
            return self.bits
        return 8 if self.output_format == "jpeg" else 16

    def replace(self, **changes) -> "StackOptions":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict of every option (paths as strings)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def sidecar_path(output: Path | str) -> Path:
    """Path of the JSON sidecar of an output: ``fused.tif`` -> ``fused.tif.json``.

    The suffix is appended rather than replaced so that the sidecar can never
    collide with an input named ``fused.json``, nor with a ``fused.png``
    written beside ``fused.tif``.
    """
    output = Path(output)
    return output.with_name(output.name + ".json")


def is_ome_path(path) -> bool:
    """Whether ``path`` names an OME-TIFF (``.ome.tif`` or ``.ome.tiff``)."""
    name = Path(path).name.lower()
    return name.endswith(".ome.tif") or name.endswith(".ome.tiff")


def _choice(name, value, choices):
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _finite(value) -> bool:
    """A real number (not a bool), neither NaN nor infinite: every float option must be one."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _int_range(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{name} must be a whole number from {lo} to {hi}; got {value!r}")
