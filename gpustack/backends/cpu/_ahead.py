"""Compiling the kernels a run will need ahead of their first call: on a thread, and on a first
run in a helper process too.

A first run (empty Numba cache) compiled each kernel when it was first called: the frame readers,
the alignment and the fusion waited for it in turn, and the finish's kernels (depth smoothing,
encoding) compiled at the end, when nothing else was left to overlap with. ``start`` compiles, on
one daemon thread, exactly the specialisations this run will call, in the order it will call
them, from the start of the run. A call that needs a kernel being compiled waits for Numba's
compiler lock and then finds it compiled: nothing is compiled twice. On a warm run each
``compile`` only loads the cached code, which the calls would do anyway.

Only what the run is sure to call is listed, with the argument types the calls pass (a wrong guess
would compile a specialisation nobody uses: ``tests/test_compile_ahead.py`` counts them). The
kernels whose types are the frames' (the alignment proxy's luminance, the conversion of the frames
that do not move, the warp) are listed by the reader thread that decodes a frame first, before it
makes that frame's proxy (``pipeline._first_frame_hint``).

Compiling holds Numba's compiler lock and mostly the GIL, so one process compiles one kernel at a
time (and loads none from the cache meanwhile): a thread pool would not compile faster. When some
of the run's kernels are not in Numba's cache yet (a first run), a **helper process** compiles
most of them into the same cache, while this process compiles its share (``_own_share``: with the
``soft`` fusion, the fold's own kernel, the costliest, then the finish's); when the run calls one
of the helper's, Numba finds it in the cache (it reads the index from disk each time) and loads it,
or compiles it itself if the helper has not got there (or failed). In the command's own process
(the supervised child of ``gpustack stack``, on Linux) the helper is a fork of this process, made
once Numba has started (``_fork_helper``); elsewhere it is a new interpreter (``python -c``, the
same package), which costs about 1.3 s of imports and Numba's start-up before it compiles. A
helper pays only where a core is idle (on a 2-core machine at a load near 1, the README's first
command's first run took 5.2-5.3 s with it, 6.9-7.1 s without; under a load of 7 to 12 it added
12 % of CPU time and no speed), so it is started only when a core is idle (``_idle_cores``: the
machine's idle time other than this process's, sampled over Numba's start-up where the helper is
forked, which needs it first, else over 0.1 s; not the load average, which a ``pip install`` just
before leaves high on an idle machine), or always with ``GPUSTACK_COMPILE_HELPER=1``; never with ``=0``,
where caching is off (``gpustack._numba_cache``: nothing to share), or when everything is cached
(warm runs). It stops at the end of file on the pipe it reads its work from (this process has
gone: it is reaped at exit), or after ``HELPER_IDLE_S`` seconds without work.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import numpy as np
from numba import typeof, types

logger = logging.getLogger(__name__)

_F2 = types.Array(types.float32, 2, "C")
_F3 = types.Array(types.float32, 3, "C")
_I = types.int64
_F = types.float32
_F1D = types.Array(types.float64, 1, "C")
# the kernels' work arrays (``_threads.run_rows``)
_W1 = types.Array(types.float32, 1, "C")
_I1 = types.Array(types.int64, 1, "C")
_I2 = types.Array(types.int64, 2, "C")
_B2 = types.Array(types.int8, 2, "C")

#: When a run first calls a kernel: the first frame's alignment proxy (its luminance), aligning the
#: second frame and folding the first, the frames that move, the finish.
PROXY, FOLD, MOVED, FINISH = -1, 0, 1, 2


def _fusion_kernels(options) -> list:
    """(when, dispatcher, argument types) of the alignment's sampler and of the fusion and the finish
    of ``options.method``, in order of first use."""
    from ...stages import estimate
    from . import depth, filter, fuse, pyramid, soft
    from .encode import _encode_lut_kernel  # (the package's ``encode`` is the function)

    maps = options.makes_maps
    out = []
    if options.align != "none":
        out.append((FOLD, estimate._sample_kernel, (types.Array(types.float32, 1, "C"),
                                                    types.Array(types.int64, 1, "C"),
                                                    types.Array(types.float64, 2, "C"), _F1D, _F1D, _I, _I, _F1D,
                                                    types.Array(types.bool_, 1, "C"))))
    box = (_F2, _F2, _I, _I, _I)
    out.append((FOLD, pyramid._pyramid_reduce_kernel, (_F3, _F3, _F2, _I1, _I, _I)))
    if options.method == "soft":
        out.append((FOLD, soft._soft_fold_kernel, (_F3, _F3, _F2) + (types.boolean,) * 3 + (_I, _I) + (_F2,) * 6
                    + (_F3, _F3, _F, _F, _F, _I, _I, _F, _F3, _F3, _I2, _F2, _F2, _B2, _I, _I)))  # soft_score's too
    else:  # pyramid, and the depthmap method's first pass
        out += [(FOLD, pyramid._pyramid_expand_kernel, (_F3, _F3, _I, _F3, _F2, _I, _I)),
                (FOLD, fuse._fuse_sqsum_kernel, (_F3, _F2, _I, _I)),
                (FOLD, filter._filter_box_rows_kernel, box),
                (FOLD, fuse._fuse_select_kernel, (_F3, _F2, _F3, _F2, _I, _W1, _I, _I))]
        if maps:
            out.append((FOLD, depth._depth_track_kernel, (_F2,) * 7 + (_I, _F, _I, _W1, _I, _I)))
        out.append((FOLD, fuse._fuse_accumulate_kernel, (_F3, _F3, _I, _I)))
        if maps:
            out.append((FINISH, depth._depth_finalize_kernel, (_F2,) * 5 + (_F, _F2, _F2, _I, _I)))
    if options.depth_smooth > 0 and maps:  # (stages.depthmap.smooth_depth; its other steps are NumPy's)
        out.append((FINISH, filter._filter_box_rows_kernel, box))
    if options.output is not None and options.output_format != "ome-tiff":  # OME: the input's type, later
        dt = types.uint8 if options.output_bits == 8 else types.uint16
        out.append((FINISH, _encode_lut_kernel, (_F3, types.Array(dt, 1, "C", readonly=True),
                                                 types.Array(dt, 3, "C"), _I, _I)))
    return out


def _frame_kernels(options, src, lut) -> list:
    """The kernels whose types depend on the first frame (``src``, its decoding table ``lut``, None for
    float32 frames): the luminance of the alignment proxy (``stages.proxy.make_proxy``; every frame's
    first kernel), the conversion of the frames that do not move (the reference), and the warp of
    those that do."""
    from ...stages.proxy import _luma_reduce_kernel, luma_kernel
    from .convert import _convert_f32_kernel, _convert_lut_kernel
    from .warp import _warp_kernel

    gains = types.Array(types.float32, 1, "C")
    lut_t = typeof(np.zeros(1, np.float32) if lut is None else lut)
    out = []
    if options.align != "none":
        luma = luma_kernel(src.shape)
        out.append((PROXY, luma, (typeof(src), lut_t, _F2) + ((_F2, _I1) if luma is _luma_reduce_kernel else ())))
    if lut is None:
        out.append((FOLD, _convert_f32_kernel, (typeof(src), gains, _F3, _I, _I)))
    else:
        out.append((FOLD, _convert_lut_kernel, (typeof(src), typeof(lut), gains, _F3, _I, _I)))
    if options.align != "none":
        # (a focus stack's transforms: no large rotation, warp._rotated)
        out.append((MOVED, _warp_kernel, (typeof(src), lut_t, _F1D, gains, _F3, types.none, _F3, _I2, _F2, _I, _I)))
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


def _forget_helper() -> None:
    """In a forked child: the helper is the parent's, and the compiling thread is not there."""
    global _helper
    _helper = None
    _queue.items, _queue.thread, _queue.lock = [], None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_helper)

