"""EXIF helpers shared by the readers and the writer (private).

Frames carry their EXIF as one *sanitised* block (``b"Exif\\0\\0"`` + a TIFF
structure, as a JPEG APP1 segment holds it), built with Pillow from whatever
the source held:

- IFD0: Make, Model, Orientation, DateTime, Artist, Copyright;
- the Exif IFD without MakerNote (its internal offsets break when moved), the
  Interoperability pointer and PixelX/YDimension (the fused image is cropped);
- the GPS IFD.

Thumbnails (IFD1), image-structure tags and vendor blocks are dropped: they
describe the source file, not the fused image. TIFF-EP RAWs (Kodak, early
Nikon) keep exposure tags in IFD0; those are moved into the Exif IFD.
"""

from __future__ import annotations

import logging
from datetime import datetime

from PIL import Image

logger = logging.getLogger(__name__)

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
#: IFD0 tags that describe the picture rather than the file.
_IFD0_KEEP = (271, 272, 274, 306, 315, 33432)  # Make Model Orientation DateTime Artist Copyright
#: Exif-IFD tags dropped: MakerNote, Interop pointer, PixelXDimension, PixelYDimension.
_EXIF_DROP = (37500, 40965, 40962, 40963)
#: Exif-IFD tags that TIFF-EP files store in IFD0.
_EXIF_IN_IFD0 = (33434, 33437, 34850, 34855, 36867, 37377, 37378, 37380, 37381, 37382, 37383, 37385, 37386)

_DATETIME_ORIGINAL, _SUBSEC_ORIGINAL = 36867, 37521
_DATETIME_DIGITIZED, _SUBSEC_DIGITIZED = 36868, 37522
_DATETIME = 306


def exif_from_file(path, kind: str) -> Image.Exif | None:
    """Parse the EXIF of a JPEG, PNG, TIFF or TIFF-based RAW file; None when absent or unreadable.

    Never raises: metadata is optional, a broken EXIF block must not stop a stack.
    """
    try:
        if kind in ("jpeg", "png"):
            with Image.open(path) as im:
                # info, not getexif(): for a PNG without an eXIf chunk before IDAT, getexif() decodes the pixels
                return parse_exif_bytes(im.info.get("exif"))
        elif kind in ("tiff", "raw"):
            with open(path, "rb") as f:
                head = f.read(4)
                if head not in (b"II*\0", b"MM\0*"):
                    return None  # CR3, RAF, X3F...: not TIFF-based
                f.seek(0)
                exif = Image.Exif()
                exif.load_from_fp(f)
        else:
            return None
    except Exception as exc:  # noqa: BLE001 - optional metadata
        logger.debug("no EXIF read from %s: %s: %s", path, type(exc).__name__, exc)
        return None
    return exif if len(exif) else None


def _clean(value):
    return value.rstrip("\0") if isinstance(value, str) else value


def exif_bytes(exif: Image.Exif | None) -> bytes | None:
    """The sanitised EXIF block (see the module docstring) of a parsed EXIF; None if nothing is kept."""
    if exif is None:
        return None
    try:
        out = Image.Exif()
        for tag in _IFD0_KEEP:
            if tag in exif:
                out[tag] = _clean(exif[tag])
        sub = {k: _clean(v) for k, v in exif.get_ifd(_EXIF_IFD).items() if k not in _EXIF_DROP}
        for tag in _EXIF_IN_IFD0:
            if tag in exif and tag not in sub:
                sub[tag] = _clean(exif[tag])
        if sub:
            out[_EXIF_IFD] = sub
        gps = dict(exif.get_ifd(_GPS_IFD))
        if gps:
            out[_GPS_IFD] = gps
        if not len(out):
            return None
        return out.tobytes()
    except Exception as exc:  # noqa: BLE001 - optional metadata
        logger.debug("EXIF not carried: %s: %s", type(exc).__name__, exc)
        return None


def parse_exif_bytes(data: bytes | None) -> Image.Exif | None:
    """Parse an EXIF block (with or without the ``Exif\\0\\0`` prefix); None when empty or broken."""
    if not data:
        return None
    try:
        exif = Image.Exif()
        exif.load(data if data.startswith(b"Exif\0\0") else b"Exif\0\0" + data)
    except Exception as exc:  # noqa: BLE001 - optional metadata
        logger.debug("EXIF block unreadable: %s: %s", type(exc).__name__, exc)
        return None
    return exif if len(exif) else None


def capture_time(exif: Image.Exif | None) -> str | None:
    """Capture time as ISO 8601 text (``2024-05-01T10:11:12.25``), None when absent or invalid.

    DateTimeOriginal (+ SubSecTimeOriginal), else DateTimeDigitized (+ its
    sub-seconds), else IFD0 DateTime (what TIFF-EP RAWs such as Kodak's hold).
    The text sorts in time order for one camera clock.
    """
    if exif is None:
        return None
    try:
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001
        sub = {}
    candidates = (
        (sub.get(_DATETIME_ORIGINAL, exif.get(_DATETIME_ORIGINAL)), sub.get(_SUBSEC_ORIGINAL)),
        (sub.get(_DATETIME_DIGITIZED), sub.get(_SUBSEC_DIGITIZED)),
        (exif.get(_DATETIME), None),
    )
    for stamp, subsec in candidates:
        parsed = _parse_stamp(stamp, subsec)
        if parsed is not None:
            return parsed
    return None


def _parse_stamp(stamp, subsec) -> str | None:
    if not isinstance(stamp, str):
        return None
    try:
        when = datetime.strptime(stamp.strip("\0 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None  # "0000:00:00 00:00:00", blanks, other formats
    text = when.isoformat()
    digits = subsec.strip("\0 ") if isinstance(subsec, str) else ""
    if digits.isdigit():
        text += "." + digits
    return text


def tiff_extratags(exif: Image.Exif | None) -> list[tuple]:
    """tifffile ``extratags`` for the IFD0 tags a TIFF output carries: Make, Model, Artist,
    Copyright, Orientation and DateTime (the source's DateTimeOriginal when it has one)."""
    if exif is None:
        return []
    tags = []
    for tag in (271, 272, 315, 33432):
        value = exif.get(tag)
        if isinstance(value, str) and value.strip("\0 "):
            tags.append((tag, "s", 0, value.strip("\0"), True))
    try:
        original = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL)
    except Exception:  # noqa: BLE001
        original = None
    stamp = original if _parse_stamp(original, None) else exif.get(_DATETIME)
    if _parse_stamp(stamp, None):
        tags.append((_DATETIME, "s", 0, stamp.strip("\0 ")[:19], True))
    orientation = exif.get(274)
    if isinstance(orientation, int) and 1 <= orientation <= 8:
        tags.append((274, "H", 1, orientation, True))
    return sorted(tags)
