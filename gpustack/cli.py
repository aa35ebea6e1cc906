"""The ``gpustack`` command: argument parsing, and the exit status of each outcome.

Every option maps one to one onto a ``StackOptions`` field; the choices come
from the registries in ``gpustack.options``. The command holds no algorithm;
what it shows is set up in ``gpustack.console``, its child process and signals
are handled in ``gpustack.supervise``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys

from . import supervise
from ._version import __version__
from .console import BatchProgress, ProgressBar, ProgressLog, configure_logging, print_summary, quiet_native_stderr
from .errors import GpustackError, InputError
from .options import (ALIGN_MODELS, BACKENDS, BATCH_FORMATS, BITS, COLORS, DEMOSAIC, DISCOVERY, METHODS, ORDERS,
                      RAW_DEVELOP, StackOptions, sidecar_path)

logger = logging.getLogger("gpustack")


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage mistake told in one line (and where the rest is) instead of the
    whole usage block."""

    def error(self, message):
        self.exit(2, f"gpustack: error: {message}; see '{self.prog} --help'\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gpustack", description="Focus stacking on the GPU (CuPy) or CPU (Numba).")
    parser.add_argument("--version", action="version", version=f"gpustack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("stack", help="fuse a focus stack into one sharp image and a depth map",
                       description="Fuse FRAMES (files, folders or globs, in shot order) into one image sharp "
                                   "front to back.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("frames", nargs="+", metavar="FRAMES", help="frame files, folders of frames, or glob patterns")
    _add_stack_options(p, batch=False)
    b = sub.add_parser("batch", help="fuse many stacks (a folder of stack folders, stack files, a list) on Dask",
                       description="Fuse every stack under ROOT (each subfolder that holds frames, or with --stacks "
                                   "files each z-stack file) into OUTDIR/<relative path>.tif with its sidecar, on a "
                                   "local Dask cluster or an existing one. Stacks already done with the same inputs "
                                   "and options are skipped; a failing stack does not stop the others.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("roots", nargs="*", metavar="ROOT", help="folders of stacks, or stack files")
    run = b.add_argument_group("batch")
    run.add_argument("--stacks", choices=list(DISCOVERY), default="subfolders",
                     help="; ".join(f"{k}: {v}" for k, v in DISCOVERY.items()))
    run.add_argument("--list", metavar="CSV", default=None,
                     help="stacks from a CSV file instead, one per row: inputs[,name] (inputs: a folder, files or "
                          "globs separated by ';', relative to the CSV; name: the output path under OUTDIR)")
    run.add_argument("--scheduler", metavar="ADDRESS|FILE", default=None,
                     help="run on an existing Dask cluster: its scheduler's address (tcp://host:8786) or scheduler "
                          "file (default: a local cluster)")
    run.add_argument("--n-workers", type=int, default=None, metavar="N",
                     help="workers of the local cluster (default: one per core, at most one per 2 GiB of memory; "
                          "dask-cuda: one per GPU)")
    run.add_argument("--redo", action="store_true", help="run every stack, even those whose outputs are up to date")
    _add_stack_options(b, batch=True)
    return parser


def _add_stack_options(p, *, batch: bool) -> None:
    """The options of one stack, shared by ``stack`` and ``batch``: in a batch the outputs are named
    after each stack (``-o`` is the output folder, the maps are switches) and ``--redo`` replaces
    ``--overwrite``."""
    d = StackOptions()
    out = p.add_argument_group("output")
    if batch:
        out.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                         help="where OUTDIR/<stack>.tif, its sidecar <stack>.tif.json, the maps and batch.json go")
        out.add_argument("--format", choices=list(BATCH_FORMATS), default=None,
                         help="format of the fused images (default: .ome.tif for microscopy inputs, else .tif)")
        out.add_argument("--depth-map", action="store_true",
                         help="also write <stack>.depth.tif, float32 (frame index, or microns with --z-step)")
    else:
        out.add_argument("-o", "--output", required=True, metavar="OUT",
                         help="fused image: .tif/.tiff (16-bit), .png (16-bit), .jpg (8-bit) or .ome.tif (OME-TIFF: "
                              "channel names, pixel size, the input's sample type)")
        out.add_argument("--depth-map", metavar="FILE", default=None,
                         help="also write the depth map, float32 TIFF (frame index, or microns with --z-step)")
    out.add_argument("--bits", type=int, choices=BITS, default=None, help="sample depth of the fused image "
                     "(default: 16 for TIFF and PNG, 8 for JPEG)")
    out.add_argument("--linear", action="store_true", help="frames are linear light and the output stays linear "
                     "(no sRGB curve removed on reading or applied on writing)")
    out.add_argument("--z-step", default=None, metavar="LENGTH",
                     help="distance between frames: microns, or with a unit (2.5um, 500nm); the depth map is then "
                          "in microns; overrides a microscopy file's z-step")
    if not batch:  # a batch always writes the sidecars: they say which stacks are done
        out.add_argument("--no-sidecar", dest="sidecar", action="store_false",
                         help="do not write OUT.json (options, versions, per-frame information, timings)")
        out.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    micro = p.add_argument_group("microscopy")
    micro.add_argument("--pixel-size", default=None, metavar="LENGTH",
                       help="pixel size (X and Y), microns or with a unit (0.65um); overrides the file's")
    micro.add_argument("--time", type=int, default=None, metavar="N",
                       help="a file with a T axis: fuse time point N only; without it each time point is a stack "
                            "(outputs with a T axis)")
    micro.add_argument("--position", type=int, default=None, metavar="N",
                       help="a file with several stage positions: fuse position N only; without it each one")
    micro.add_argument("--focus-channel", default=None, metavar="NAME|INDEX",
                       help="judge focus on this channel; every channel is taken from the same planes "
                            "(without it: all channels' focus energies summed)")
    micro.add_argument("--per-channel", action="store_true",
                       help="fuse each channel by its own focus, with a depth/height map per channel")
    if batch:
        micro.add_argument("--height-map", action="store_true",
                           help="also write <stack>.height.tif: float32 microns above the first plane, NaN where "
                                "the confidence is below --confidence-threshold")
        micro.add_argument("--confidence-map", action="store_true",
                           help="also write <stack>.confidence.tif (float32, 0 to 1)")
    else:
        micro.add_argument("--height-map", metavar="FILE", default=None,
                           help="write the height map: float32 microns above the first plane (.ome.tif: calibrated "
                                "OME-TIFF), NaN where the confidence is below --confidence-threshold")
        micro.add_argument("--confidence-map", metavar="FILE", default=None,
                           help="write the confidence map (float32, 0 to 1)")
    micro.add_argument("--confidence-threshold", type=float, default=d.confidence_threshold, metavar="T",
                       help="below this confidence (0-1) the height map is NaN")
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


#: BLAS threads in the command's processes (unless the user's environment says otherwise). The command
#: does no BLAS work worth a thread (the alignment's systems have a handful of unknowns; the kernels
#: are ours), but OpenBLAS, as NumPy's and SciPy's wheels bring it, starts a thread per core when each
#: loads it, and each spins for a while waiting for work: 0.3-0.4 CPU s of the README's example (4.7
#: against 5.0 CPU s on 2 cores), taken from the frames and, on a first run, from the compiling.
BLAS_THREADS = {"OPENBLAS_NUM_THREADS": "1"}


def _blas_threads() -> None:
    """Set ``BLAS_THREADS`` where the environment does not: before NumPy is imported (this module
    does not import it), and inherited by the supervised child and the batch's worker processes."""
    for name, value in BLAS_THREADS.items():
        os.environ.setdefault(name, value)


def main(argv=None) -> int:
    _blas_threads()
    parser = _build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "batch":  # the stacks run in Dask's worker processes, which watch over them
        return _batch(args)
    if supervise.CHILD_ENV in os.environ:
        supervise.attach()
        supervise.finish(_stack(args))
    elif supervise.wanted():
        outputs = [args.output, args.depth_map, args.height_map, args.confidence_map,
                   sidecar_path(args.output) if args.sidecar else None]
        return supervise.run_child(argv, outputs)
    return _stack(args)


def _stack(args) -> int:
    with quiet_native_stderr():
        configure_logging(args.verbose - args.quiet)
        progress = None
        if args.quiet == 0 and sys.stderr.isatty():
            progress = ProgressBar(sys.stderr)
        elif args.verbose > 0:
            progress = ProgressLog()
        opts = {f.name: getattr(args, f.name) for f in dataclasses.fields(StackOptions) if f.name != "maps"}  # flags
        opts["maps"] = any(path is not None for path in (args.depth_map, args.height_map, args.confidence_map))
        received: list[int] = []
        try:
            with supervise.stoppable(received):
                from .pipeline import run

                result = run(args.frames, StackOptions(**opts), progress=progress)
        except GpustackError as exc:
            message, code = f"gpustack: error: {exc}", 2 if isinstance(exc, InputError) else 1
        except KeyboardInterrupt:
            signum = received[0] if received else signal.SIGINT
            message, code = supervise.stopped_line(signum), 128 + signum
        except MemoryError:
            message, code = "gpustack: error: out of memory; lower --workers/--queue-size or use smaller frames", 1
        else:
            message, code = None, 0
        if progress is not None:
            progress.close()
        if message is not None:
            print(message, file=sys.stderr)
            return code
        t = result.timings
        logger.info("wrote %s (%d frames, %s, %.2f s, %.1f MP-frames/s)", result.outputs.get("image"),
                    len(result.frames), result.backend, t["total_s"], t["mp_frames_per_s"])
        return 0


def _batch(args) -> int:
    """``gpustack batch``: the stacks, the batch run, its display; exit 1 if any stack failed."""
    configure_logging(args.verbose - args.quiet)
    opts = {f.name: getattr(args, f.name) for f in dataclasses.fields(StackOptions) if hasattr(args, f.name)}
    received: list[int] = []
    display = run = None
    try:
        with supervise.stoppable(received):
            from .batching import Batch, jobs_of, read_list

            if bool(args.list) == bool(args.roots):
                raise InputError("give the ROOT folders of the stacks or --list CSV (one of them)")
            jobs = read_list(args.list) if args.list else jobs_of(
                args.roots, stacks_from=args.stacks, exclude=[args.output_dir], split_positions=args.position is None)
            run = Batch(jobs, args.output_dir, scheduler=args.scheduler, n_workers=args.n_workers, redo=args.redo,
                        format=args.format, **opts)
            display = BatchProgress(sys.stderr, len(jobs), live=args.quiet == 0 and sys.stderr.isatty(),
                                    verbose=args.verbose > 0)
            run.on_cluster = display.started
            with run:
                for record in run.run():
                    display(record)
    except GpustackError as exc:
        message, code = f"gpustack: error: {exc}", 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        signum = received[0] if received else signal.SIGINT
        message = (f"gpustack: {supervise.STOP_SIGNALS.get(signum, 'stopped')}; the stacks that finished are kept, "
                   f"none is half-written: run the same command again to do the rest")
        code = 128 + signum
    else:
        message, code = None, 0
    if display is not None:
        display.close()
    if run is not None and run.started is not None:
        records = [run.records[j.name] for j in run.jobs if j.name in run.records]
        if records and args.quiet < 2:
            print_summary(records, sys.stdout, report=run.output_dir / "batch.json")
        if code == 0 and any(not r.ok for r in records):
            code = 1
    if message is not None:
        print(message, file=sys.stderr)
    return code
