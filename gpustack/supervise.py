"""``gpustack stack`` runs its work in a child process and watches it.

Why: a decoder that crashes (LibRaw on a damaged RAW can die with a segmentation fault inside its C
code) takes only the child down; the parent names the file being decoded, removes any temporary
output and exits 1 with one line. The two processes keep each other honest:

- **signals** (Ctrl-C, ``kill``, a closed terminal): the child runs in its own session, so the
  terminal's signals reach the parent only, which passes each one to the child once. The child
  stops cleanly (nothing published, temporaries deleted) and says so in one line: exit 130 for
  SIGINT, 143 for SIGTERM, 129 for SIGHUP. A second signal, or a child still running
  :data:`GRACE_S` seconds after the first, is killed (SIGKILL); the parent then deletes the
  temporaries and says the line itself. A signal that comes once the child has begun to publish its
  outputs (a few milliseconds, see ``gpustack.io.write.StagedOutputs``) is too late: the run
  completes.
- **Ctrl-Z** (SIGTSTP) stops the child with the parent, and it resumes with it.
- **a parent that dies** (``kill -KILL``, a crashed shell): the child holds the read end of a pipe
  whose only writer is the parent, so it learns of that at once (end of file), deletes its
  temporaries, publishes nothing, and exits.

The child ends with :func:`finish`: its exit handlers run and its streams are flushed, and it exits
without the interpreter's teardown, which the user would otherwise wait through (0.45-0.85 s on a
2-core VM after a run: freeing every module, Numba's and LLVM's compiled code among them; 0.01 s for
a bare interpreter).

``GPUSTACK_SUPERVISE=0`` runs everything in one process (debuggers, profilers); the signals are then
handled the same way in that process, without the parent's escalation.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

#: ``0`` runs ``stack`` in this process, without a supervising parent.
SUPERVISE_ENV = "GPUSTACK_SUPERVISE"
#: Set in the child: ``"<decode-log fd>,<parent-alive fd>"``.
CHILD_ENV = "GPUSTACK_SUPERVISED_FDS"
#: Seconds the child has to stop after a signal before it is killed.
GRACE_S = 10.0
#: The signals that stop a run, and what the one line says about each.
STOP_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
if hasattr(signal, "SIGHUP"):
    STOP_SIGNALS[signal.SIGHUP] = "hung up"
#: True in the supervised child once :func:`attach` ran: the process is the command's own, its
#: threads all gpustack's (the compile helper may be forked from it, ``backends.cpu._ahead``).
ATTACHED = False


def wanted() -> bool:
    """Whether ``gpustack stack`` should run its work in a supervised child (POSIX, not disabled)."""
    return os.name == "posix" and os.environ.get(SUPERVISE_ENV, "1") != "0" and CHILD_ENV not in os.environ


def stopped_line(signum: int) -> str:
    return f"gpustack: {STOP_SIGNALS.get(signum, 'stopped')}; nothing was written"


# --------------------------------------------------------------------------- the parent


def run_child(argv: list[str], outputs: list) -> int:
    """Run ``python -m gpustack *argv`` as the supervised child and return the command's exit status.

    ``outputs`` are the paths the run may write: their temporaries are deleted if the child dies
    without doing it itself."""
    log_r, log_w = os.pipe()  # child -> parent: the files being decoded
    alive_r, alive_w = os.pipe()  # parent -> child: end of file when the parent is gone
    env = dict(os.environ, **{CHILD_ENV: f"{log_w},{alive_r}"})
    in_flight: dict[str, int] = {}
    follower = threading.Thread(target=_follow, args=(log_r, in_flight), daemon=True)
    follower.start()
    received: list[int] = []
    child = None

    def on_signal(signum, frame):
        received.append(signum)
        if child is None or child.poll() is not None:
            return
        if len(received) == 1:
            child.send_signal(signum)  # the child stops cleanly
        else:
            child.kill()  # a second signal: at once

    def on_suspend(signum, frame):  # Ctrl-Z: the child, in its own session, is stopped and resumed with us
        running = child is not None and child.poll() is None
        if running:
            child.send_signal(signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)
        if running:  # resumed (fg, bg, kill -CONT)
            child.send_signal(signal.SIGCONT)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, on_suspend)
    try:
        try:
            child = subprocess.Popen([sys.executable, "-m", "gpustack", *argv], env=env, pass_fds=(log_w, alive_r),
                                     start_new_session=True)
        except OSError as exc:
            print(f"gpustack: error: cannot start the stacking process: {exc}; run with {SUPERVISE_ENV}=0 to "
                  f"stack in this process", file=sys.stderr)
            return 1
        finally:
            os.close(log_w)
            os.close(alive_r)
        if received:
            child.send_signal(received[0])
        code = _wait(child, received)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(alive_w)
    follower.join(timeout=5)
    if code < 0:  # the child was killed, or crashed: it may have left temporary files
        from .io.write import remove_temporaries  # only here: this process imports no readers or writers

        for out in outputs:
            if out is not None:
                remove_temporaries(out)
    if received and code != 0:
        if code < 0:  # killed before it could say so itself
            print(stopped_line(received[0]), file=sys.stderr)
            return 128 + received[0]
        return code
    if code >= 0:
        return code
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    busy = sorted(p for p, n in in_flight.items() if n > 0)
    if busy:
        what = f"while decoding {busy[0]}" if len(busy) == 1 else f"while decoding one of {', '.join(busy)}"
        hint = ("that file may be corrupt or unsupported (a RAW LibRaw cannot read safely): re-copy it, or "
                "remove it from the frames, and run again")
    else:
        what, hint = "outside decoding", "run again with -v and report it"
    print(f"gpustack: error: the stacking process crashed ({name}) {what}; {hint}; nothing was written",
          file=sys.stderr)
    return 1


def _wait(child: subprocess.Popen, received: list) -> int:
    """The child's exit status; killed when it outlives a signal by more than GRACE_S seconds."""
    deadline = None
    while True:
        try:
            return child.wait(timeout=0.25)
        except subprocess.TimeoutExpired:
            pass
        if received and deadline is None:
            deadline = time.monotonic() + GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            child.kill()


