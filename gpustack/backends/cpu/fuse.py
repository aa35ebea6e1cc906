"""Folding one frame's pyramid into the running fusion state.

Twin of kernels/fuse.cu. Energies are local sums of squared Laplacian
coefficients over all channels in a (2r+1) x (2r+1) window: ``fuse_sqsum`` then
``filter.box_rows`` then the column sum inside ``fuse_select``. A coefficient
replaces the stored one only when its energy is strictly higher (the first frame
wins ties), so the result does not depend on anything but frame order.
"""

from __future__ import annotations

from numba import njit, prange

import numpy as np

from .filter import box_col


@njit(parallel=True, nogil=True, cache=True)
def _fuse_sqsum_kernel(lap, q):
    c, h, w = lap.shape
    for i in prange(h):
        for j in range(w):
            v = lap[0, i, j]
            s = v * v
            for ch in range(1, c):
                v = lap[ch, i, j]
                s = s + v * v
            q[i, j] = s


@njit(parallel=True, nogil=True, cache=True)
def _fuse_select_kernel(lap, rowbox, best_lap, best_e, r):
    c, h, w = lap.shape
    for i in prange(h):
        erow = np.empty(w, np.float32)
        box_col(rowbox, i, r, erow)
        for j in range(w):
            e = erow[j]
            if e > best_e[i, j]:
                best_e[i, j] = e
                for ch in range(c):
                    best_lap[ch, i, j] = lap[ch, i, j]


@njit(parallel=True, nogil=True, cache=True)
def _fuse_accumulate_kernel(acc, g):
    c, h, w = g.shape
    for p in prange(c * h):
        ch = p // h
        i = p - ch * h
        for j in range(w):
            acc[ch, i, j] = acc[ch, i, j] + g[ch, i, j]


@njit(parallel=True, nogil=True, cache=True)
def _fuse_divide_kernel(acc, n, out):
    c, h, w = acc.shape
    for p in prange(c * h):
        ch = p // h
        i = p - ch * h
        for j in range(w):
            out[ch, i, j] = acc[ch, i, j] / n


def fuse_sqsum(lap, q):
    """``q`` (H, W) = sum over channels of ``lap`` (C, H, W) squared."""
    _fuse_sqsum_kernel(lap, q)


def fuse_select(lap, rowbox, best_lap, best_e, r):
    """Where the window energy (column sum of ``rowbox``) beats ``best_e``, take ``lap``."""
    _fuse_select_kernel(lap, rowbox, best_lap, best_e, r)


def fuse_accumulate(acc, g):
    """In place: ``acc += g``."""
    _fuse_accumulate_kernel(acc, g)


def fuse_divide(acc, n, out):
    """``out = acc / n`` with ``n`` a float32 scalar."""
    _fuse_divide_kernel(acc, n, out)
