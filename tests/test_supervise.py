"""``gpustack stack`` and its supervised child (gpustack.supervise), with real processes and real
signals: Ctrl-C, kill and a killed parent stop the run and leave nothing; a crashing decoder is
named; a signal that comes once the outputs are being published lets the run finish."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tifffile

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

REPO = Path(__file__).resolve().parents[1]

SEGFAULT_ON = """
import ctypes, os, rawpy
_imread = rawpy.imread
def imread(path, *args, **kwargs):
    if os.path.basename(str(path)) == os.environ["CRASH_ON"]:
        ctypes.string_at(0)  # a decoder that crashes the process (SIGSEGV)
    return _imread(path, *args, **kwargs)
rawpy.imread = imread
"""

#: In the child: frames decoded slowly (SLOW: seconds each), so a run lasts long enough to be
#: stopped in the middle whatever the machine; with STUBBORN (a path), a child that ignores every
#: stop signal after leaving a temporary file there, as a run killed while writing would. In the
#: parent: GRACE shortens the grace period.
HOOK = """
import os, time
if "GPUSTACK_SUPERVISED_FDS" in os.environ:
    import gpustack.pipeline as pipeline
    _read = pipeline.read_frame
    def read_frame(*args, **kwargs):
        time.sleep(float(os.environ["SLOW"]))
        return _read(*args, **kwargs)
    pipeline.read_frame = read_frame
    if os.environ.get("STUBBORN"):
        import contextlib, signal
        import gpustack.supervise as sv
        for s in sv.STOP_SIGNALS:
            signal.signal(s, signal.SIG_IGN)
        sv.stoppable = lambda received: contextlib.nullcontext()
        open(os.environ["STUBBORN"], "wb").close()
elif os.environ.get("GRACE"):
    import gpustack.supervise as sv
    sv.GRACE_S = float(os.environ["GRACE"])