#: ``0``: compile in this process only; ``1``: a helper whatever the load; unset: when a core is idle.
HELPER_ENV = "GPUSTACK_COMPILE_HELPER"
#: The helper stops after this many seconds without work.
HELPER_IDLE_S = 60.0
#: ``gc.set_threshold`` in the helper (Python's default: 700, 10, 10).
HELPER_GC = (10_000, 10, 10)
#: Seconds a helper has to exit after this process has told it to (``_stop_helper``).
HELPER_EXIT_S = 5.0

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


def _uncached(items) -> list:
    """(when, module, name, signature) of those of ``items`` not cached yet, each once."""
    seen, out = set(), []
    for when, dispatcher, sig in items:
        if (dispatcher, tuple(sig)) not in seen and not _in_cache(dispatcher, sig):
            seen.add((dispatcher, tuple(sig)))
            out.append((when, dispatcher.py_func.__module__, dispatcher.py_func.__qualname__, tuple(sig)))
    return out


_send_lock = threading.Lock()  # (the first frame's kernels are sent from a reader thread)


def _send(todo) -> bool:
    """Give the helper more to compile; whether it took it."""
    try:
        with _send_lock:
            _helper.stdin.write(pickle.dumps(todo))
            _helper.stdin.flush()  # kept open: its end of file tells the helper this process is gone
    except (OSError, ValueError, pickle.PicklingError) as exc:
        logger.debug("compile helper: %s", exc)
        return False
    return True


