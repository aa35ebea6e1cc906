"""Camera RAW decoding through rawpy (LibRaw).

Two paths:

* :func:`unpack_raw` (Bayer sensors): LibRaw only unpacks the sensor mosaic and reads
  the metadata (CFA pattern, black and white levels, as-shot white balance, colour
  matrix) into a :class:`RawMosaic`; :func:`develop_params` turns that into the
  parameters of the backends' ``develop`` op (our kernels, on the device).
* :func:`read_raw` (everything else: X-Trans, Foveon, monochrome, linear DNG, and
  wherever a caller wants LibRaw's own development): every frame is developed with one
  fixed parameter set, :data:`POSTPROCESS`: linear (``gamma=(1, 1)``), 16-bit, as-shot
  white balance, no flip, and no automatic brightening. ``adjust_maximum_thr=0.0``
  matters: rawpy's default (0.75) replaces the white level by each frame's brightest
  pixel, which makes the exposure jump between frames of one stack (DESIGN.md, section 1).

Colour (:func:`camera_to_srgb`, dcraw's ``cam_xyz_coeff``): LibRaw's ``rgb_xyz_matrix``
is the XYZ -> camera matrix (the Adobe one, its first three rows for an RGB sensor).
``cam_rgb = cam_xyz @ SRGB_TO_XYZ`` is then linear sRGB (D65) -> camera RGB; each row is
divided by its sum, so that sRGB white (1, 1, 1) gives camera (1, 1, 1) -- that is,
white-balanced camera RGB, which is what the development has after the white balance;
and ``cam_to_srgb = inv(cam_rgb)``, whose rows therefore sum to 1 (a neutral stays
neutral). Where LibRaw has no ``rgb_xyz_matrix`` (every DNG: LibRaw derives the matrix
of a DNG from its ColorMatrix tags itself, the same way) LibRaw's own camera matrix
(rawpy's ``color_matrix``) is used, rows normalised to sum 1; where there is neither,
the identity (camera RGB is passed through, as LibRaw does). ``info["matrix_source"]``
says which.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    import rawpy  # here: a run of JPEG or TIFF frames does not load LibRaw

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


# --------------------------------------------------------------------------- unpacking (Bayer mosaics)

#: linear sRGB (D65) -> CIE XYZ, dcraw's ``xyz_rgb``.
SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])

_COLOR_LETTERS = {"R": 0, "G": 1, "B": 2}
#: LibRaw's threshold for a usable embedded camera matrix (``cmatrix[0][0]``).
_MATRIX_MIN = 0.125


@dataclass
class RawMosaic:
    """The sensor data of one RAW frame, undeveloped.

    Attributes
    ----------
    mosaic : ndarray, uint16, shape (H, W)
        The visible sensor area (``raw_image_visible``), copied; a (0, 0) array when
        ``is_bayer`` is False.
    cfa : ndarray, int8, shape (2, 2)
        Colour of each 2x2 position of the mosaic (row, column parity): R=0, G=1, B=2.
    black : ndarray, float32, shape (2, 2)
        Black level per 2x2 position.
    white : float
        White level (saturation), LibRaw's ``white_level``.
    wb : ndarray, float32, shape (3,)
        As-shot white balance multipliers (R, G, B), green = 1 (daylight, then ones, when
        the file has none: ``info["wb_source"]``).
    cam_to_srgb : ndarray, float32, shape (3, 3)
        White-balanced camera RGB -> linear sRGB, rows summing to 1 (module docstring).
    is_bayer : bool
        A 2x2 Bayer pattern (one R, one B, two G on a diagonal) of three colours in a flat
        mosaic: what ``develop`` handles. Else the caller falls back to :func:`read_raw`.
    info : dict
        ``make``, ``model`` (EXIF, when present), ``sizes`` (LibRaw's), ``flip`` (not
        applied), ``raw_type``, ``color_desc``, ``num_colors``, ``white_level``,
        ``black_levels``, ``camera_wb``, ``daylight_wb``, ``wb_source``, ``matrix_source``,
        ``raw_bits``, ``read_s``, ``capture_time`` when known.
    exif : bytes or None
        Sanitised EXIF block (as :func:`read_raw` returns it).
    """

    mosaic: np.ndarray
    cfa: np.ndarray
    black: np.ndarray
    white: float
    wb: np.ndarray
    cam_to_srgb: np.ndarray
    is_bayer: bool
    info: dict = field(default_factory=dict)
    exif: bytes | None = None


def camera_to_srgb(cam_xyz) -> np.ndarray:
    """White-balanced camera RGB -> linear sRGB (3, 3) float64 from the XYZ -> camera matrix
    ``cam_xyz`` (its first three rows), the dcraw way: ``cam_rgb = cam_xyz @ SRGB_TO_XYZ``,
    rows normalised to sum 1, inverted. The rows of the result sum to 1."""
    cam_rgb = np.asarray(cam_xyz, np.float64)[:3, :3] @ SRGB_TO_XYZ
    cam_rgb = cam_rgb / cam_rgb.sum(axis=1, keepdims=True)
    return np.linalg.inv(cam_rgb)


def _normalise_rows(m) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return m / m.sum(axis=1, keepdims=True)


def _color_matrix(rgb_xyz, libraw_rgb_cam) -> tuple[np.ndarray, str]:
    """(cam_to_srgb, source): from LibRaw's XYZ -> camera matrix, else LibRaw's own camera
    matrix, else the identity."""
    cam_xyz = np.asarray(rgb_xyz, np.float64)[:3, :3]
    if np.any(cam_xyz != 0):
        with np.errstate(all="ignore"):
            try:
                m = camera_to_srgb(cam_xyz)
            except np.linalg.LinAlgError:
                m = None
        if m is not None and np.all(np.isfinite(m)):
            return m, "rgb_xyz_matrix"
    rgb_cam = np.asarray(libraw_rgb_cam, np.float64)[:3, :3]
    if rgb_cam[0, 0] > _MATRIX_MIN:
        with np.errstate(all="ignore"):
            m = _normalise_rows(rgb_cam)
        if np.all(np.isfinite(m)):
            return m, "color_matrix"
    return np.eye(3), "identity"


def _white_balance(camera_wb, daylight_wb) -> tuple[np.ndarray, str]:
    """(R, G, B) multipliers, green = 1, and where they came from: the as-shot ones, else
    daylight, else ones."""
    for source, wb in (("camera", camera_wb), ("daylight", daylight_wb)):
        rgb = np.asarray(wb, np.float64)[:3]
        if rgb.size == 3 and np.all(np.isfinite(rgb)) and np.all(rgb > 0):
            return rgb / rgb[1], source
    return np.ones(3), "none"


def _cfa_indices(pattern, color_desc: str) -> np.ndarray | None:
    """(2, 2) colour indices R=0 G=1 B=2 from LibRaw's pattern of channel numbers and its
    colour letters ("RGBG": channel 3 is the second green); None if not a 2x2 RGB pattern."""
    if pattern is None:
        return None
    pattern = np.asarray(pattern)
    if pattern.shape != (2, 2):
        return None
    try:
        return np.array([[_COLOR_LETTERS[color_desc[c]] for c in row] for row in pattern], np.int8)
    except (KeyError, IndexError):
        return None


def _is_bayer_pattern(cfa) -> bool:
    from ..backends.cpu.develop import red_site  # the rule the develop kernels apply

    try:
        red_site(cfa)
    except ValueError:
        return False
    return True


def unpack_raw(path, alloc=None) -> RawMosaic:
    """Unpack a camera RAW file's sensor mosaic and colour metadata, without developing it.

    Parameters
    ----------
    path : str or Path
        Any file LibRaw reads.
    alloc : callable, optional
        ``alloc(shape, dtype)`` gives the array the mosaic is copied into (a backend's
        ``host_buffer``: memory it uploads from without another copy); default a new array.

    Returns
    -------
    RawMosaic
        ``is_bayer`` False for sensors ``develop`` cannot handle (X-Trans, Foveon,
        monochrome, linear DNG...): develop those with :func:`read_raw`.

    Raises
    ------
    DecodeError
        LibRaw cannot open or unpack the file (names the file and LibRaw's error).
    """
    import rawpy  # here: a run of JPEG or TIFF frames does not load LibRaw

    path = Path(path)
    start = time.perf_counter()
    try:
        with rawpy.imread(str(path)) as raw:
            raw_type = raw.raw_type
            num_colors = int(raw.num_colors)
            color_desc = raw.color_desc.decode("ascii", "replace")
            pattern = raw.raw_pattern
            pattern = None if pattern is None else np.array(pattern)
            black_levels = [float(v) for v in raw.black_level_per_channel]
            white = float(raw.white_level)
            camera_wb = [float(v) for v in raw.camera_whitebalance]
            daylight_wb = [float(v) for v in raw.daylight_whitebalance]
            rgb_xyz = np.array(raw.rgb_xyz_matrix, np.float64)
            rgb_cam = np.array(raw.color_matrix, np.float64)
            sizes = raw.sizes._asdict()
            cfa = _cfa_indices(pattern, color_desc)
            is_bayer = (raw_type == rawpy.RawType.Flat and num_colors == 3 and cfa is not None
                        and _is_bayer_pattern(cfa))
            mosaic = _copy_mosaic(raw.raw_image_visible, alloc) if is_bayer else np.zeros((0, 0), np.uint16)
    except Exception as exc:  # noqa: BLE001 - every LibRaw failure becomes one DecodeError
        raise DecodeError(path, f"cannot unpack RAW: {_reason(exc)}; {CORRUPT_HINT}") from exc
    if is_bayer and mosaic.shape != (sizes["height"], sizes["width"]):
        raise DecodeError(path, f"LibRaw returned a {mosaic.shape} mosaic for a {sizes['width']}x{sizes['height']} "
                                f"image; {CORRUPT_HINT}")
    if cfa is None:
        cfa = np.full((2, 2), -1, np.int8)
    black = np.zeros((2, 2), np.float32)
    if pattern is not None and pattern.shape == (2, 2):
        black = np.array([[black_levels[c] if c < len(black_levels) else 0.0 for c in row] for row in pattern],
                         np.float32)
    wb, wb_source = _white_balance(camera_wb, daylight_wb)
    matrix, matrix_source = _color_matrix(rgb_xyz, rgb_cam)
    exif = exif_from_file(path, "raw")
    info = {
        "make": _exif_text(exif, 271),
        "model": _exif_text(exif, 272),
        "sizes": sizes,
        "flip": int(sizes["flip"]),
        "raw_type": getattr(raw_type, "name", str(raw_type)),
        "color_desc": color_desc,
        "num_colors": num_colors,
        "raw_bits": int(white).bit_length(),
        "white_level": white,
        "black_levels": black_levels,
        "camera_wb": camera_wb,
        "daylight_wb": daylight_wb,
        "wb_source": wb_source,
        "matrix_source": matrix_source,
    }
    if is_bayer and wb_source != "camera":
        logger.warning("%s: no as-shot white balance; using %s", path.name,
                       "the daylight multipliers" if wb_source == "daylight" else "none (multipliers 1)")
    if is_bayer:
        logger.debug("%s: colour matrix from %s", path.name, matrix_source)
    when = capture_time(exif)
    if when:
        info["capture_time"] = when
    info["read_s"] = time.perf_counter() - start
    return RawMosaic(mosaic=mosaic, cfa=cfa, black=black, white=white, wb=wb.astype(np.float32),
                     cam_to_srgb=matrix.astype(np.float32), is_bayer=bool(is_bayer), info=info,
                     exif=exif_bytes(exif))


def _copy_mosaic(visible: np.ndarray, alloc) -> np.ndarray:
    """LibRaw's visible mosaic (a view of its own buffer, gone when the file is closed) copied as uint16."""
    if alloc is None:
        return np.array(visible, np.uint16, copy=True)
    out = alloc(visible.shape, np.uint16)
    np.copyto(out, visible, casting="unsafe")
    return out


def _exif_text(exif, tag: int) -> str | None:
    if exif is None:
        return None
    value = exif.get(tag)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).replace("\0", " ").split()) if value is not None else None


