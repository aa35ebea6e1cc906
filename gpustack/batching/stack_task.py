"""One stack of a batch, as a Dask task runs it on a worker; and whether its outputs are up to date.

The task gets paths and options (a few hundred bytes), reads the frames and writes the outputs
itself through the one ``gpustack.stack`` path (``gpustack.pipeline.run``: the same bytes as
``gpustack stack``, published all together or not at all) and returns a :class:`StackRecord`.
Any error of the stack becomes the record's one-line ``error``: one bad stack never stops a batch.

A worker process that dies (a decoder's segmentation fault, the kernel's OOM killer, the nanny's
memory limit) cannot report anything; Dask then runs the task again elsewhere. Each start is
appended to a small file under the output folder (``.gpustack-batch/``, on the shared file system,
so this works on any scheduler whatever its ``allowed-failures``): a third start is refused with
a record that says the worker died twice. So a stack is retried at most once.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import GpustackError
from ..io.frames import _expand, file_stats

#: Starts of one stack in one batch run: the first, and one retry after its worker died.
MAX_STARTS = 2
#: Options that do not change the outputs' bytes (the backends agree bit for bit), or name them:
#: a stack made with other values of these is still up to date.
NOT_IN_RESUME_KEY = frozenset({"output", "depth_map", "height_map", "confidence_map", "maps", "overwrite", "sidecar",
                               "workers", "queue_size", "backend"})


@dataclass
class StackRecord:
    """What became of one stack of a batch (a row of the summary and of ``batch.json``).

    Attributes
    ----------
    name : str
        The outputs' path relative to the output folder, without extension.
    inputs : list of str
    status : {"done", "skipped", "failed", "interrupted"}
        ``skipped``: its outputs were up to date; ``interrupted``: the batch stopped before it
        finished (a rerun does it).
    frames : int or None
        Frames fused (all stacks of the file together for a file with several time points).
    megapixels : float or None
        Size of the fused image.
    seconds : float or None
        Wall time of the stack on its worker (for ``skipped``: of the run that made it).
    error : str or None
        The one-line error of a failed stack.
    outputs : dict
        The files written (or found up to date).
    position : int or None
    attempts : int
        Times a worker started it in this run (2: its first worker died).
    worker : str or None
        ``host:pid`` of the worker that ran it.
    backend : str or None
    warnings : list of str
        Warnings of the run (a frame that aligned poorly...).
    """

    name: str
    inputs: list
    status: str
    frames: int | None = None
    megapixels: float | None = None
    seconds: float | None = None
    error: str | None = None
    outputs: dict = field(default_factory=dict)
    position: int | None = None
    attempts: int = 0
    worker: str | None = None
    backend: str | None = None
    warnings: list = field(default_factory=list)

    @classmethod
    def of(cls, job, status: str, paths: dict | None = None, **fields) -> "StackRecord":
        """The record of ``job`` (a StackJob) with ``status``; ``paths``, its output files, as strings."""
        return cls(job.name, list(job.inputs), status, position=job.position,
                   outputs={} if paths is None else {k: str(v) for k, v in paths.items()}, **fields)

    @property
    def ok(self) -> bool:
        """Done or up to date."""
        return self.status in ("done", "skipped")

    def to_dict(self) -> dict:
        return asdict(self)


def resume_key(options: dict) -> dict:
    """The options that decide a stack's output bytes, JSON-normalised (as a sidecar holds them)."""
    return json.loads(json.dumps({k: v for k, v in options.items() if k not in NOT_IN_RESUME_KEY}, default=str))


def input_key(stats: list) -> list:
    """Names, sizes and modification times of the input files, in a fixed order."""
    return sorted((Path(s["path"]).name, s["size"], s["mtime_ns"]) for s in stats)


def up_to_date(job, paths: dict, options: dict) -> dict | None:
    """The sidecar of ``job``'s last run when every output exists and it was made from the same
    inputs (names, sizes, modification times) with the same options; else None."""
    if not all(Path(p).is_file() for p in paths.values()):
        return None
    try:
        sidecar = json.loads(Path(paths["sidecar"]).read_text(encoding="utf-8"))
        if resume_key(sidecar["options"]) != resume_key(options):
            return None
        files = [p for item in job.inputs for p in _expand(item)]
    except (OSError, ValueError, KeyError, TypeError, GpustackError):
        return None
    if input_key(sidecar.get("inputs") or []) != input_key(file_stats(files)):
        return None
    return sidecar


