"""Synthetic DNG files for the RAW tests: a Bayer mosaic written with tifffile, which rawpy opens.

:func:`write_dng` writes a minimal, valid DNG 1.4 (one uncompressed 16-bit CFA image in
IFD0, the colour tags LibRaw reads); :func:`mosaic_from_linear` turns a linear-sRGB image
(e.g. a ``gpustack.synth`` frame) into the Bayer mosaic a camera with a given colour
matrix, white balance, black and white level would have recorded, by inverting the
development of ``gpustack.io.raw``:

    linear sRGB --(cam_from_srgb)--> camera RGB --(/ wb)--> raw ratio in [0, 1]
    --(* (white - black) + black)--> sensor value --(CFA sampling, rounding)--> uint16

``xyz_to_camera_for(cam_from_srgb)`` gives the DNG ColorMatrix1 (XYZ -> camera, D65) that
makes LibRaw (and ``unpack_raw``) derive exactly that camera: the colour matrix is only
known up to a per-row scale, so the rows of ``cam_from_srgb`` must sum to 1 (white stays
white, the same normalisation dcraw applies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

#: sRGB (D65) -> XYZ, as dcraw's ``xyz_rgb``.
SRGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])

#: A plausible camera: linear sRGB -> camera RGB (rows sum to 1), i.e. a camera whose colour
#: channels overlap more than sRGB's primaries (its inverse, camera -> sRGB, has the usual
#: negative off-diagonal terms).
CAM_FROM_SRGB = np.array([[0.70, 0.25, 0.05],
                          [0.12, 0.78, 0.10],
                          [0.04, 0.26, 0.70]])

_COLOR_INDEX = {"R": 0, "G": 1, "B": 2}

# TIFF types (tifffile extratags: (code, dtype, count, value, writeonce))
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10


def cfa_indices(cfa: str) -> np.ndarray:
    """``"RGGB"`` -> [[0, 1], [1, 2]] (colour index per 2x2 position, row-major)."""
    cfa = cfa.upper()
    if len(cfa) != 4 or set(cfa) - set("RGB"):
        raise ValueError(f"cfa: expected four letters of R, G, B (e.g. 'RGGB'); got {cfa!r}")
    return np.array([_COLOR_INDEX[c] for c in cfa], np.int8).reshape(2, 2)


def xyz_to_camera_for(cam_from_srgb) -> np.ndarray:
    """The DNG ColorMatrix1 (XYZ -> camera) of a camera with ``cam_from_srgb`` (sRGB -> camera):
    ``cam_from_srgb @ inv(SRGB_TO_XYZ)``."""
    return np.asarray(cam_from_srgb, np.float64) @ np.linalg.inv(SRGB_TO_XYZ)


def mosaic_from_linear(rgb_linear, cfa="RGGB", black=256, white=4095, wb=(2.0, 1.0, 1.5),
                       cam_from_srgb=CAM_FROM_SRGB, *, rng=None) -> np.ndarray:
    """The uint16 Bayer mosaic (H, W) a camera would record for ``rgb_linear`` (H, W, 3).

    ``rgb_linear``: linear sRGB, where 1.0 is the white level of the green channel after
    white balance. ``black``: a number or a (2, 2) array per CFA position; ``wb``: the
    as-shot multipliers (R, G, B), green 1 (the camera's raw red is ``cam_red / wb[0]``).
    The sensor values are clipped to [0, white] and rounded (``rng``: dithered by adding
    uniform noise in [-0.5, 0.5) before rounding, so the quantisation is unbiased).
    """
    rgb = np.asarray(rgb_linear, np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb_linear: expected (H, W, 3); got {rgb.shape}")
    h, w, _ = rgb.shape
    cam = rgb @ np.asarray(cam_from_srgb, np.float64).T
    ratio = cam / np.asarray(wb, np.float64)
    idx = cfa_indices(cfa) if isinstance(cfa, str) else np.asarray(cfa)
    blk = _per_position(black)
    out = np.empty((h, w), np.float64)
    for pi in range(2):
        for pj in range(2):
            c = idx[pi, pj]
            out[pi::2, pj::2] = ratio[pi::2, pj::2, c] * (white - blk[pi, pj]) + blk[pi, pj]
    if rng is not None:
        out += rng.uniform(-0.5, 0.5, out.shape)
    return np.clip(np.rint(out), 0, white).astype(np.uint16)


def _per_position(black) -> np.ndarray:
    """A black level per 2x2 CFA position: a number, four values (row-major) or a (2, 2) array."""
    b = np.asarray(black, np.float64)
    return np.broadcast_to(b if b.size != 4 else b.reshape(2, 2), (2, 2))


def _rationals(values, den):
    flat = []
    for v in np.asarray(values, np.float64).reshape(-1):
        flat += [round(v * den), den]
    return flat


def write_dng(path, mosaic, *, cfa="RGGB", black=256, white=4095, as_shot_neutral=(0.5, 1.0, 1 / 1.5),
              color_matrix=None, make="gpustack", model="synthetic", orientation=1,
              active_area=None) -> Path:
    """Write ``mosaic`` (H, W) uint16 as an uncompressed DNG that rawpy/LibRaw decodes.

    ``cfa``: "RGGB", "BGGR", "GRBG" or "GBRG" (any 2x2 of R, G, B); ``black``: a number or
    four values (one per 2x2 position, BlackLevelRepeatDim 2x2); ``white``: WhiteLevel;
    ``as_shot_neutral``: AsShotNeutral (camera RGB of a neutral: the inverse of the white
    balance multipliers); ``color_matrix``: ColorMatrix1, XYZ -> camera (3x3), under
    CalibrationIlluminant1 = D65 (default: the matrix of ``CAM_FROM_SRGB``); ``None`` for
    ``as_shot_neutral`` leaves the tag out. ``active_area``: (top, left, bottom, right), the
    ActiveArea tag (the CFA pattern is relative to its top-left corner, as DNG says).
    ``mosaic`` may also be (H, W, 3) uint16: then a LinearRaw DNG (demosaiced camera RGB,
    PhotometricInterpretation 34892), without the CFA tags.
    """
    path = Path(path)
    mosaic = np.ascontiguousarray(mosaic, np.uint16)
    linear = mosaic.ndim == 3 and mosaic.shape[2] == 3
    if mosaic.ndim != 2 and not linear:
        raise ValueError(f"mosaic: expected (H, W) or (H, W, 3); got {mosaic.shape}")
    idx = cfa_indices(cfa) if isinstance(cfa, str) else np.asarray(cfa, np.int8)
    if color_matrix is None:
        color_matrix = xyz_to_camera_for(CAM_FROM_SRGB)
    blacks = _per_position(black).reshape(-1)
    model_name = f"{make} {model}"
    tags = [
        (50706, _BYTE, 4, (1, 4, 0, 0), True),              # DNGVersion
        (50707, _BYTE, 4, (1, 1, 0, 0), True),              # DNGBackwardVersion
        (50708, _ASCII, 0, model_name, True),               # UniqueCameraModel
        (271, _ASCII, 0, make, True),                        # Make
        (272, _ASCII, 0, model, True),                       # Model
        (274, _SHORT, 1, orientation, True),                 # Orientation
        (33421, _SHORT, 2, (2, 2), True),                    # CFARepeatPatternDim
        (33422, _BYTE, 4, tuple(int(v) for v in idx.reshape(-1)), True),  # CFAPattern
        (50710, _BYTE, 3, (0, 1, 2), True),                  # CFAPlaneColor
        (50711, _SHORT, 1, 1, True),                         # CFALayout: rectangular
        (50713, _SHORT, 2, (2, 2), True),                    # BlackLevelRepeatDim
        (50714, _RATIONAL, 4, _rationals(blacks, 100), True),  # BlackLevel
        (50717, _LONG, 1, int(white), True),                 # WhiteLevel
        (50721, _SRATIONAL, 9, _rationals(color_matrix, 1_000_000), True),  # ColorMatrix1
        (50778, _SHORT, 1, 21, True),                        # CalibrationIlluminant1: D65
    ]
    if as_shot_neutral is not None:
        tags.append((50728, _RATIONAL, 3, _rationals(as_shot_neutral, 1_000_000), True))  # AsShotNeutral
    if active_area is not None:
        tags.append((50829, _LONG, 4, tuple(int(v) for v in active_area), True))  # ActiveArea
    if linear:
        cfa_tags = (33421, 33422, 50710, 50711)
        tags = [t for t in tags if t[0] not in cfa_tags]
        tags = [(50713, _SHORT, 2, (1, 1), True) if t[0] == 50713 else
                (50714, _RATIONAL, 1, _rationals(blacks[:1], 100), True) if t[0] == 50714 else t for t in tags]
    tifffile.imwrite(path, mosaic, photometric=34892 if linear else 32803, compression=None, subfiletype=0,
                     software="gpustack tests", extratags=tags, metadata=None)
    return path


def write_dng_stack(frames, folder, *, cfa="RGGB", black=512, white=16383, wb=(2.0, 1.0, 1.5), seed=0,
                    make="gpustack", model="synthetic") -> list[Path]:
    """Each linear-sRGB frame (H, W, 3) as ``folder/frame{k:03d}.dng`` of one 14-bit camera (the
    mosaic :func:`mosaic_from_linear` gives, quantisation dithered)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    neutral = tuple(1.0 / np.asarray(wb, np.float64))
    paths = []
    for k, frame in enumerate(frames):
        mosaic = mosaic_from_linear(frame, cfa, black=black, white=white, wb=wb, rng=rng)
        paths.append(write_dng(folder / f"frame{k:03d}.dng", mosaic, cfa=cfa, black=black, white=white,
                               as_shot_neutral=neutral, make=make, model=model))
    return paths