"""


@pytest.fixture(scope="module")
def long_stack(tmp_path_factory):
    """40 frames, each decoded in 0.2 s or more (HOOK): at least 8 s of work on one reader thread."""
    top = tmp_path_factory.mktemp("long")
    src = top / "in"
    src.mkdir()
    frame = np.random.default_rng(4).integers(0, 65535, (120, 160, 3), dtype=np.uint16)
    for k in range(40):
        tifffile.imwrite(src / f"f{k:02d}.tif", np.roll(frame, k, axis=1))
    (top / "hook").mkdir()
    (top / "hook" / "sitecustomize.py").write_text(HOOK)
    return src


def _start(src, out, **env):
    hook = src.parent / "hook"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]), GPUSTACK_SUPERVISE="1", SLOW="0.2",
               **env)
    cmd = [sys.executable, "-m", "gpustack", "stack", str(src), "-o", str(out), "--depth-map",
           str(out.with_name("d.tif")), "-v", "--align", "none", "--workers", "1"]
    # its own process group, as a shell gives a command: killpg reaches it as Ctrl-C in a terminal does
    return subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _until_fusing(proc) -> str:
    """stderr up to the first fused frame (the child is then at work)."""
    seen = ""
    deadline = time.monotonic() + 120
    while "] fuse" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "] fuse" in seen, seen
    return seen


def _the_child(proc) -> psutil.Process:
    [child] = psutil.Process(proc.pid).children()
    return child


def _lines_after_progress(text):
    return [ln for ln in text.splitlines() if ln.strip() and "INFO" not in ln]


@pytest.mark.parametrize("how, code", [("ctrl-c", 130), ("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_stop_signal_stops_the_run_and_writes_nothing(long_stack, tmp_path, how, code):
    """Ctrl-C in a terminal (SIGINT to the process group), or ``kill -INT/-TERM/-HUP`` of the
    command: the child stops, exit 128 + the signal, one line, no output, no temporary file."""
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    with _start(long_stack, out) as proc:
        _until_fusing(proc)
        child = _the_child(proc)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(getattr(signal, how))
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == code, rest
    what = {130: "interrupted", 143: "terminated", 129: "hung up"}[code]
    assert _lines_after_progress(rest) == [f"gpustack: {what}; nothing was written"], rest
    assert not child.is_running()
    assert list(out.parent.iterdir()) == []


def test_a_killed_parent_takes_the_child_down_and_nothing_is_published(long_stack, tmp_path):
    """``kill -KILL`` of the command: its child notices at once (the pipe from the parent ends),
    deletes its temporaries and exits, and never publishes the outputs."""
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    with _start(long_stack, out) as proc:
        _until_fusing(proc)
        child = _the_child(proc)
        assert child.is_running()
        proc.kill()
        proc.wait(timeout=30)
        try:
            child.wait(timeout=30)
        except psutil.TimeoutExpired:
            child.kill()
            pytest.fail("the child outlived its parent by 30 s")
    time.sleep(1)  # time in which an orphan would have gone on to write
    assert list(out.parent.iterdir()) == []


def test_ctrl_z_suspends_the_child_too(long_stack, tmp_path):
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    with _start(long_stack, out) as proc:
        _until_fusing(proc)
        child = _the_child(proc)
        os.killpg(proc.pid, signal.SIGTSTP)  # Ctrl-Z in a terminal
        deadline = time.monotonic() + 30
        while child.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.status() == psutil.STATUS_STOPPED
        assert psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED
        os.killpg(proc.pid, signal.SIGCONT)  # fg
        while child.status() == psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.status() != psutil.STATUS_STOPPED
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 130, rest
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("how", ["second signal", "grace period"])
def test_a_child_that_does_not_stop_is_killed_and_its_temporaries_removed(long_stack, tmp_path, how):
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    leftover = out.with_name(".f.tif.0badc0de.tmp")
    with _start(long_stack, out, STUBBORN=str(leftover), GRACE="1") as proc:
        _until_fusing(proc)
        child = _the_child(proc)
        assert leftover.exists()
        proc.send_signal(signal.SIGINT)
        if how == "second signal":
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 130, rest
    assert _lines_after_progress(rest) == ["gpustack: interrupted; nothing was written"], rest
    assert not child.is_running()
    assert list(out.parent.iterdir()) == []


def test_a_decoder_crash_names_the_file_and_leaves_nothing(tmp_path):
    """LibRaw dying inside a reader thread (simulated: a segfault when frame002.dng is opened) takes
    down only the supervised child: one line naming the file, exit 1, no output, no temporary file."""
    from dng import write_dng_stack

    from gpustack import synth

    st = synth.make_stack(n_frames=4, shape=(48, 64), seed=2)
    paths = write_dng_stack(st.frames, tmp_path / "in")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SEGFAULT_ON)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]), CRASH_ON="frame002.dng",
               GPUSTACK_SUPERVISE="1")
    out = tmp_path / "out" / "f.tif"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "gpustack", "stack", *map(str, paths), "-o", str(out), "--depth-map",
           str(out.with_name("d.tif")), "--align", "none", "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "crashed (SIGSEGV) while decoding" in lines[0] and "frame002.dng" in lines[0], lines[0]
    assert "frame001.dng" not in lines[0]  # only the file being decoded is named
    assert list(out.parent.iterdir()) == []
    assert all(p.read_bytes()[:4] in (b"II*\0", b"MM\0*") for p in paths)  # inputs untouched
    env["CRASH_ON"] = "none"
    ok = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and out.is_file(), ok.stderr


# --------------------------------------------------------------------------- in one process


def _stage_two(tmp_path, stage):
    from gpustack.io import write_depth, write_image

    write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8), fmt="png", stage=stage)
    write_depth(tmp_path / "b.tif", np.zeros((4, 4), np.float32), stage=stage)


def test_a_signal_before_the_commit_stops_the_run(tmp_path):
    from gpustack.io import StagedOutputs
    from gpustack.supervise import stoppable

    received = []
    with pytest.raises(KeyboardInterrupt):
        with stoppable(received), StagedOutputs() as stage:
            _stage_two(tmp_path, stage)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises here
            stage.commit()
    assert received == [signal.SIGTERM]
    assert list(tmp_path.iterdir()) == []


def test_a_signal_once_the_commit_began_lets_the_run_finish(tmp_path, monkeypatch):
    """Between the first and the second output's move there is nothing left to stop: the signal is
    noted, the commit completes (exit 0 in the CLI), and a later signal is ignored too."""
    from gpustack.io import StagedOutputs
    from gpustack.io import write as write_module
    from gpustack.supervise import stoppable

    publish = write_module._Move.publish

    def interrupted_publish(self, overwrite):
        publish(self, overwrite)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between two moves
        time.sleep(0.1)

    monkeypatch.setattr(write_module._Move, "publish", interrupted_publish)
    received = []
    with stoppable(received), StagedOutputs() as stage:
        _stage_two(tmp_path, stage)
        stage.commit()
    assert received == [signal.SIGINT, signal.SIGINT]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.tif"]


def test_the_child_finishes_with_its_exit_handlers_and_buffered_output():
    """``supervise.finish``, the supervised child's end (it skips the interpreter's teardown): the exit
    handlers run, whatever is still buffered on stdout and stderr comes out, and the exit status is
    the run's."""
    code = ("import atexit, sys\n"
            "from gpustack import supervise\n"
            "atexit.register(lambda: print('handler ran'))\n"
            "sys.stdout.write('buffered out; ')\n"
            "sys.stderr.write('buffered err')\n"
            "supervise.finish(3)\n"
            "print('not reached')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert res.returncode == 3
    assert res.stdout == "buffered out; handler ran\n"
    assert res.stderr == "buffered err"