def record_from_sidecar(job, paths: dict, sidecar: dict) -> StackRecord:
    """The record of a stack found up to date, from its sidecar."""
    shape = sidecar.get("image", {}).get("shape") or [0, 0]
    stacks = sidecar.get("stacks") or [{"frames": len(sidecar.get("frames", []))}]
    return StackRecord.of(job, "skipped", paths, frames=sum(s["frames"] for s in stacks),
                          megapixels=round(shape[0] * shape[1] / 1e6, 3),
                          seconds=sidecar.get("timings", {}).get("total_s"), backend=sidecar.get("backend"))


def run_stack(job, spec: dict) -> StackRecord:
    """Stack ``job`` on this worker (a Dask task).

    ``spec``: ``options`` (StackOptions fields but the output paths), ``paths`` (the outputs, from
    :func:`gpustack.batching.discover.output_paths`), ``overwrite``, ``starts`` (the file counting
    this stack's starts), ``since`` (when the batch began, ISO 8601 UTC, as sidecars say ``created``)
    and ``numba_threads`` (None: the worker's cores shared by its threads).
    """
    from ..io.write import remove_temporaries
    from ..options import StackOptions
    from ..pipeline import run

    worker = f"{socket.gethostname()}:{os.getpid()}"
    record = StackRecord.of(job, "failed", spec["paths"], worker=worker)
    record.attempts = _count_start(Path(spec["starts"]), worker)
    for path in spec["paths"].values():  # left by a worker that died while writing
        remove_temporaries(path)
    overwrite = spec["overwrite"]
    if record.attempts > 1:  # Dask runs it again: its worker died while running it, or after (the result is lost)
        sidecar = up_to_date(job, spec["paths"], spec["options"])
        if sidecar is not None and sidecar.get("created", "") >= spec["since"]:  # made in this run
            done = record_from_sidecar(job, spec["paths"], sidecar)
            done.status, done.attempts, done.worker = "done", record.attempts, worker
            return done
        overwrite = True  # what a dead attempt may have published is this run's own
    if record.attempts > MAX_STARTS:
        record.attempts = MAX_STARTS
        record.error = (f"the worker stacking it died {MAX_STARTS} times (killed, out of memory, or a crash in a "
                        f"decoder: a corrupt frame?); run 'gpustack stack' on {job.inputs[0]} to see which frame")
        return record
    _set_numba_threads(spec.get("numba_threads"))
    environment = _worker_environment()
    paths = spec["paths"]
    t0 = time.perf_counter()
    try:
        maps = {name: paths.get(name) for name in ("depth_map", "height_map", "confidence_map")}
        options = StackOptions(**{**spec["options"], **maps, "maps": any(p is not None for p in maps.values())},
                               output=paths["image"], overwrite=overwrite, sidecar=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run(list(job.inputs), options)
    except GpustackError as exc:
        record.error = str(exc)
    except MemoryError:
        record.error = "out of memory; run fewer workers (--n-workers) or lower --workers/--queue-size"
    except Exception as exc:  # a bug must not stop the other stacks; it is reported with its type
        record.error = (f"unexpected {type(exc).__name__}: {exc}; run 'gpustack stack -vv' on {job.inputs[0]} and "
                        f"report it")
    else:
        h, w = result.image.shape[:2]
        record.status = "done"
        record.frames = sum(len(r.frames) for r in (result.stacks or [result]))
        record.megapixels = round(h * w / 1e6, 3)
        record.backend = result.backend
        notes = [str(c.message) for c in caught] + ([environment] if environment else [])
        record.warnings = list(dict.fromkeys(notes))
    record.seconds = round(time.perf_counter() - t0, 3)
    return record


def _count_start(path: Path, worker: str) -> int:
    """Append this start to ``path`` and return how many starts it now lists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        f.write(worker + "\n")
        f.flush()
        f.seek(0)
        return sum(1 for line in f if line.strip())


def _worker_environment() -> str | None:
    """A warning when the worker's environment (Dask's nanny sets the variable) slows the stacks.
    (Its ``OMP_NUM_THREADS=1`` does not: the kernels run on gpustack's own threads.)"""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return None
    return ("this worker's environment slows stacking: MALLOC_TRIM_THRESHOLD_ makes every large array a fresh mmap, "
            "1.2-1.7x slower (start the workers with DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_"
            "=None)")


def _set_numba_threads(n: int | None) -> None:
    """The kernels' threads for this task (``_threads.limit_threads``): ``n``, or the machine's cores
    shared by the worker's threads (unless NUMBA_NUM_THREADS was set for the worker)."""
    import numba

    from ..backends.cpu._threads import limit_threads

    if n is None:
        if "NUMBA_NUM_THREADS" in os.environ:
            return
        try:
            from distributed import get_worker

            share = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            share = 1
        n = (os.cpu_count() or 1) // max(1, share)
    limit_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))  # every thread of this worker
