"""Box sums along rows or columns of a float32 plane (H, W). Twin of kernels/filter.cu.

out[i, j] = src[i, j-r] + ... + src[i, j+r] (rows; the same down columns), summed
from the lowest offset up, reflect101 borders. No normalisation: callers divide
where they need a mean.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._common import F0, reflect, reflected_rows
from ._threads import run_rows


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def box_row(row, w, r, out):
    """out[j] = F0 + row[j-r] + ... + row[j+r] (reflect101), added in that order."""
    lo = w if w < r else r  # min(r, w), max(w - r, lo), written out (_common)
    hi = w - r if w - r > lo else lo
    n = hi - lo
    if n > 0:
        acc = out[lo:hi]
        for j in range(n):
            acc[j] = F0
        for d in range(2 * r + 1):
            seg = row[d:d + n]  # row[j + d - r] for output j + lo
            for j in range(n):
                acc[j] = acc[j] + seg[j]
    for t in range(lo + w - hi):  # the border samples, j < lo and j >= hi (not a test on every j:
        j = t if t < lo else hi + t - lo  # a scalar loop over the row took longer than the sums)
        s = F0
        for d in range(-r, r + 1):
            s = s + row[reflect(j + d, w)]
        out[j] = s


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def box_col(src, i, r, out):
    """out[j] = F0 + src[i-r, j] + ... + src[i+r, j] (reflect101 rows), added in that order."""
    h, w = src.shape
    for j in range(w):
        out[j] = F0
    for d in range(-r, r + 1):
        row = src[reflect(i + d, h)]
        for j in range(w):
            out[j] = out[j] + row[j]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _filter_box_rows_kernel(src, dst, r, row0, row1):
    h, w = src.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        box_row(src[i], w, r, dst[i])


#: Rows ``_cols_rows`` sums at a time.
COL_ROWS = 32


def _cols_rows(src, dst, r, row0, row1):
    """Rows ``row0 .. row1`` of ``filter_box_cols`` (``_threads.run_rows``), in NumPy, ``COL_ROWS`` at a
    time: ``box_col``'s sums, in its order. Not a kernel: only the depth map's smoothing calls it,
    once per stack, where compiling a kernel would cost a first run more than it saves
    (``backends.cpu``)."""
    with np.errstate(all="ignore"):
        for i0 in range(row0, row1, COL_ROWS):
            i1 = min(row1, i0 + COL_ROWS)
            o = dst[i0:i1]
            o[...] = F0
            for d in range(-r, r + 1):
                np.add(o, reflected_rows(src, i0 + d, i1 + d), out=o)


def filter_box_rows(src, dst, r):
    run_rows(_filter_box_rows_kernel, src.shape[0], src.shape[1] * (2 * r + 1), src, dst, r)


def filter_box_cols(src, dst, r):
    run_rows(_cols_rows, src.shape[0], src.shape[1] * (2 * r + 1), src, dst, r)
