"""Microscopy stacks in the pipeline: several stacks from one file, the calibration, the height map.

- :func:`split_stacks`: the sources of one run cut into stacks (a file with a T axis or several
  stage positions holds one per time point and position; all other frames are one stack).
- :func:`check_request`: what the options ask for that the stacks cannot give, refused before any
  frame is read (a height map without a z-step, several stacks into a plain TIFF).
- :func:`height_map`: microns above the first plane, NaN where the confidence is below the
  threshold. Host arithmetic on arrays both backends produced bit for bit, so it is the same.
"""

from __future__ import annotations

import numpy as np

from .._version import __version__
from ..errors import InputError
from ..options import is_ome_path


def split_stacks(sources: list) -> list[list]:
    """``sources`` cut into stacks by their microscopy file's stack key (time point, position),
    keeping their order; frames without one (photographs, single-plane files) form one stack."""
    groups: dict = {}
    for s in sources:
        key = None if s.stack is None or (s.stack.times == 1 and s.stack.positions == 1) else (
            str(s.path), s.stack.key)
        groups.setdefault(key, []).append(s)
    return list(groups.values())


def stack_name(group: list) -> str:
    info = group[0].stack
    parts = [] if info is None else [f"position {info.series}" if info.positions > 1 else "",
                                     f"time point {info.time}" if info.times > 1 else ""]
    return " ".join(p for p in parts if p) or group[0].name


def check_request(stacks: list, options) -> None:
    """InputError for what the options ask of ``stacks`` that cannot be given (before any reading)."""
    if len(stacks) > 1:
        info = stacks[0][0].stack
        what = (f"{info.times} time points" if info.times > 1 else "") + (
            " and " if info.times > 1 and info.positions > 1 else "") + (
            f"{info.positions} positions" if info.positions > 1 else "")
        for name, path in (("output", options.output), ("depth map", options.depth_map),
                           ("height map", options.height_map), ("confidence map", options.confidence_map)):
            if path is not None and not is_ome_path(path):
                raise InputError(f"{info.path} holds {what}, one stack each; the {name} {path} would hold only "
                                 f"one: write an OME-TIFF ({path.stem.split('.')[0]}.ome.tif), or pick one with "
                                 f"--time N / --position N")
    first = stacks[0][0].stack if stacks and isinstance(stacks[0], list) and stacks[0] else None
    if first is not None and options.output is not None and options.output_format in ("png", "jpeg"):
        channels = len(first.channel_names) * (first.shape[first.axes.index("S")] if "S" in first.axes else 1)
        if channels not in (1, 3):
            raise InputError(f"output {options.output}: the stack has {channels} channels "
                             f"({', '.join(first.channel_names)}), which a {options.output_format.upper()} cannot hold; "
                             f"write an OME-TIFF ({options.output.stem}.ome.tif) or a .tif")
    if options.height_map is not None:
        info = first
        has_z = options.z_step is not None or (info is not None and info.calibration.z_step is not None)
        if not has_z:
            where = f"{info.path} has no z-step in its metadata" if info is not None else "the frames carry no z-step"
            raise InputError(f"height map {options.height_map}: {where}; pass the distance between planes with "
                             f"--z-step (e.g. --z-step 2um)")


def z_step_of_planes(sources) -> float | None:
    """The z-step of a stack of single-plane files from their metadata's z positions (the median
    spacing), or None where a file has none or two share one."""
    from ..io.ome import z_position

    z = [z_position(s) for s in sources]
    if len(z) < 2 or any(v is None for v in z):
        return None
    steps = np.abs(np.diff(np.sort(np.asarray(z, np.float64))))
    return float(np.median(steps)) if np.all(steps > 0) else None


def describe_calibration(cal) -> str:
    px = "pixel size unknown" if cal.pixel_size is None else (
        f"pixel {cal.pixel_size[1]:g} x {cal.pixel_size[0]:g} µm ({cal.pixel_size_source})")
    z = "z-step unknown" if cal.z_step is None else f"z-step {cal.z_step:g} µm ({cal.z_step_source})"
    return f"{px}, {z}"


def height_map(index: np.ndarray, conf: np.ndarray, z_step: float, threshold: float) -> np.ndarray:
    """float32 microns: ``index`` (the sub-plane index of the sharpest plane, 0 at the first plane)
    times ``z_step``; NaN where ``conf`` is below ``threshold`` (no plane stood out there)."""
    height = index.astype(np.float32) * np.float32(z_step)
    height[conf < np.float32(threshold)] = np.float32(np.nan)
    return height


def height_text(options, result) -> str:
    """The height map's description (the TIFF's and the OME image's)."""
    d = height_description(options, result)
    return (f"gpustack {__version__} height map: microns above the first plane (plane 0 = 0), "
            f"{d['direction']}; z-step {d['z_step_um']:g} um ({d['z_step_source']}); NaN where the confidence is "
            f"below {d['confidence_threshold']:g}")


def height_description(options, result) -> dict:
    """What the height map holds, for the sidecar."""
    cal = result.calibration
    direction = "increasing with the plane index (towards the last plane of the stack)"
    index = ("the plane of highest focus score, refined by a parabola through its neighbours' scores"
             if options.method == "soft" else "the depth map's plane index before smoothing (a parabola too)")
    return {"unit": "micron", "zero": "the first plane (index 0)", "direction": direction, "plane_index": index,
            "z_step_um": cal.z_step, "z_step_source": cal.z_step_source,
            "confidence_threshold": options.confidence_threshold, "nan": "confidence below the threshold",
            "confidence": ("the best plane's focus score above the mean, in noise floors n, as n / (n + 1)"
                           if options.method == "soft" else "the depth map's confidence"),
            "per_channel": bool(options.per_channel and result.depth.ndim == 3),
            "planes": len(result.frames)}
