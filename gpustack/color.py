"""Transfer curves as lookup tables, built once on the host.

Per-pixel code never evaluates a transcendental function (the parity contract,
DESIGN.md section 3): decoding an integer sample to linear light is a table
lookup by the sample value, and encoding linear light to an integer sample is
a lookup by the linear value quantised to ``ENCODE_LUT_SIZE`` steps (2**20: one
step is below 1/10 of a 16-bit sRGB code even next to black, where the curve is
steepest).
"""

from __future__ import annotations

import functools

import numpy as np

#: Entries of the encoding table: index = round(clip(v, 0, 1) * (ENCODE_LUT_SIZE - 1)).
ENCODE_LUT_SIZE = 1 << 20

TRANSFERS = ("srgb", "linear")


def srgb_to_linear(x):
    """The IEC 61966-2-1 sRGB decoding curve, float64 in and out."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """The IEC 61966-2-1 sRGB encoding curve, float64 in and out."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1.0 / 2.4) - 0.055)


@functools.lru_cache(maxsize=None)
def decode_lut(dtype, transfer: str) -> np.ndarray:
    """float32 table mapping every uint8 or uint16 sample value to linear light in [0, 1].

    ``transfer`` is what the samples encode: ``"srgb"`` (display-referred images)
    or ``"linear"`` (RAW developments, linear scientific data).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"decode_lut: unsupported dtype {dtype}; expected uint8 or uint16")
    if transfer not in TRANSFERS:
        raise ValueError(f"decode_lut: unknown transfer {transfer!r}; expected one of {TRANSFERS}")
    top = np.iinfo(dtype).max
    x = np.arange(top + 1, dtype=np.float64) / top
    lut = srgb_to_linear(x) if transfer == "srgb" else x
    lut = lut.astype(np.float32)
    lut.setflags(write=False)
    return lut


@functools.lru_cache(maxsize=None)
def encode_lut(bits: int, transfer: str) -> np.ndarray:
    """Table of ``ENCODE_LUT_SIZE`` output codes (uint8 or uint16) indexed by quantised linear light."""
    if bits not in (8, 16):
        raise ValueError(f"encode_lut: bits must be 8 or 16; got {bits}")
    if transfer not in TRANSFERS:
        raise ValueError(f"encode_lut: unknown transfer {transfer!r}; expected one of {TRANSFERS}")
    x = np.arange(ENCODE_LUT_SIZE, dtype=np.float64) / (ENCODE_LUT_SIZE - 1)
    y = linear_to_srgb(x) if transfer == "srgb" else x
    top = (1 << bits) - 1
    lut = np.rint(y * top).astype(np.uint8 if bits == 8 else np.uint16)
    lut.setflags(write=False)
    return lut
