"""Camera RAW decoding through rawpy (LibRaw).

Every frame is developed with one fixed parameter set, :data:`POSTPROCESS`:
linear (``gamma=(1, 1)``), 16-bit, as-shot white balance, no flip, and no
automatic brightening. ``adjust_maximum_thr=0.0`` matters: rawpy's default
(0.75) replaces the white level by each frame's brightest pixel, which makes
the exposure jump between frames of one stack (DESIGN.md, section 1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import rawpy

from ..errors import DecodeError
from ._meta import capture_time, exif_bytes, exif_from_file

logger = logging.getLogger(__name__)

#: The keyword arguments of ``rawpy.RawPy.postprocess`` used for every frame.
POSTPROCESS = dict(
    gamma=(1, 1),
    no_auto_bright=True,
    output_bps=16,
    use_camera_wb=True,
    adjust_maximum_thr=0.0,
    user_flip=0,
)

CORRUPT_HINT = "the file may be truncated or corrupt — re-copy it or remove it from the frames"


def read_raw(path) -> tuple[np.ndarray, bytes | None, dict]:
    """Decode a camera RAW file to linear 16-bit RGB.

    Parameters
    ----------
    path : str or Path
        The RAW file (any format LibRaw reads: DNG, CR2, CR3, NEF, ARW, ...).

    Returns
    -------
    data : ndarray, uint16, shape (H, W, 3)
        Linear camera RGB, as-shot white balance, not rotated.
    exif : bytes or None
        Sanitised EXIF block for TIFF-based RAWs (DNG, CR2, NEF, ARW, ...), else None.
    info : dict
        ``bits`` (16), ``raw_bits`` (bits of the white level), ``white_level``,
        ``black_levels``, ``camera_wb``, ``flip`` (the orientation LibRaw
        reports; not applied), ``read_s`` and ``capture_time`` when known.

    Raises
    ------
    DecodeError
        LibRaw cannot open, unpack or develop the file.
    """
    path = Path(path)
    start = time.perf_counter()
    try:
        with rawpy.imread(str(path)) as raw:
            info = {
                "bits": 16,
                "raw_bits": int(raw.white_level).bit_length(),
                "white_level": int(raw.white_level),
                "black_levels": [int(v) for v in raw.black_level_per_channel],
                "camera_wb": [float(v) for v in raw.camera_whitebalance],
                "flip": int(raw.sizes.flip),
            }
            data = raw.postprocess(**POSTPROCESS)
    except Exception as exc:  # noqa: BLE001 - every LibRaw failure becomes one DecodeError
        raise DecodeError(path, f"cannot decode RAW: {_reason(exc)}; {CORRUPT_HINT}") from exc
    if data.dtype != np.uint16 or data.ndim != 3 or data.shape[2] != 3:
        raise DecodeError(path, f"LibRaw returned {data.dtype} {data.shape}, expected uint16 (H, W, 3); {CORRUPT_HINT}")
    data = np.ascontiguousarray(data)
    exif = exif_from_file(path, "raw")
    when = capture_time(exif)
    if when:
        info["capture_time"] = when
    info["read_s"] = time.perf_counter() - start
    logger.debug("read RAW %s: %s in %.3f s", path.name, data.shape, info["read_s"])
    return data, exif_bytes(exif), info


def _reason(exc: BaseException) -> str:
    """``LibRawFileUnsupportedError (Unsupported file format or not RAW file)`` from an exception."""
    detail = exc.args[0] if len(exc.args) == 1 else str(exc)
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    detail = " ".join(str(detail).split())
    return f"{type(exc).__name__} ({detail})" if detail else type(exc).__name__