def develop_params(raw: RawMosaic, color: str = "srgb") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The host parameters of the backends' ``develop`` op for ``raw``: (black, scale, matrix).

    ``black`` (2, 2) float32: the black level per CFA position. ``scale`` (2, 2) float32:
    ``(wb[c] / min(wb)) / (white - black[pos])`` with ``c`` the colour of the position,
    computed in float64 and rounded once: a sample at the white level becomes
    ``wb[c] / min(wb)`` (1 for the channel with the smallest multiplier, usually green;
    LibRaw's normalisation, so that ``develop``'s clip at 1 turns saturated sites white).
    ``matrix`` (3, 3) float32: ``raw.cam_to_srgb`` for ``color="srgb"`` (linear sRGB out),
    the identity for ``"camera"`` (white-balanced camera RGB out).
    """
    if color not in ("srgb", "camera"):
        raise ValueError(f"color: expected 'srgb' or 'camera'; got {color!r}")
    if not raw.is_bayer:
        raise ValueError("develop_params: not a Bayer mosaic; develop this frame with read_raw")
    wb = np.asarray(raw.wb, np.float64)
    wb = wb / wb.min()
    black = np.asarray(raw.black, np.float64)
    span = float(raw.white) - black
    if np.any(span <= 0):
        raise ValueError(f"white level {raw.white} is not above the black levels {black.tolist()}")
    scale = wb[np.asarray(raw.cfa, np.intp)] / span
    matrix = raw.cam_to_srgb if color == "srgb" else np.eye(3)
    return black.astype(np.float32), scale.astype(np.float32), np.asarray(matrix, np.float32)


def bin2x2(raw: RawMosaic, black, scale, matrix) -> np.ndarray:
    """A half-size development on the host: (H // 2, W // 2, 3) float32, for alignment proxies and
    channel means on the reader threads (no demosaic: each 2x2 cell is one pixel).

    Per cell: every sample normalised as ``develop`` does (``(s - black) * scale`` clipped to
    [0, 1]), r and b its red and blue samples, g the mean of its two greens, then ``matrix``.
    Cell (i, j) covers mosaic rows 2i, 2i+1 and columns 2j, 2j+1: its centre is at full-size
    (row, col) = (2i + 0.5, 2j + 0.5), half a pixel off a pyramid reduction's grid (2i, 2j);
    an odd last row or column is dropped.
    """
    m = raw.mosaic
    h2, w2 = m.shape[0] // 2, m.shape[1] // 2
    black = np.asarray(black, np.float32)
    scale = np.asarray(scale, np.float32)
    sums = np.zeros((3, h2, w2), np.float32)
    for pi in range(2):
        for pj in range(2):
            v = (m[pi:2 * h2:2, pj:2 * w2:2].astype(np.float32) - black[pi, pj]) * scale[pi, pj]
            sums[raw.cfa[pi, pj]] += np.clip(v, np.float32(0), np.float32(1))
    sums[1] *= np.float32(0.5)
    rgb = np.moveaxis(sums, 0, -1)
    return np.ascontiguousarray(rgb @ np.asarray(matrix, np.float32).T, dtype=np.float32)