#: How long the machine's idle time is sampled to decide on a helper (Linux, ``/proc/stat``; 100 Hz
#: ticks: 20 per core over 0.1 s). Paid only when something is to be compiled.
IDLE_SAMPLE_S = 0.1


def _cpu_times():
    """(idle, total) clock ticks of all the machine's cores since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
        if fields[0] != b"cpu":
            return None
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return None
    return ticks[3] + ticks[4], sum(ticks)


def _clock() -> tuple[float, float]:
    """(seconds, this process's CPU seconds, all its threads), for ``_idle_cores``."""
    return time.monotonic(), time.process_time()


def _idle_cores(sample_s: float = IDLE_SAMPLE_S, meanwhile=None):
    """How many cores are idle now, as if this process were not running: the idle share of the
    machine's time over at least ``sample_s`` seconds (``/proc/stat``) plus this process's own CPU
    time over the same seconds (its threads' work, and ``meanwhile``'s), else the cores the 1-minute
    load average leaves, else None (Windows). ``meanwhile``: work this process has to do anyway
    before the answer is used (Numba's start-up, before a helper is forked), done during the sample
    instead of a sleep; with the /proc/stat sample only."""
    cores = os.cpu_count() or 1
    before = _cpu_times()
    if before is not None:
        t0, own0 = _clock()
        if meanwhile is not None:
            with contextlib.suppress(Exception):  # (what failed is done again, and reported, where it is needed)
                meanwhile()
        left = sample_s - (_clock()[0] - t0)
        if left > 0:
            time.sleep(left)
        after = _cpu_times()
        t1, own1 = _clock()
        if after is not None and after[1] > before[1] and t1 > t0:
            idle = cores * (after[0] - before[0]) / (after[1] - before[1])
            return min(float(cores), idle + (own1 - own0) / (t1 - t0))
    try:
        return cores - os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _helper_wanted(meanwhile=None) -> bool:
    """``GPUSTACK_COMPILE_HELPER`` if set, else whether a core is idle now (``_idle_cores``, with
    ``meanwhile``; within a tenth: the sample's resolution). Sampled rather than the load average,
    which trails a minute behind: the README's first command runs right after ``pip install``, which
    leaves the load average above 1 on an idle 2-core machine."""
    setting = os.environ.get(HELPER_ENV, "")
    if setting in ("0", "1"):
        return setting == "1"
    idle = _idle_cores(meanwhile=meanwhile)
    return True if idle is None else idle >= 0.9


def _start_helper(todo) -> bool:
    """A helper process compiling, in order, ``todo`` (``_uncached`` items); whether one was started:
    forked from this process where it is the command's own (``_fork_helper``), else a new interpreter."""
    global _helper
    if _helper is not None:
        return False
    if len(todo) < 2:  # not worth a process
        return False
    if _forkable():
        forked = _fork_helper(todo)
        if forked is not None:  # (None: not forked; a new interpreter then)
            return forked
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    try:
        _helper = subprocess.Popen([sys.executable, "-c", _HELPER_CODE], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    except OSError as exc:
        logger.debug("no compile helper: %s", exc)
        return False
    atexit.register(_stop_helper)
    logger.debug("compile helper: started (pid %d), %d kernel(s) to compile", _helper.pid, len(todo))
    return _send(todo)


def _forkable() -> bool:
    """Whether the helper may be forked from this process: Linux (elsewhere fork is unsafe with the
    system's libraries, or missing), and the supervised child of ``gpustack stack``, whose threads
    are all ours (the Python API runs inside programs that may hold anything in other threads: a GUI,
    a notebook's kernel)."""
    from ... import supervise

    return sys.platform.startswith("linux") and hasattr(os, "fork") and supervise.ATTACHED


class _Forked:
    """A forked helper, with what this module uses of ``subprocess.Popen``: ``stdin``, ``poll``, ``wait``,
    ``kill``."""

    def __init__(self, pid: int, stdin):
        self.pid, self.stdin, self.returncode = pid, stdin, None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout=None):
        end = time.monotonic() + (1e9 if timeout is None else timeout)
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"compile helper {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode


def _fork_helper(todo) -> bool | None:
    """The helper as a fork of this process (``_start_helper``): whether it took ``todo``; None when
    no helper was forked.

    A new interpreter spends about 1.3 s (on the README's first run, 2 cores) importing NumPy, Numba
    and our modules and starting Numba (its registries: 0.5-0.6 CPU s) before it compiles anything,
    which the fork does not: Numba is started here first, the fork then holds Numba's compiler lock
    (so no other thread is inside the compiler). The helper keeps only the pipe it reads its work
    from: its standard streams go to the null device (the parent's terminal, the supervisor's pipes
    and the stderr filter's are closed, so none of them waits for the helper to end), it takes
    the default action of every stop signal, and it leaves with ``os._exit`` (none of this
    process's exit handlers runs in it).

    Right before the fork, everything this process holds is frozen out of the garbage collector's
    collections (``gc.freeze``), for good: a collection writes to every object it looks at, which in
    a forked pair copies the page the object lies on, in whichever process collects, and Numba's
    compiling collects often (what it gave: ``bench/HISTORY.md``). The frozen objects are the
    modules, Numba's registries and the like, which live to the end anyway."""
    global _helper
    import gc
    import warnings

    from numba.core.compiler_lock import global_compiler_lock

    try:
        _start_numba()
        r, w = os.pipe()
    except Exception as exc:  # (then a new interpreter)
        logger.debug("no forked compile helper: %s", exc)
        return None
    with global_compiler_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (Python 3.12: "multi-threaded, use of fork()")
        gc.freeze()  # what both processes share: out of either's collections, so neither copies its pages
        try:
            pid = os.fork()
        except OSError as exc:
            pid = -1
            logger.debug("no forked compile helper: %s", exc)
    if pid == 0:
        try:
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP):
                signal.signal(s, signal.SIG_DFL)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            for fd in _open_fds():
                if fd > 2 and fd != r:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            sys.stdin = sys.stdout = sys.stderr = open(os.devnull, "w")  # not the parent's stream objects
            logging.disable(logging.CRITICAL)
            warnings.simplefilter("ignore")
            _help(os.fdopen(r, "rb"))
        finally:
            os._exit(0)
    os.close(r)
    if pid < 0:
        os.close(w)
        return None
    _helper = _Forked(pid, os.fdopen(w, "wb"))
    atexit.register(_stop_helper)
    logger.debug("compile helper: forked (pid %d), %d kernel(s) to compile; %d objects frozen out of the collections",
                 pid, len(todo), gc.get_freeze_count())
    return _send(todo)


