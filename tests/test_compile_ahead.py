"""The CPU backend compiles a run's kernels on a thread ahead of their first call
(``gpustack.backends.cpu._ahead``): it must compile exactly what the run calls, no specialisation
more (a wrong guess of a type would compile one nobody uses, which a first run pays for)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import gc, json, sys, threading
import gpustack
from numba.core.registry import CPUDispatcher
from gpustack.backends.cpu import CpuBackend, _ahead

folder, out, method, align, ahead, maps = sys.argv[1:7]
if ahead == "off":
    del CpuBackend.compile_ahead
listed = {}
for name in ("_fusion_kernels", "_frame_kernels"):  # what the lists give, recorded
    def recorded(*args, _list=getattr(_ahead, name)):
        items = _list(*args)
        for _, d, sig in items:
            listed.setdefault(f"{d.py_func.__module__}.{d.py_func.__qualname__}", set()).add(str(tuple(sig)))
        return items
    setattr(_ahead, name, recorded)
maps = {"depth_map": out + "/d.tif"} if maps == "maps" else {"maps": False}
gpustack.stack(folder, output=out + "/f.tif", method=method, align=align, overwrite=True, backend="cpu", **maps)
for t in threading.enumerate():
    if t.name == "gpustack-compile":
        t.join()  # anything it still compiles counts
sigs = {f"{d.py_func.__module__}.{d.py_func.__qualname__}": sorted(map(str, d.signatures))
        for d in gc.get_objects() if isinstance(d, CPUDispatcher) and d.py_func.__module__.startswith("gpustack")}
library = sorted(f"{d.py_func.__module__}.{d.py_func.__qualname__}{s}" for d in gc.get_objects()
                 if isinstance(d, CPUDispatcher) and d.py_func.__module__.startswith("numba") for s in d.signatures)
print(json.dumps({"compiled": {k: v for k, v in sigs.items() if v and k.endswith("_kernel")},  # helpers: inside
                  "listed": {k: sorted(v) for k, v in listed.items()}, "library": library}))
"""

