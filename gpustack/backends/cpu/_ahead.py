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

Compiling holds Numba's compiler lock and mostly the GIL, so one process compiles one kernel at a
time: a thread pool would not compile faster. When some of the run's kernels are not in Numba's
cache yet (a first run), a **helper process** (``python -c``, the same interpreter and package)
compiles the fusion's later kernels (all but the first ``OWN`` of the first frame's, and the
finish's) into the same cache, while this process compiles the first ones and the alignment's;
when this process gets to a helper's kernel, Numba finds it in the cache (it reads the index from
disk each time) and loads it, or compiles it itself if the helper has not got there (or failed).
On 2 cores that puts the second core to work while the run waits on its first kernels. No helper
where caching is off (``gpustack._numba_cache``: nothing to share), when everything is cached
(warm runs), or with ``GPUSTACK_COMPILE_HELPER=0``. The helper stops when its list is done or when
this process goes (end of file on its stdin); this process reaps it at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
from numba import typeof, types

logger = logging.getLogger(__name__)

_F2 = types.Array(types.float32, 2, "C")
_F3 = types.Array(types.float32, 3, "C")
_I = types.int64
_F = types.float32


#: When a run first calls a kernel: folding the first frame, the frames that move, the finish; LATE:
#: what the helper process compiles (loaded from the cache by then, or compiled here if need be).
FOLD, MOVED, FINISH, LATE = 0, 1, 2, 3
#: The first frame's kernels this process compiles itself when there is a helper.
OWN = 4


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
_helper: subprocess.Popen | None = None

#: Set to ``0`` to compile in this process only.
HELPER_ENV = "GPUSTACK_COMPILE_HELPER"

_HELPER_CODE = "import sys; from gpustack.backends.cpu import _ahead; _ahead._help(sys.stdin.buffer)"


def _in_cache(dispatcher, sig) -> bool:
    """Whether Numba's cache holds ``dispatcher``'s specialisation ``sig`` (through Numba's private
    cache API: True when it cannot tell, so that no helper is started for nothing)."""
    try:
        cache = dispatcher._cache
        if not getattr(cache, "_enabled", False):
            return True
        key = cache._index_key(tuple(sig), dispatcher.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:
        return True


def _start_helper(items) -> bool:
    """A helper process compiling, in order, those of ``items`` that are not cached yet; whether one
    was started."""
    global _helper
    if _helper is not None or os.environ.get(HELPER_ENV, "1") == "0":
        return False
    seen, todo = set(), []
    for _, dispatcher, sig in items:
        if (dispatcher, tuple(sig)) not in seen and not _in_cache(dispatcher, sig):
            seen.add((dispatcher, tuple(sig)))
            todo.append((dispatcher.py_func.__module__, dispatcher.py_func.__qualname__, tuple(sig)))
    if len(todo) < 2:  # not worth a process
        return False
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    try:
        _helper = subprocess.Popen([sys.executable, "-c", _HELPER_CODE], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _helper.stdin.write(pickle.dumps(todo))
        _helper.stdin.flush()  # kept open: its end of file tells the helper this process is gone
    except (OSError, pickle.PicklingError) as exc:
        logger.debug("no compile helper: %s", exc)
        return False
    atexit.register(_stop_helper)
    return True


def _stop_helper() -> None:
    """At exit: tell the helper to stop (what it compiled is cached) and reap it."""
    try:
        _helper.stdin.close()
        _helper.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _help(stream) -> None:
    """The helper process: compile the pickled (module, name, signature) list from ``stream`` in order;
    exit at once when ``stream`` ends (the run's process is gone)."""
    import importlib

    todo = pickle.load(stream)

    def watch():
        stream.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
    for module, name, sig in todo:
        try:
            getattr(importlib.import_module(module), name).compile(sig)
        except Exception:  # the run compiles it itself
            pass
    os._exit(0)  # not a normal exit: the watching thread holds stdin


def start(options, src=None, lut=None) -> None:
    """Compile on a thread what a run with ``options`` will call: without ``src``, the fusion's and
    the finish's kernels; with the first frame's samples ``src`` and decoding table ``lut``, the
    frame-dependent ones, ahead of the finish's. A first run also gets a helper process."""
    if src is not None:
        _queue.add(_frame_kernels(options, src, lut))
        return
    items = _fusion_kernels(options)
    fold = [item for item in items if item[0] == FOLD]
    helped = fold[OWN:] + [item for item in items if item[0] != FOLD]
    if _start_helper(helped):
        items = fold[:OWN] + [(LATE, d, sig) for _, d, sig in helped]
    _queue.add(items)
