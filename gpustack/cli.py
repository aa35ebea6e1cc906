"""The ``gpustack`` command: argument parsing, logging set-up and progress display only.

Every option maps one to one onto a ``StackOptions`` field; the choices come
from the registries in ``gpustack.options``. The command holds no algorithm.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time

from ._version import __version__
from .errors import GpustackError, InputError
from .options import ALIGN_MODELS, BACKENDS, BITS, COLORS, DEMOSAIC, METHODS, ORDERS, RAW_DEVELOP, StackOptions

logger = logging.getLogger("gpustack")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpustack", description="Focus stacking on the GPU (CuPy) or CPU (Numba).")
    parser.add_argument("--version", action="version", version=f"gpustack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    d = StackOptions()
    p = sub.add_parser("stack", help="fuse a focus stack into one sharp image and a depth map",
                       description="Fuse FRAMES (files, folders or globs, in shot order) into one image sharp "
                                   "front to back.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("frames", nargs="+", metavar="FRAMES", help="frame files, folders of frames, or glob patterns")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", required=True, metavar="OUT",
                     help="fused image: .tif/.tiff (16-bit), .png (16-bit) or .jpg (8-bit)")
    out.add_argument("--depth-map", metavar="FILE", default=None,
                     help="also write the depth map, float32 TIFF (frame index, or microns with --z-step)")
    out.add_argument("--bits", type=int, choices=BITS, default=None, help="sample depth of the fused image "
                     "(default: 16 for TIFF and PNG, 8 for JPEG)")
    out.add_argument("--linear", action="store_true", help="frames are linear light and the output stays linear "
                     "(no sRGB curve removed on reading or applied on writing)")
    out.add_argument("--z-step", type=float, default=None, metavar="MICRONS",
                     help="distance between frames; the depth map is then in microns")
    out.add_argument("--no-sidecar", dest="sidecar", action="store_false",
                     help="do not write OUT.json (options, versions, per-frame information, timings)")
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    align = p.add_argument_group("alignment")
    align.add_argument("--align", choices=list(ALIGN_MODELS), default=d.align,
                       help="; ".join(f"{k}: {v}" for k, v in ALIGN_MODELS.items()))
    align.add_argument("--reference", type=int, default=None, metavar="N",
                       help="frame (0-based, in shot order) whose geometry the output keeps (default: the middle one)")
    align.add_argument("--no-brightness", dest="brightness", action="store_false",
                       help="do not match the frames' brightness to the reference")
    align.add_argument("--no-crop", dest="crop", action="store_false",
                       help="keep the reference canvas; pixels not covered by every frame get confidence 0")
    raw = p.add_argument_group("camera RAW")
    raw.add_argument("--raw-develop", choices=list(RAW_DEVELOP), default=d.raw_develop,
                     help="; ".join(f"{k}: {v}" for k, v in RAW_DEVELOP.items()))
    raw.add_argument("--demosaic", choices=list(DEMOSAIC), default=d.demosaic,
                     help="; ".join(f"{k}: {v}" for k, v in DEMOSAIC.items()))
    raw.add_argument("--color", choices=list(COLORS), default=d.color,
                     help="; ".join(f"{k}: {v}" for k, v in COLORS.items()))
    merge = p.add_argument_group("merge")
    merge.add_argument("--method", choices=list(METHODS), default=d.method,
                       help="; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    merge.add_argument("--order", choices=list(ORDERS), default=d.order,
                       help="; ".join(f"{k}: {v}" for k, v in ORDERS.items()))
    merge.add_argument("--levels", type=int, default=None, help="pyramid levels (default: automatic)")
    merge.add_argument("--energy-radius", type=int, default=d.energy_radius,
                       help="radius of the local-energy window of the focus measure")
    depth = p.add_argument_group("depth map")
    depth.add_argument("--depth-radius", type=int, default=d.depth_radius,
                       help="radius of the focus-score window of the depth map")
    depth.add_argument("--depth-smooth", type=int, default=d.depth_smooth,
                       help="radius of the confidence-weighted depth smoothing (0: none)")
    depth.add_argument("--contrast-threshold", type=float, default=d.contrast_threshold,
                       help="depthmap method: below this confidence (0-1) the pyramid result is used")
    perf = p.add_argument_group("performance")
    perf.add_argument("--backend", choices=BACKENDS, default=d.backend,
                      help="auto picks cuda when CuPy finds a device, else cpu")
    perf.add_argument("--workers", type=int, default=d.workers, help="frame-reading threads")
    perf.add_argument("--queue-size", type=int, default=d.queue_size, help="decoded frames waiting for the fusion at most (memory bound)")
    info = p.add_argument_group("information")
    info.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv: per frame)")
    info.add_argument("-q", "--quiet", action="count", default=0, help="fewer messages, no progress bar")
    return parser


def _configure_logging(verbosity: int) -> None:
    level = max(10, 30 - 10 * verbosity)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("gpustack: %(levelname)s: %(message)s" if level > 10
                                           else "gpustack: %(levelname)s: %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    logging.captureWarnings(True)
    pylog = logging.getLogger("py.warnings")
    pylog.handlers[:] = [handler]
    pylog.propagate = False


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


#: Set in the child process that does the work under the supervisor (its value: the fd of the decode log).
CHILD_ENV = "GPUSTACK_DECODE_LOG_FD"
#: ``0`` runs ``stack`` in this process, without a supervising parent (tests, debuggers, profilers).
SUPERVISE_ENV = "GPUSTACK_SUPERVISE"


def main(argv=None) -> int:
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if CHILD_ENV in os.environ:
        from .io.frames import set_decode_log

        set_decode_log(int(os.environ[CHILD_ENV]))
    elif os.environ.get(SUPERVISE_ENV, "1") != "0":
        return _supervise(argv, args)
    return _stack(args)


def _supervise(argv, args) -> int:
    """Run ``gpustack stack`` in a child process and wait for it. A decoder (LibRaw, a codec) that
    crashes takes only the child down; the child logs which files it is decoding to a pipe, so the
    parent can name them, remove any temporary output, and exit 1 with one line."""
    import json
    import signal
    import subprocess
    import threading

    from .io.write import remove_temporaries, sidecar_path

    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **{CHILD_ENV: str(write_fd)})
    in_flight: dict[str, int] = {}

    def follow():
        with os.fdopen(read_fd, "rb") as pipe:
            for line in pipe:
                try:
                    event, path = json.loads(line)
                except ValueError:
                    continue
                in_flight[path] = in_flight.get(path, 0) + (1 if event == "start" else -1)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    child = None
    terminated = []

    def on_term(signum, frame):  # a kill of the parent stops the child too, and cleans up after it
        terminated.append(signum)
        if child is not None and child.poll() is None:
            child.terminate()

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the child, which stops cleanly
    previous_term = signal.signal(signal.SIGTERM, on_term)
    try:
        child = subprocess.Popen([sys.executable, "-m", "gpustack", *argv], env=env, pass_fds=(write_fd,))
        os.close(write_fd)
        if terminated:
            child.terminate()
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    reader.join(timeout=5)
    if terminated or code < 0:  # the child was killed: it may have left temporary files
        for out in (args.output, args.depth_map, sidecar_path(args.output) if args.sidecar else None):
            if out is not None:
                remove_temporaries(out)
    if terminated:
        print("gpustack: terminated; no partial output was left", file=sys.stderr)
        return 128 + signal.SIGTERM
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


def _stack(args) -> int:
    verbosity = args.verbose - args.quiet
    _configure_logging(verbosity)
    progress = None
    if args.quiet == 0 and sys.stderr.isatty():
        progress = ProgressBar(sys.stderr)
    elif args.verbose > 0:
        progress = ProgressLog()
    opts = {f.name: getattr(args, f.name) for f in dataclasses.fields(StackOptions)}  # every option has a flag
    try:
        from .pipeline import run

        result = run(args.frames, StackOptions(**opts), progress=progress)
    except GpustackError as exc:
        if progress is not None:
            progress.close()
        print(f"gpustack: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
        print("gpustack: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        if progress is not None:
            progress.close()
        print("gpustack: error: out of memory; lower --workers/--queue-size or use smaller frames", file=sys.stderr)
        return 1
    if progress is not None:
        progress.close()
    t = result.timings
    logger.info("wrote %s (%d frames, %s, %.2f s, %.1f MP-frames/s)", result.outputs.get("image"),
                len(result.frames), result.backend, t["total_s"], t["mp_frames_per_s"])
    return 0
