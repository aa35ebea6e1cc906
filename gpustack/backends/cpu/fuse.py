"""Folding one frame's pyramid into the running fusion state.

Twin of kernels/fuse.cu. Energies are local sums of squared Laplacian
coefficients over all channels in a (2r+1) x (2r+1) window: ``fuse_sqsum`` then
``filter.box_rows`` then the column sum inside ``fuse_select``. A coefficient
replaces the stored one only when its energy is strictly higher (the first frame
wins ties), so the result does not depend on anything but frame order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._threads import run_rows
from .filter import box_col


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _fuse_sqsum_kernel(lap, q, row0, row1):
    c, h, w = lap.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows)
        for j in range(w):
            v = lap[0, i, j]
            s = v * v
            for ch in range(1, c):
                v = lap[ch, i, j]
                s = s + v * v
            q[i, j] = s


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _fuse_select_kernel(lap, rowbox, best_lap, best_e, r, erow, row0, row1):
    c, h, w = lap.shape
    for i in range(row0, row1):  # a chunk of range(h) (_threads.run_rows); erow (W,): work row
        box_col(rowbox, i, r, erow)
        for j in range(w):
            e = erow[j]
            if e > best_e[i, j]:
                best_e[i, j] = e
                for ch in range(c):
                    best_lap[ch, i, j] = lap[ch, i, j]


@njit(nogil=True, cache=True, error_model="numpy", no_cfunc_wrapper=True)
def _fuse_accumulate_kernel(acc, g, row0, row1):
    c, h, w = g.shape
    for p in range(row0, row1):  # a chunk of range(c * h) (_threads.run_rows)
        ch = p // h
        i = p - ch * h
        for j in range(w):
            acc[ch, i, j] = acc[ch, i, j] + g[ch, i, j]


def _divide_rows(acc, n, out, row0, row1):
    """Rows ``row0 .. row1`` of ``fuse_divide``, in NumPy: a stack's finish, or the coarsest score
    level's weight (an eighth of a frame's side), not worth a kernel to compile (``backends.cpu``)."""
    with np.errstate(all="ignore"):
        np.divide(acc[:, row0:row1], n, out=out[:, row0:row1])


def fuse_sqsum(lap, q):
    """``q`` (H, W) = sum over channels of ``lap`` (C, H, W) squared."""
    run_rows(_fuse_sqsum_kernel, lap.shape[1], lap.shape[0] * lap.shape[2], lap, q)


def fuse_select(lap, rowbox, best_lap, best_e, r):
    """Where the window energy (column sum of ``rowbox``) beats ``best_e``, take ``lap``."""
    run_rows(_fuse_select_kernel, lap.shape[1], lap.shape[2] * (2 * r + 1 + lap.shape[0]), lap, rowbox, best_lap,
             best_e, r, work=(((lap.shape[2],), np.float32),))


def fuse_accumulate(acc, g):
    """In place: ``acc += g``."""
    run_rows(_fuse_accumulate_kernel, g.shape[0] * g.shape[1], g.shape[2], acc, g)


def fuse_divide(acc, n, out):
    """``out = acc / n`` with ``n`` a float32 scalar."""
    run_rows(_divide_rows, acc.shape[1], acc.shape[0] * acc.shape[2], acc, n, out)
