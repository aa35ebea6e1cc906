"""What every decoded frame must satisfy before any stage uses it.

The pipeline checks each frame here, once, as soon as it is decoded (files and arrays, lists and
iterators alike), and before the alignment pairs it with a neighbour or the fusion folds it in:
so a bad frame is named in the error, never found later by a stage's own internal check. The checks
run on the host, on the decoded samples, so both backends fail the same way.

- :func:`check_frame`, on each frame alone (on the reader threads): the smallest size the stages
  accept, and finite samples (NaN and infinities in float frames are refused: no stage can give
  them a meaning, and each backend would spread them differently).
- :func:`check_like`, on each frame against the first one read (the reference), in processing
  order: size, channels, kind, and for RAW mosaics the CFA pattern and the camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .estimate import MIN_SIDE
from .fuse import MIN_FRAME


def min_side(aligned: bool, mosaic: bool) -> int:
    """Smallest frame side (pixels) the stages accept: the fusion's ``MIN_FRAME``; when aligning, the
    estimator's ``MIN_SIDE`` for the proxy, which for a RAW mosaic is a half-size development."""
    if not aligned:
        return MIN_FRAME
    return max(MIN_FRAME, MIN_SIDE * (2 if mosaic else 1))


def check_frame(frame, aligned: bool) -> None:
    """InputError naming ``frame`` (a ``gpustack.io.Frame``) if it is too small to stack (or to
    align, with ``aligned``) or holds non-finite samples."""
    h, w = frame.shape[:2]
    need = min_side(aligned, frame.raw is not None)
    if min(h, w) < need:
        why = ""
        if need > MIN_FRAME:
            why = f" to be aligned ({MIN_FRAME}x{MIN_FRAME} with --align none)"
        raise InputError(f"frame {frame.index} ({frame.name}) is {w}x{h} pixels, too small: frames must be at "
                         f"least {need}x{need} pixels{why}")
    data = frame.data
    if data.dtype.kind != "f":
        return
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, which is what is looked for
        total = np.sum(data, dtype=np.float64)  # no temporary of the frame's size
    if not np.isfinite(total):
        bad = data.size - int(np.count_nonzero(np.isfinite(data)))
        raise InputError(f"frame {frame.index} ({frame.name}) has {bad} non-finite sample{'s' if bad != 1 else ''} "
                         f"(NaN or infinity) of {data.size}; float frames must be finite: replace or mask them "
                         f"before stacking")


@dataclass(frozen=True)
class FrameSpec:
    """What :func:`check_like` compares, kept from the first frame without its pixels."""

    index: int
    name: str
    shape: tuple
    dtype: np.dtype
    kind: str
    description: str
    cfa: tuple | None
    camera: tuple | None

    @classmethod
    def of(cls, frame) -> "FrameSpec":
        raw = frame.raw
        return cls(frame.index, frame.name, tuple(frame.shape), frame.data.dtype, frame.kind, describe_kind(frame),
                   None if raw is None else tuple(map(tuple, raw.cfa.tolist())),
                   None if raw is None else (raw.info.get("make"), raw.info.get("model")))


def check_like(frame, first: FrameSpec) -> None:
    """InputError naming ``frame`` if it differs from the first frame read in size, channels, kind,
    CFA pattern or camera."""
    ref = f"frame {first.index} ({first.name})"
    this = f"frame {frame.index} ({frame.name})"
    if tuple(frame.shape[:2]) != first.shape[:2]:
        h, w = frame.shape[:2]
        h0, w0 = first.shape[:2]
        raise InputError(f"{this} is {w}x{h} but {ref} is {w0}x{h0}; all frames must have the same size")
    if frame.shape[2] != first.shape[2]:
        raise InputError(f"{this} has {frame.shape[2]} channel(s) but {ref} has {first.shape[2]}; all frames must "
                         f"be all colour or all grayscale")
    spec = FrameSpec.of(frame)
    if (spec.dtype, spec.kind, spec.cfa is None) != (first.dtype, first.kind, first.cfa is None):
        raise InputError(f"{this} is {spec.description} but {ref} is {first.description}; all frames of a stack "
                         f"must be of one kind")
    if spec.cfa is not None:
        if spec.cfa != first.cfa:
            raise InputError(f"{this} has the CFA pattern {frame.raw.info['color_desc']} {list(map(list, spec.cfa))} "
                             f"but {ref} has {list(map(list, first.cfa))}; all frames must come from one camera")
        if spec.camera != first.camera:
            raise InputError(f"{this} is from {_camera(spec.camera)} but {ref} is from {_camera(first.camera)}; "
                             f"all frames must come from one camera")


def describe_kind(frame) -> str:
    """``"jpeg uint8"``, ``"a camera RAW (Bayer mosaic)"``...: what a frame is, for messages."""
    if frame.raw is not None:
        return "a camera RAW (Bayer mosaic)"
    if frame.kind == "raw":
        return f"a camera RAW developed by LibRaw ({frame.info.get('develop', '')})"
    return f"{frame.kind} {frame.data.dtype}"


def _camera(make_model) -> str:
    return " ".join(filter(None, make_model)) or "an unknown camera"
