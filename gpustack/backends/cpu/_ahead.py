"""Compiling the kernels a run will need on a thread, ahead of their first call.

A first run (empty Numba cache) compiles each kernel when it is first called: the frame readers,
the alignment and the fusion wait for it in turn, and the last kernels (the finish: depth
smoothing, encoding) compile at the end, when nothing else is left to overlap with. ``start``
compiles, on one daemon thread, exactly the specialisations this run will call, in the order it
will call them: the fusion's kernels while the first frames are decoded and aligned, the
finish's while the frames are folded. Compiling holds Numba's compiler lock, so a call that needs
a kernel being compiled waits for it and then finds it compiled (nothing is compiled twice); on a
warm run each ``compile`` only loads the cached code, which the calls would do anyway.

Only what the run is sure to call is listed, with the argument types the calls pass (a wrong
guess would compile a specialisation nobody uses: ``tests/test_compile_ahead.py`` counts them).
The frame-dependent kernels (the frame's sample type, its decoding table) are added once the
first frame is known.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from numba import typeof, types

logger = logging.getLogger(__name__)

_F2 = types.Array(types.float32, 2, "C")
_F3 = types.Array(types.float32, 3, "C")
_I = types.int64
_F = types.float32


#: When a run first calls a kernel: folding the first frame, the frames that move, the finish.
FOLD, MOVED, FINISH = 0, 1, 2


def _fusion_kernels(options) -> list:
    """(when, dispatcher, argument types) of the fusion and the finish of ``options.method``, in
    order of first use."""
    from . import depth, filter, fuse, pyramid, soft
    from .encode import _encode_lut_kernel  # (the package's ``encode`` is the function)

    box = (_F2, _F2, _I, _I, _I)
    out = [(FOLD, pyramid._pyramid_reduce_kernel, (_F3, _F3, _I, _I)),
           (FOLD, pyramid._pyramid_expand_kernel, (_F3, _F3, _I, _F3, _I, _I)),
           (FOLD, fuse._fuse_sqsum_kernel, (_F3, _F2, _I, _I)),
           (FOLD, filter._filter_box_rows_kernel, box)]
    if options.method == "soft":
        out += [(FOLD, filter._filter_box_cols_kernel, box),
                (FOLD, soft._soft_fold_kernel, (_F3, _F3) + (_F2,) * 5 + (_F3, _F3, _F, _F, _I, _F, _I, _I)),
                (FINISH, soft._soft_finish_kernel, (_F3, _F3) + (_F2,) * 6 + (_F, _I, _I))]
    else:  # pyramid, and the depthmap method's first pass
        out += [(FOLD, fuse._fuse_select_kernel, (_F3, _F2, _F3, _F2, _I, _I, _I)),
                (FOLD, depth._depth_track_kernel, (_F2,) * 7 + (_I, _F, _I, _I, _I)),
                (FOLD, fuse._fuse_accumulate_kernel, (_F3, _F3, _I, _I)),
                (FINISH, fuse._fuse_divide_kernel, (_F3, _F, _F3, _I, _I)),
                (FINISH, depth._depth_finalize_kernel, (_F2,) * 5 + (_F, _F2, _F2, _I, _I))]
    if options.depth_smooth > 0:
        out += [(FINISH, depth._depth_weight_kernel, (_F2, _F2, _F2, _I, _I)),
                (FINISH, filter._filter_box_cols_kernel, box),
                (FINISH, depth._depth_ratio_kernel, (_F2, _F2, _F2, _F2, _I, _I))]
    if options.output is not None and options.output_format != "ome-tiff":  # OME: the input's type, later
        dt = types.uint8 if options.output_bits == 8 else types.uint16
        out.append((FINISH, _encode_lut_kernel, (_F3, types.Array(dt, 1, "C", readonly=True),
                                                        types.Array(dt, 3, "C"), _I, _I)))
    return out


def _frame_kernels(options, src, lut) -> list:
    """The kernels whose types depend on the first frame (``src``, its decoding table ``lut``, None for
    float32 frames): the warp of the moving frames, the alignment's sampler."""
    from .warp import _warp_kernel

    out = []
    if options.align != "none":
        lut_t = typeof(np.zeros(1, np.float32) if lut is None else lut)
        out.append((MOVED, _warp_kernel, (typeof(src), lut_t, types.Array(types.float64, 1, "C"),
                                        types.Array(types.float32, 1, "C"), _F3, _I, _I)))
        from ...stages import estimate

        f1 = types.Array(types.float64, 1, "C")
        out.append((MOVED, estimate._sample_kernel, (types.Array(types.float32, 1, "C"),
                                                     types.Array(types.int64, 1, "C"),
                                                     types.Array(types.float64, 2, "C"), f1, f1, _I, _I, f1,
                                                     types.Array(types.bool_, 1, "C"))))
    return out


class _Queue:
    """What is left to compile, in order; one thread works through it."""

    def __init__(self):
        self.items: list = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, items) -> None:
        with self.lock:
            self.items = sorted(self.items + list(items), key=lambda item: item[0])  # stable: in order within
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._work, name="gpustack-compile", daemon=True)
                self.thread.start()

    def _work(self) -> None:
        while True:
            with self.lock:
                if not self.items:
                    self.thread = None
                    return
                _, dispatcher, sig = self.items.pop(0)
            if tuple(sig) in dispatcher.overloads:
                continue
            try:
                dispatcher.compile(tuple(sig))
            except Exception as exc:  # the call itself will compile it, and say what is wrong
                logger.debug("compiling %s%s ahead failed: %s", dispatcher.py_func.__name__, tuple(sig), exc)


_queue = _Queue()


def start(options, src=None, lut=None) -> None:
    """Compile on a thread what a run with ``options`` will call: without ``src``, the fusion's and
    the finish's kernels; with the first frame's samples ``src`` and decoding table ``lut``, the
    frame-dependent ones, ahead of the finish's."""
    _queue.add(_fusion_kernels(options) if src is None else _frame_kernels(options, src, lut))
