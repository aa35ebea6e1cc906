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
- :class:`ProgressBar` (a terminal, drawn by ``rich``) and :class:`ProgressLog` (a pipe with ``-v``).
- :class:`BatchProgress` and :func:`print_summary`: what ``gpustack batch`` shows.
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
    """One live line on a terminal, drawn by ``rich``: a bar, ``12/40 fuse  3.1 fr/s  ETA 0:09  name``
    (frames done of total, the stage, the rate in this stage, the time left, the frame)."""

    def __init__(self, stream, width: int = 24):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self._progress = Progress(BarColumn(bar_width=width), TextColumn("{task.fields[line]}"),
                                  console=Console(file=stream, highlight=False), auto_refresh=False)
        self._task = None
        self.active = False
        self.stage_start = {}

    def __call__(self, ev) -> None:
        start = self.stage_start.setdefault(ev.stage, (time.perf_counter(), ev.index - 1))
        if ev.stage in ("fuse", "blend"):
            done = ev.index - start[1]
            dt = time.perf_counter() - start[0]
            rate = done / dt if dt > 0 else 0.0
            if ev.total:
                eta = f"ETA {_fmt_time((ev.total - ev.index) / rate)}" if rate > 0 else "ETA  -:--"
                line = f"{ev.index:4d}/{ev.total:<4d} {ev.stage:5s} {rate:5.1f} fr/s  {eta}  {ev.name}"
            else:
                line = f"{ev.index:4d} frames {ev.stage:5s} {rate:5.1f} fr/s  {ev.name}"
        else:
            line = f"{ev.stage} ({_fmt_time(ev.elapsed)} elapsed)"
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("stack", total=None, line="")
            self.active = True
        total = ev.total if ev.stage in ("fuse", "blend") and ev.total else None
        self._progress.update(self._task, completed=ev.index if total else 0, total=total, line=line, refresh=True)

    def close(self) -> None:
        if self.active:
            self._progress.stop()
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


class BatchProgress:
    """What ``gpustack batch`` shows while it runs (needs ``rich``, part of the batch extra).

    On a terminal: a line per finished stack above one live bar for the whole batch (stacks
    done/total, frames/s across the cluster, ETA, failures so far). In a pipe: nothing but the
    failures, unless ``verbose``, which logs a line per stack.
    """

    def __init__(self, stream, total: int, *, live: bool, verbose: bool):
        self.total, self.live, self.verbose = total, live, verbose
        self.finished = self.failed = self.skipped = self.frames = 0
        self.t_start = None  # when the first stack was submitted
        self._progress = self._task = None
        if live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(TextColumn("stacks"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[rate]}  {task.fields[eta]}  {task.fields[failed]}"),
                                      console=Console(file=stream), transient=True)
            self._task = self._progress.add_task("batch", total=total, rate="", eta="", failed="")
            self._progress.start()

    def started(self, info) -> None:
        """The cluster is up: say where, and the dashboard."""
        self.t_start = time.perf_counter()
        threads = f" x {info.threads_per_worker} thread{'s' if info.threads_per_worker != 1 else ''}" \
            if info.threads_per_worker else ""
        numba = f", {info.numba_threads} Numba thread{'s' if info.numba_threads != 1 else ''} per stack" \
            if info.numba_threads else ""
        dashboard = f"; dashboard {info.dashboard}" if info.dashboard else ""
        self._line(f"{info.kind} cluster {info.scheduler}: {info.workers} worker{'s' if info.workers != 1 else ''}"
                   f"{threads}{numba}{dashboard}")

    def __call__(self, record) -> None:
        self.finished += 1
        if record.status == "skipped":
            self.skipped += 1
            self._line(f"skipped {record.name}: up to date (same inputs and options; --redo runs it again)")
        elif record.status == "done":
            self.frames += record.frames or 0
            self._line(f"done    {record.name}: {record.frames} frames, {record.seconds:.1f} s")
        else:
            self.failed += 1
            logger.error("stack %s failed: %s", record.name, record.error)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.finished, **self._fields())

    def _fields(self) -> dict:
        run = self.finished - self.skipped
        if self.t_start is None or run == 0:
            return {"rate": "", "eta": "", "failed": f"{self.failed} failed" if self.failed else ""}
        elapsed = time.perf_counter() - self.t_start
        eta = elapsed / run * (self.total - self.finished)
        return {"rate": f"{self.frames / elapsed:.1f} frames/s", "eta": f"ETA {_fmt_time(eta)}",
                "failed": f"{self.failed} failed" if self.failed else ""}

    def _line(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        elif self.verbose:
            logger.info("%s", text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def print_summary(records: list, stream, *, report=None) -> None:
    """The table of a batch (stack, frames, MP, seconds, status or error) on ``stream``, and a count line."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=stream, width=None if stream.isatty() else 160, highlight=False)
    table = Table(box=None, pad_edge=False)
    for column, justify in (("stack", "left"), ("frames", "right"), ("MP", "right"), ("seconds", "right"),
                            ("status", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for r in records:
        status = r.status if r.ok else f"{r.status}: {r.error}"
        table.add_row(r.name, _cell(r.frames), _cell(r.megapixels, ".1f"), _cell(r.seconds, ".1f"), status,
                      style=None if r.ok else "red")
    console.print(table)
    counts = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    line = ", ".join(f"{n} {status}" for status, n in counts.items())
    console.print(f"{len(records)} stacks: {line}" + (f"; report {report}" if report else ""))


def _cell(value, fmt: str = "d") -> str:
    return "" if value is None else format(value, fmt)