@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Three 96x64 JPEG frames of one texture, shifted, so that the frames are aligned and warped."""
    folder = tmp_path_factory.mktemp("frames")
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (64 + 8, 96 + 8, 3), dtype=np.uint8)
    for k in range(3):
        Image.fromarray(img[k:k + 64, 2 * k:2 * k + 96]).save(folder / f"f{k}.jpg", quality=95)
    return folder, tmp_path_factory.mktemp("numba-cache")


def _compiled(frames, tmp_path, method, align, ahead, maps=True):
    """The kernels' specialisations the run compiled or loaded, those the lists gave, and the Numba
    library functions (``np.empty``, ``min``...) compiled in the process."""
    folder, cache = frames
    # no helper process: the thread then compiles (or loads) every specialisation it lists
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(REPO), GPUSTACK_SUPERVISE="0",
               GPUSTACK_COMPILE_HELPER="0")
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(folder), str(tmp_path), method, align, ahead,
                          "maps" if maps else "no-maps"], env=env, capture_output=True, text=True, timeout=600,
                         check=False)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.splitlines()[-1])
    return out["compiled"], out["listed"], out["library"]


@pytest.mark.slow
@pytest.mark.parametrize("method, align, maps", [("soft", "similarity", True), ("pyramid", "similarity", True),
                                                 ("soft", "none", True), ("soft", "similarity", False),
                                                 ("pyramid", "none", False)])
def test_compile_ahead_compiles_only_what_the_run_calls(frames, tmp_path, method, align, maps):
    """The lists give exactly the kernels' specialisations a run without them compiles on first call
    (warp, conversion and alignment included; a missing one is compiled when the run first needs it,
    at the earliest when the fold's kernel is done), and the run with them compiles nothing more;
    without the maps, none of the maps' kernels; and no kernel makes Numba compile a library function."""
    called, _, library = _compiled(frames, tmp_path, method, align, "off", maps)
    ahead, listed, _ = _compiled(frames, tmp_path, method, align, "on", maps)
    # the maps' kernels: the soft method's depth smoothing's row sums (its other steps are NumPy's), the
    # pyramid method's depth tracker
    maps_kernel = "gpustack.backends.cpu." + ("filter._filter_box_rows_kernel" if method == "soft" else
                                              "depth._depth_track_kernel")
    assert (maps_kernel in called) == maps
    assert "gpustack.backends.cpu.convert._convert_lut_kernel" in called  # the reference frame
    if align != "none":
        assert "gpustack.backends.cpu.warp._warp_kernel" in called  # the frames moved: the frame kernels count
    assert ("gpustack.stages.proxy._luma_kernel" in called) == (align != "none")  # the proxy's, listed too
    assert listed == called
    assert ahead == called
    assert all(len(v) == 1 for v in called.values()), called
    # no kernel compiled in the run called one (each is compiled again in every process of a first run:
    # backends.cpu._common); the kernels the earlier cases compiled were loaded from the cache
    assert library == []


HELPER_SCRIPT = r"""
import os, select, sys, time
from gpustack import supervise
from gpustack.options import StackOptions
from gpustack.backends.cpu import _ahead

supervise.ATTACHED = sys.argv[2] == "fork"  # (as in the command's supervised child)
held_r, held_w = os.pipe()  # stands for the supervisor's pipes, which the helper must not keep open
items = _ahead._fusion_kernels(StackOptions(output="f.tif", depth_map="d.tif", method=sys.argv[1]))
started = _ahead._start_helper(_ahead._uncached(items))
kind = type(_ahead._helper).__name__
os.close(held_w)
closed = bool(select.select([held_r], [], [], 10)[0]) and os.read(held_r, 1) == b""  # end of file at once
deadline = time.monotonic() + 600
while started and not all(_ahead._in_cache(d, sig) for _, d, sig in items) and time.monotonic() < deadline:
    time.sleep(0.2)  # nothing is compiled in this process: only the helper can fill the cache
cached = all(_ahead._in_cache(d, sig) for _, d, sig in items)
gone = None
if started:
    _ahead._helper.stdin.close()  # as at exit: its end of file stops the helper
    gone = _ahead._helper.wait(timeout=30) == 0
print(started, kind, closed, cached, gone)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_compile_helper_fills_the_cache_and_is_not_started_when_warm(tmp_path, how):
    """A first run's helper process compiles its kernels into the shared cache (the run then loads
    them), holds none of the run's other file descriptors (the forked one closes what it inherited:
    the supervisor waits for the end of file of its pipes), and stops at the end of file of its own;
    once the kernels are all cached, no helper is started. Forked in the command's own process on
    Linux, a new interpreter elsewhere."""
    if how == "fork" and not sys.platform.startswith("linux"):
        pytest.skip("the helper is forked on Linux only")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    env.pop("GPUSTACK_COMPILE_HELPER", None)

    def run():
        res = subprocess.run([sys.executable, "-c", HELPER_SCRIPT, "depthmap", how], env=env, capture_output=True,
                             text=True, timeout=900, check=False)
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""  # (the forked helper writes nothing on the run's streams)
        return res.stdout.split()

    kind = "_Forked" if how == "fork" else "Popen"
    assert run() == ["True", kind, "True", "True", "True"]  # cold: started, and all it was given is cached
    assert run() == ["False", "NoneType", "True", "True", "None"]  # warm: nothing to do


@pytest.mark.slow
def test_first_run_of_the_command_forks_its_helper(frames, tmp_path):
    """The command's first run (empty cache) with a helper forked from its supervised child: it ends
    as soon as the run does, says nothing of the helper but at debug level, and writes the bytes a run
    compiling everything in one process writes."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the helper is forked on Linux only")
    folder, _ = frames
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(REPO), GPUSTACK_COMPILE_HELPER="1")
    env.pop("GPUSTACK_SUPERVISE", None)

    def stack(out, *flags, **extra):
        cmd = [sys.executable, "-m", "gpustack", "stack", str(folder), "-o", str(tmp_path / out), *flags]
        return subprocess.run(cmd, env=dict(env, **extra), capture_output=True, text=True, timeout=600, check=False)

    res = stack("forked.tif", "-vv")
    assert res.returncode == 0, res.stderr
    debug = [line for line in res.stderr.splitlines() if "compile helper" in line]
    assert len(debug) == 1 and "forked" in debug[0], res.stderr
    frozen = int(re.search(r"(\d+) objects frozen", debug[0]).group(1))  # (shared, so neither copies them)
    assert frozen > 10000, debug[0]
    res = stack("quiet.tif", GPUSTACK_COMPILE_HELPER="0", GPUSTACK_SUPERVISE="0")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert np.array_equal(tifffile.imread(tmp_path / "forked.tif"), tifffile.imread(tmp_path / "quiet.tif"))


