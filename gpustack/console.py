"""What the ``gpustack`` command shows on stderr: log lines, warnings, progress; nothing else.

The library only logs (the ``gpustack`` logger), warns and reports progress through a callback;
this module turns that into lines for a person:

- :func:`configure_logging`: our records as ``gpustack: LEVEL: message``; other libraries'
  records and warnings (tifffile's complaints about a broken file, Pillow's about its EXIF block)
  only with ``-vv``, so the one error line about that file is ours; our warnings as messages,
  without a source path and line.
- :func:`quiet_native_stderr`: C libraries that print on the process's stderr themselves
  (LibRaw's ``<file>: Unexpected end of file`` for a truncated RAW) are filtered: their known lines
  become debug records, anything else passes through unchanged.
- :class:`ProgressBar` (a terminal) and :class:`ProgressLog` (a pipe with ``-v``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings

logger = logging.getLogger("gpustack")
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep

#: Lines LibRaw's default data-error callback prints with fprintf(stderr) (rawpy cannot replace it).
NATIVE_NOISE = re.compile(rb"^.*: (Unexpected end of file|data corrupted at -?\d+)\r?$")


def configure_logging(verbosity: int, stream=None) -> None:
    """Log to ``stream`` (stderr): warnings and errors; ``verbosity`` 1 adds info, 2 debug (with the
    logger's name) and other libraries' records."""
    stream = sys.stderr if stream is None else stream
    level = max(10, 30 - 10 * verbosity)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("gpustack: %(levelname)s: %(message)s" if level > 10
                                           else "gpustack: %(levelname)s: %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    # other libraries' records reach the root logger; without a handler there Python would print
    # their warnings itself ("last resort"), so it gets ours with -vv and a silent one otherwise
    logging.root.handlers[:] = [handler if level <= 10 else logging.NullHandler()]

    def show(message, category, filename, lineno, file=None, line=None):  # a message, not a code location
        ours = os.path.abspath(filename).startswith(_PACKAGE)
        logging.getLogger("gpustack.warnings").log(logging.WARNING if ours else logging.DEBUG, "%s", message)

    warnings.showwarning = show


@contextlib.contextmanager
def quiet_native_stderr():
    """Route what C code writes on file descriptor 2 through a filter (see :data:`NATIVE_NOISE`),
    while Python's ``sys.stderr`` keeps writing to the real stderr directly. Does nothing when
    ``sys.stderr`` is not file descriptor 2 (a test capturing it, an embedding application)."""
    try:
        real = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    previous = sys.stderr
    sys.stderr = open(saved, "w", buffering=1, encoding=previous.encoding, errors=previous.errors, closefd=False)
    for h in (*logger.handlers, *logging.root.handlers):
        if isinstance(h, logging.StreamHandler) and h.stream is previous:
            h.setStream(sys.stderr)
    relay = threading.Thread(target=_relay, args=(read_end, saved), name="gpustack-stderr", daemon=True)
    relay.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's write end: the relay reads to its end and stops
        relay.join(timeout=5)
        for h in (*logger.handlers, *logging.root.handlers):
            if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr:
                h.setStream(previous)
        sys.stderr.close()
        sys.stderr = previous
        os.close(saved)


def _relay(read_end: int, out: int) -> None:
    """Copy what C code writes (``read_end``) to the real stderr (``out``) line by line, except the
    lines that match :data:`NATIVE_NOISE`, which become debug records."""
    pending = b""
    with open(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                if NATIVE_NOISE.match(line):
                    logging.getLogger("gpustack.io.raw").debug("LibRaw: %s", line.decode("utf-8", "replace"))
                else:
                    _write_all(out, line + b"\n")
    _write_all(out, pending)


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        pass


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ProgressBar:
    """``[#####.....]  12/40 fuse  3.1 fr/s  ETA 0:09  name`` on one terminal line (``\\r``)."""

    def __init__(self, stream, width: int = 24):
        self.stream = stream
        self.width = width
        self.active = False
        self.stage_start = {}

    def __call__(self, ev) -> None:
        start = self.stage_start.setdefault(ev.stage, (time.perf_counter(), ev.index - 1))
        if ev.stage in ("fuse", "blend"):
            done = ev.index - start[1]
            dt = time.perf_counter() - start[0]
            rate = done / dt if dt > 0 else 0.0
            if ev.total:
                filled = int(self.width * ev.index / ev.total)
                bar = "#" * filled + "." * (self.width - filled)
                eta = f"ETA {_fmt_time((ev.total - ev.index) / rate)}" if rate > 0 else "ETA  -:--"
                line = f"[{bar}] {ev.index:4d}/{ev.total:<4d} {ev.stage:5s} {rate:5.1f} fr/s  {eta}  {ev.name}"
            else:
                line = f"{ev.index:4d} frames {ev.stage:5s} {rate:5.1f} fr/s  {ev.name}"
        else:
            line = f"{ev.stage} ({_fmt_time(ev.elapsed)} elapsed)"
        self.stream.write("\r" + line[:110].ljust(110))
        self.stream.flush()
        self.active = True

    def close(self) -> None:
        if self.active:
            self.stream.write("\n")
            self.stream.flush()
            self.active = False


class ProgressLog:
    """Progress as log lines (a pipe with -v): ``[ 3/12] fuse  IMG_0103.CR2``."""

    def __call__(self, ev) -> None:
        if ev.stage in ("fuse", "blend"):
            total = ev.total or "?"
            logger.info("[%3d/%3s] %-5s %s", ev.index, total, ev.stage, ev.name)
        else:
            logger.info("%s (%.1f s elapsed)", ev.stage, ev.elapsed)

    def close(self) -> None:
        pass