def _follow(fd: int, in_flight: dict) -> None:
    """Count the decodes under way per file from the child's ``["start"|"end", path]`` lines."""
    with os.fdopen(fd, "rb") as pipe:
        for line in pipe:
            try:
                event, path = json.loads(line)
            except ValueError:
                continue
            in_flight[path] = in_flight.get(path, 0) + (1 if event == "start" else -1)


# --------------------------------------------------------------------------- the child


def attach() -> None:
    """In the supervised child: report decodes to the parent, and stop (publishing nothing) as soon
    as the parent is gone."""
    from .io.frames import set_decode_log

    global ATTACHED
    log_fd, alive_fd = (int(v) for v in os.environ.pop(CHILD_ENV).split(","))
    set_decode_log(log_fd)
    ATTACHED = True
    threading.Thread(target=_watch_parent, args=(alive_fd,), name="gpustack-parent", daemon=True).start()


def _watch_parent(fd: int) -> None:
    from .io.write import cancel_outputs

    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    # end of file: the parent is gone (killed, crashed); nobody will publish or clean up after us
    cancel_outputs()
    os._exit(1)


def finish(code: int):
    """In the supervised child, once the run is over (its outputs published or cleaned up): run the
    exit handlers (the compile helper is told to stop, the log handlers flushed), flush the standard
    streams and exit with ``code`` at once, without the interpreter's teardown (module docstring)."""
    try:
        atexit._run_exitfuncs()  # (what a normal exit runs first; CPython's, since 3.0)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


@contextlib.contextmanager
def stoppable(received: list):
    """Within the block, the stop signals raise KeyboardInterrupt once (their numbers are appended
    to ``received``), unless this run has begun to publish its outputs: then the run completes.
    Repeated signals are ignored while stopping. Main thread only; elsewhere it does nothing."""
    from .io.write import commits_started

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    started = commits_started()

    def on_signal(signum, frame):
        received.append(signum)
        if len(received) == 1 and commits_started() == started:
            raise KeyboardInterrupt

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