def _start_numba() -> None:
    """Numba's start-up (its registries: 0.5-0.7 s), by compiling a helper every kernel uses."""
    from ._common import reflect

    reflect.compile((types.int64, types.int64))


def _open_fds():
    """This process's open file descriptors (``/proc/self/fd``), else every one below the limit."""
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except (OSError, ValueError):
        return range(os.sysconf("SC_OPEN_MAX"))  # (Linux only: the fork's)


def _stop_helper() -> None:
    """At exit: tell the helper to stop (what it compiled is cached: Numba writes each file whole,
    then renames it) and reap it; one still there ``HELPER_EXIT_S`` seconds later is killed, never
    left behind (at the end of file a helper exits at once: one that does not is stuck)."""
    if _helper is None:  # (a forked child's)
        return
    with contextlib.suppress(OSError, ValueError):
        _helper.stdin.close()
    try:
        _helper.wait(timeout=HELPER_EXIT_S)
    except subprocess.TimeoutExpired:
        logger.debug("compile helper %d did not stop: killed", _helper.pid)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            _helper.kill()
            _helper.wait(timeout=HELPER_EXIT_S)


def _help(stream) -> None:
    """The helper process: compile the (when, module, name, signature) items of the pickled lists
    that come on ``stream``, the earliest needed first (a later list may bring earlier ones: the
    warp); exit at its end (the run's process is gone) or when idle too long.

    A process that only compiles collects its garbage less often (``HELPER_GC``): Numba allocates
    millions of small objects, and at Python's default thresholds the collector took 0.86 of the
    15 CPU s that compiling the README's example's kernels takes (0.29 s at these); what the process
    inherited or imported is frozen out of the collections (and, forked, stays shared with the run's
    process rather than copied page by page as the collector writes to it). Not in the run's own
    process: there the same thresholds made the 40-frame stack 2-9 % slower."""
    import gc
    import importlib

    gc.freeze()
    gc.set_threshold(*HELPER_GC)
    todo: list = []
    more = threading.Condition()

    def read():
        try:
            while True:
                items = pickle.load(stream)
                with more:
                    todo[:] = sorted(todo + items, key=lambda item: item[0])  # stable
                    more.notify()
        except Exception:  # end of file
            os._exit(0)

    threading.Thread(target=read, daemon=True).start()
    while True:
        with more:
            if not todo and not more.wait(timeout=HELPER_IDLE_S):
                os._exit(0)
            if not todo:
                continue
            _, module, name, sig = todo.pop(0)
        try:
            getattr(importlib.import_module(module), name).compile(sig)
        except Exception:  # the run compiles it itself
            pass