STUCK_SCRIPT = r"""
import os, subprocess, sys, time
from gpustack.backends.cpu import _ahead

_ahead.HELPER_EXIT_S = 0.5
if sys.argv[1] == "fork":
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a helper that does not stop at the end of file of its pipe
        time.sleep(120)
        os._exit(0)
    os.close(r)
    _ahead._helper = _ahead._Forked(pid, os.fdopen(w, "wb"))
else:
    _ahead._helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], stdin=subprocess.PIPE)
t0 = time.monotonic()
_ahead._stop_helper()
try:
    os.kill(_ahead._helper.pid, 0)
    gone = False
except ProcessLookupError:
    gone = True
print(gone, time.monotonic() - t0 < 30)
"""


@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_a_stuck_helper_is_killed_at_exit(how):
    """At exit the helper is told to stop (end of file) and reaped; one that does not stop within
    ``HELPER_EXIT_S`` is killed, not left running after the command."""
    if how == "fork" and not hasattr(os, "fork"):
        pytest.skip("no fork here")
    res = subprocess.run([sys.executable, "-c", STUCK_SCRIPT, how], env=dict(os.environ, PYTHONPATH=str(REPO)),
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "True"]


def test_helper_is_forked_only_from_the_commands_own_process(monkeypatch):
    """Forking copies every thread's state: only the supervised child of ``gpustack stack``, whose
    threads are all ours, forks its helper (on Linux); the Python API, inside someone's program,
    starts a new interpreter."""
    from gpustack import supervise
    from gpustack.backends.cpu import _ahead

    monkeypatch.setattr(supervise, "ATTACHED", False)
    assert not _ahead._forkable()
    monkeypatch.setattr(supervise, "ATTACHED", True)
    assert _ahead._forkable() == sys.platform.startswith("linux")


def test_compile_helper_only_where_a_core_is_idle(monkeypatch):
    """The helper costs about a CPU second of its own: started when a core is idle now (sampled from
    /proc/stat; elsewhere the load average), or as GPUSTACK_COMPILE_HELPER says."""
    from gpustack.backends.cpu import _ahead

    monkeypatch.delenv("GPUSTACK_COMPILE_HELPER", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(_ahead.time, "sleep", lambda s: None)

    def sampled(*ticks, own=0.0):  # (idle, total) before and after the sample; this process's CPU s over it
        samples, clock = iter(ticks), iter([(10.0, 3.0), (10.0, 3.0), (10.2, 3.0 + own)])  # a sample of 0.2 s
        monkeypatch.setattr(_ahead, "_cpu_times", lambda: next(samples))
        monkeypatch.setattr(_ahead, "_clock", lambda: next(clock))

    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.5, 1.0))  # a minute of pip install: ignored
    sampled((1000, 5000), (1019, 5020))  # 19 of 20 ticks idle: 1.9 cores
    assert _ahead._helper_wanted()
    sampled((1000, 5000), (1010, 5020))  # one core busy elsewhere: this process takes the other
    assert _ahead._helper_wanted()
    sampled((1000, 5000), (1003, 5020))  # both busy
    assert not _ahead._helper_wanted()
    sampled((1000, 5000), (1001, 5020), own=0.2)  # one of them with this process's own work: not a load
    assert _ahead._helper_wanted()
    sampled((1000, 5000), (1000, 5020), own=0.6)  # both with its own threads' work (3 cores' worth: capped)
    assert _ahead._idle_cores() == 2.0
    monkeypatch.setattr(_ahead, "_cpu_times", lambda: None)  # no /proc/stat: the load average
    assert not _ahead._helper_wanted()
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert _ahead._helper_wanted()
    monkeypatch.setenv("GPUSTACK_COMPILE_HELPER", "1")
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert _ahead._helper_wanted()
    monkeypatch.setenv("GPUSTACK_COMPILE_HELPER", "0")
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not _ahead._helper_wanted()


