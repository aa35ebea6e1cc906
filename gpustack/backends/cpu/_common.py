"""Helpers shared by the Numba kernels: float32 constants and the border rule.

Every constant that meets a float32 value is a ``np.float32`` module global, so
Numba types the arithmetic as float32 (a Python float literal would promote it
to float64 and break the parity with the CUDA twins).

Every kernel and every helper it calls is compiled with the same options, ``@njit(nogil=True,
cache=True, error_model="numpy", no_cfunc_wrapper=True)``. Numba compiles a library function they use (``np.empty``,
``min``, ``decode``) once per process for each set of options it is called under, so helpers with
Numba's default options (and the alignment's kernels, with Python's error model) compiled those
again on a first run (issue 14: 0.5-0.6 CPU s of the README example's). The error model is the
kernels' (a float division by zero gives inf or NaN, as on the GPU); the helpers and the alignment's
kernels divide by no value that can be zero, so it changes none of theirs. No C callback wrapper
(``no_cfunc_wrapper``): Python calls a kernel through its CPython wrapper and a kernel calls a
helper directly, so nothing calls the C one, which cost 0.03-0.04 CPU s to compile per function.
No kernel or helper calls ``np.empty``, ``min``, ``max`` or ``int``: each is a library function that
Numba compiles once per process for each argument type (0.04-0.2 CPU s each; on the README's
first run about 1 CPU s in the command's process and as much again in the compile helper's,
``_ahead``, as neither can load it from the other's cache), and links into every kernel that calls it.
Their work arrays come from the caller instead (``_threads.run_rows``' ``work``: each thread
allocates them once per launch), ``min`` and ``max`` are written out as Numba computes them
(``min(a, b)`` is ``b if b < a else a``, ``max(a, b)`` is ``b if b > a else a``: the same value, NaN
included), and a float becomes an integer through a cast (``np.int64(x)``, the conversion ``int``
makes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

F0 = np.float32(0.0)
F1 = np.float32(1.0)
HALF = np.float32(0.5)
NEG_HALF = np.float32(-0.5)
ONE_HALF = np.float32(1.5)
TWO = np.float32(2.0)

# 5-tap binomial kernel [1, 4, 6, 4, 1] / 16 (pyramid reduce)
W0 = np.float32(0.0625)
W1 = np.float32(0.25)
W2 = np.float32(0.375)
# its expand counterpart: even output samples (1, 6, 1) / 8, odd ones (1, 1) / 2
E0 = np.float32(0.125)
E1 = np.float32(0.75)


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def reflect(i, n):
    """Border rule of every kernel: mirror about the edge samples, the edge not repeated
    (OpenCV's BORDER_REFLECT_101: -1 -> 1, n -> n - 2), periodic for any offset."""
    if 0 <= i < n:
        return i
    if n == 1:
        return 0
    m = 2 * (n - 1)
    i = abs(i) % m
    if i >= n:
        i = m - i
    return i


def reflected_rows(a, lo, hi):
    """Rows ``lo .. hi`` of ``a`` under the border rule (``reflect``), for the ops written in NumPy
    (``backends.cpu``): a view where they all lie inside, else a gathered copy."""
    n = a.shape[0]
    if 0 <= lo and hi <= n:
        return a[lo:hi]
    return a[[reflect.py_func(i, n) for i in range(lo, hi)]]


def decode(v, lut):
    """A sample in linear light: ``lut[v]`` for integer samples, ``float32(v)`` for float ones."""
    return lut[v] if np.issubdtype(type(v), np.integer) else np.float32(v)


@overload(decode)
def _decode_overload(v, lut):
    if isinstance(v, types.Integer):
        return lambda v, lut: lut[v]
    return lambda v, lut: np.float32(v)


def check_copy(src, dst) -> None:
    """``copy``'s arrays (both backends): the same shape and dtype, C-contiguous, not the same array."""
    if tuple(src.shape) != tuple(dst.shape) or src.dtype != dst.dtype:
        raise ValueError(f"copy: dst is {dst.dtype} {tuple(dst.shape)} but src is {src.dtype} {tuple(src.shape)}; "
                         f"expected the same shape and dtype")
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("copy: expected C-contiguous arrays")


def check_crop(src, row0: int, col0: int, dst) -> None:
    """``crop``'s arguments (both backends): ``dst`` (..., h, w) lies inside ``src`` (..., H, W) at
    (``row0``, ``col0``), same leading dimensions and dtype, both C-contiguous."""
    if src.ndim != dst.ndim or src.ndim < 2 or tuple(src.shape[:-2]) != tuple(dst.shape[:-2]) \
            or src.dtype != dst.dtype:
        raise ValueError(f"crop: dst {dst.dtype} {tuple(dst.shape)} does not match src {src.dtype} "
                         f"{tuple(src.shape)}; expected the same dtype and leading dimensions")
    (hs, ws), (h, w) = src.shape[-2:], dst.shape[-2:]
    if int(row0) != row0 or int(col0) != col0 or not (0 <= row0 and row0 + h <= hs and 0 <= col0 and col0 + w <= ws):
        raise ValueError(f"crop: a {w}x{h} window at (row {row0}, col {col0}) is not inside {ws}x{hs}")
    if not (src.flags.c_contiguous and dst.flags.c_contiguous):
        raise ValueError("crop: expected C-contiguous arrays")