def _own_share(options, items) -> list:
    """The kernels of ``items`` (``_fusion_kernels``) this process compiles when a helper compiles the
    others (and the first frame's: ``_frame_kernels``).

    With the ``soft`` fusion, the fold's own kernel, which costs about as much to compile as all the
    kernels the frames need from the helper together (5.3-6.9 of the README's first run's 18 CPU s,
    2-core VM, against 6.0) and which everything in this process waits for (Numba loads even a cached kernel under the compiler lock
    the compiling thread holds); the helper meanwhile compiles what the frames need (the proxy's
    luminance, the alignment's sampler, the reduction, the conversion and the warp), then the rest
    (the finish's steps are NumPy's: ``backends.cpu``).
    With the other methods, whose kernels cost alike, the last kernel of the first fold and every
    other one before it, but never the alignment's sampler, which the frames need first."""
    from . import soft

    if options.method == "soft":
        return [item for item in items if item[1] is soft._soft_fold_kernel]
    fold = [item for item in items if item[0] == FOLD]
    own = fold[len(fold) - 1::-2][::-1]
    if options.align != "none":
        own = [item for item in own if item is not fold[0]]
    return own


def start(options, src=None, lut=None) -> None:
    """Compile ahead what a run with ``options`` will call: without ``src``, the alignment's sampler
    and the fusion's and the finish's kernels; with the first frame's samples ``src`` and decoding
    table ``lut``, the proxy's luminance, the conversion and the warp (``_frame_kernels``). A first
    run shares the work with a helper process."""
    if src is not None:
        items = _frame_kernels(options, src, lut)
        if _helper is not None and _helper.poll() is None:
            todo = _uncached(items)
            if todo and _send(todo):
                return  # the helper's: the call loads it from the cache, or compiles it if need be
        _queue.add(items)
        return
    items = _fusion_kernels(options)
    own = _own_share(options, items)
    mine = {(d, sig) for _, d, sig in own}
    helped = [item for item in items if (item[1], item[2]) not in mine]
    todo = _uncached(helped)
    # (a warm run samples nothing; where the helper will be forked, the sample spans Numba's start-up,
    # which the fork needs first, instead of a sleep of its own before it)
    if len(todo) >= 2 and _helper_wanted(_start_numba if _forkable() else None) and _start_helper(todo):
        items = own  # the helper's: each call loads it from the cache, or compiles it if need be
    _queue.add(items)