def test_idle_sample_spans_the_work_given_instead_of_a_sleep(monkeypatch):
    """Before a forked helper, Numba's start-up (which the fork needs anyway) runs during the sample
    instead of a sleep: done once, no sleep when it took longer than the sample, and the CPU time
    this process spent meanwhile counted as idle."""
    from gpustack.backends.cpu import _ahead

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    slept, calls = [], []
    monkeypatch.setattr(_ahead.time, "sleep", slept.append)
    ticks = iter([(1000, 5000), (1008, 5120)])  # 8 of 120 ticks idle over the 0.6 s
    clock = iter([(10.0, 3.0), (10.6, 3.55), (10.6, 3.55)])
    monkeypatch.setattr(_ahead, "_cpu_times", lambda: next(ticks))
    monkeypatch.setattr(_ahead, "_clock", lambda: next(clock))
    idle = _ahead._idle_cores(0.1, meanwhile=lambda: calls.append(1))
    assert calls == [1] and slept == []
    assert idle == pytest.approx(2 * 8 / 120 + 0.55 / 0.6)
    ticks, clock = iter([(1000, 5000), (1015, 5020)]), iter([(10.0, 3.0), (10.03, 3.03), (10.1, 3.03)])
    assert _ahead._idle_cores(0.1, meanwhile=lambda: calls.append(2)) == pytest.approx(1.5 + 0.03 / 0.1)
    assert calls == [1, 2] and slept == [pytest.approx(0.07)]  # the rest of the sample


def test_idle_cores_from_proc_stat():
    """The sample reads the machine's real counters (Linux): a share of the cores, never more."""
    from gpustack.backends.cpu import _ahead

    if _ahead._cpu_times() is None:
        pytest.skip("no /proc/stat")
    idle = _ahead._idle_cores(0.05)
    assert 0.0 <= idle <= os.cpu_count()
    end = time.monotonic() + 0.1
    busy = _ahead._idle_cores(0.05, meanwhile=lambda: [None for _ in iter(lambda: time.monotonic() > end, True)])
    assert 0.0 <= busy <= os.cpu_count()


def test_kernels_and_helpers_share_one_set_of_numba_options():
    """Every Numba function of the CPU backend and of the alignment's inputs, kernels and the helpers they
    call, has the same options (``gpustack.backends.cpu._common``): Numba compiles a library function
    they use (``np.empty``, ``min``) once per set of options its callers have, so a helper with other
    options compiles those again on a first run; and no C callback wrapper, which nothing calls."""
    import importlib
    import pkgutil

    from numba.core.registry import CPUDispatcher

    import gpustack.backends.cpu as cpu

    names = [f"gpustack.backends.cpu.{m.name}" for m in pkgutil.iter_modules(cpu.__path__)]
    modules = [importlib.import_module(n) for n in names + ["gpustack.stages.proxy", "gpustack.stages.estimate"]]
    want = {"nogil": True, "error_model": "numpy", "no_cfunc_wrapper": True}
    found = {f"{m.__name__}.{name}": {k: obj.targetoptions.get(k) for k in want}
             for m in modules for name, obj in vars(m).items()
             if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == m.__name__}
    assert len(found) > 30, sorted(found)  # the kernels and helpers were found
    assert {name: opts for name, opts in found.items() if opts != want} == {}
