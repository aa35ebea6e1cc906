"""OME-TIFF outputs: the fused image, the height map and the confidence map, calibrated.

Written by tifffile's OME-XML writer, one OME image per stage position, each with a T axis when
the input had one: axes ``TCYX`` (``CYX`` for one time point). The OME-XML carries the channel
names, the physical pixel size in microns (``PhysicalSizeX``/``Y``, unit ``µm``) and a
description of how the file was made, so Fiji (Bio-Formats), napari and QuPath open it with the
right scale. An image larger than ``TILE_ABOVE`` pixels on a side is written in 512 x 512 tiles
with reduced-resolution copies (each half the size of the one before, 2 x 2 means, down to 1024 px
or less) as sub-IFDs: the pyramid those viewers use. Integer samples are written as they are
(uint16 in, uint16 out: no rescaling, no curve); float32 maps as float32 (NaN kept).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np
import tifffile

from ..errors import InputError
from .write import TIFF_COMPRESSION, StagedOutputs, _atomic_write

#: images larger than this on a side are tiled, with a pyramid of reduced resolutions
TILE_ABOVE = 4096
TILE = 512
PYRAMID_MIN = 1024  # the smallest level is at most this on its long side


def reduced(image: np.ndarray) -> np.ndarray:
    """Half the size along the last two axes (odd edges kept): means of 2 x 2 blocks, in float64,
    rounded back to the dtype for integers; NaN where any sample of the block is NaN (float maps)."""
    *lead, h, w = image.shape
    ph, pw = h + h % 2, w + w % 2
    padded = np.pad(image, [(0, 0)] * len(lead) + [(0, ph - h), (0, pw - w)], mode="edge")
    blocks = padded.reshape(*lead, ph // 2, 2, pw // 2, 2).astype(np.float64)
    mean = blocks.mean(axis=(-3, -1))
    if image.dtype.kind in "ui":
        return np.rint(mean).astype(image.dtype)
    return mean.astype(image.dtype)


def pyramid_levels(h: int, w: int) -> int:
    """Reduced-resolution levels below the full image (0 when it is not larger than TILE_ABOVE)."""
    if max(h, w) <= TILE_ABOVE:
        return 0
    levels = 0
    while max(h, w) > PYRAMID_MIN:
        h, w, levels = (h + 1) // 2, (w + 1) // 2, levels + 1
    return levels


def write_ome(path, positions: list[np.ndarray], *, channel_names, pixel_size=None, description: str = "",
              name: str = "", overwrite: bool = False, stage: StagedOutputs | None = None) -> None:
    """Write ``positions`` (one array per stage position, (T, C, H, W), all of one dtype: uint8,
    uint16 or float32) as an OME-TIFF, atomically.

    ``channel_names``: C names; ``pixel_size``: (Y, X) microns or None; ``description``: the OME
    Image Description (how it was made).
    """
    path = Path(path)
    arrays = [np.ascontiguousarray(a) for a in positions]
    for a in arrays:
        if a.ndim != 4 or a.dtype not in (np.uint8, np.uint16, np.float32):
            raise InputError(f"{path}: an OME image must be (T, C, H, W) uint8, uint16 or float32; got "
                             f"{a.dtype} {a.shape}")
        if a.shape[1] != len(channel_names):
            raise InputError(f"{path}: {a.shape[1]} channels but {len(channel_names)} channel names")

    # The OME UUID from the content, not at random: the same result gives the same bytes (the
    # backends' parity contract), and a different one another UUID.
    digest = hashlib.sha256(repr((list(channel_names), pixel_size, description, name)).encode())
    for a in arrays:
        digest.update(repr((a.dtype.str, a.shape)).encode())
        digest.update(memoryview(a.reshape(-1).view(np.uint8)))
    file_uuid = f"urn:uuid:{uuid.UUID(bytes=digest.digest()[:16], version=5)}"

    def encode(f):
        nbytes = sum(a.nbytes for a in arrays)
        with tifffile.TiffWriter(f, bigtiff=nbytes > 2**32 - 2**25, ome=True) as tif:
            for index, a in enumerate(arrays):
                _write_position(tif, a, index, len(arrays), channel_names, pixel_size, description, name,
                                file_uuid if index == 0 else None)

    _atomic_write(path, encode, overwrite=overwrite, stage=stage)


def _write_position(tif, a, index, count, channel_names, pixel_size, description, name, file_uuid) -> None:
    t, c, h, w = a.shape
    squeeze_t = t == 1
    data = a[0] if squeeze_t else a
    meta = {"axes": "CYX" if squeeze_t else "TCYX", "Channel": {"Name": list(channel_names)},
            "Name": name + (f" (position {index})" if count > 1 else ""), "Description": description}
    if file_uuid is not None:
        meta["UUID"] = file_uuid
    if pixel_size is not None:
        meta.update({"PhysicalSizeY": float(pixel_size[0]), "PhysicalSizeYUnit": "µm",
                     "PhysicalSizeX": float(pixel_size[1]), "PhysicalSizeXUnit": "µm"})
    levels = pyramid_levels(h, w)
    options = {"photometric": "minisblack", "metadata": meta, "software": "gpustack",
               "maxworkers": max(1, min(4, os.cpu_count() or 1)), **TIFF_COMPRESSION}
    if levels:
        options.update(tile=(TILE, TILE), subifds=levels)
    else:
        rowbytes = max(1, w * a.dtype.itemsize)
        options["rowsperstrip"] = max(1, (256 << 10) // rowbytes)
    tif.write(data, **options)
    level = data
    for _ in range(levels):
        level = reduced(level)
        tif.write(level, subfiletype=1, tile=(TILE, TILE), photometric="minisblack", software="gpustack",
                  maxworkers=options["maxworkers"], **TIFF_COMPRESSION)
