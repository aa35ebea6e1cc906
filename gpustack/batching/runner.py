"""The orchestration of a batch: which stacks are up to date, submitting the rest to Dask, collecting
their records as they finish, and ``batch.json``.

Only paths, options and records travel through the scheduler: workers read the frames and write the
outputs themselves (``gpustack.batching.stack_task``). Nothing here prints: the command shows the
records it is given (``gpustack.console``).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import platform
import secrets
import shutil
import time
from pathlib import Path

from .._version import __version__
from ..errors import InputError, OutputError
from ..io.write import remove_temporaries, write_sidecar
from ..options import StackOptions
from . import cluster as _cluster
from .discover import FORMATS, StackJob, output_paths
from .stack_task import StackRecord, record_from_sidecar, run_stack, up_to_date

logger = logging.getLogger(__name__)

#: The batch's own files in the output folder: the lock and each run's start counts.
STATE_DIR = ".gpustack-batch"
REPORT = "batch.json"
#: Per-stack files: the batch names them itself.
_PER_STACK = ("output", "depth_map", "height_map", "confidence_map", "overwrite", "sidecar")
_MAPS = ("depth_map", "height_map", "confidence_map")


class Batch:
    """One batch run: ``with Batch(...) as b: for record in b.run(): ...``.

    Entering locks the output folder and starts (or connects to) the cluster; leaving stops what is
    still running (a stack whose worker is stopped leaves no file behind), closes a cluster it
    started and writes ``batch.json`` with every stack's record.
    """

    def __init__(self, jobs: list[StackJob], output_dir, *, client=None, scheduler=None, n_workers=None,
                 redo: bool = False, format: str | None = None, **options):
        if not jobs:
            raise InputError("no stacks to run")
        for key in _PER_STACK:
            if key in options and key not in _MAPS:
                raise InputError(f"{key} is chosen per stack by the batch (the outputs are named after each stack "
                                 f"under the output folder; --redo replaces them); omit it")
        if "maps" in options:
            raise InputError("maps is set per stack by the batch, from depth_map, height_map and confidence_map; "
                             "omit it")
        self.maps = {k: bool(options.pop(k, False)) for k in _MAPS}
        for key, value in self.maps.items():
            if value is not True and value is not False:
                raise InputError(f"{key} in a batch is True or False (written as <name>.{key.split('_')[0]}.tif "
                                 f"beside each output); got {value!r}")
        self.options = StackOptions(**options).to_dict()  # every option checked before any stack runs
        for key in (*_PER_STACK, "maps"):
            self.options.pop(key)
        if format is not None and format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
        self.format = format
        self.jobs = jobs
        self.output_dir = Path(output_dir).absolute()
        self.redo = redo
        self._client, self._scheduler, self._n_workers = client, scheduler, n_workers
        if client is not None and (scheduler is not None or n_workers is not None):
            raise InputError("give either a client, or a scheduler address, or a number of local workers")
        if scheduler is not None and n_workers is not None:
            raise InputError("n_workers sizes the local cluster; an existing cluster's workers are started with it "
                             "(dask worker --nworkers, dask-jobqueue's scale()); omit --n-workers")
        if n_workers is not None:
            _cluster.local_size(n_workers)  # a bad number is told now
        self.client = self.cluster = self.info = None
        self.records: dict[str, StackRecord] = {}
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.started = self.finished = None
        self._pending: dict = {}
        self._lock = None
        #: called with the ClusterInfo once the cluster is up (it is started only if a stack needs running)
        self.on_cluster = None

    # ------------------------------------------------------------------ set-up and tear-down

    def __enter__(self) -> "Batch":
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self._t0 = time.perf_counter()
        if self._client is None:
            _cluster.require_distributed()
        self._prepare_output_dir()
        return self

    def _start_cluster(self) -> None:
        if self._client is not None:
            self.client = self._client
            self.info = _cluster.describe(self.client, "client")
        else:
            self.client, self.cluster, self.info = _cluster.start(
                scheduler=self._scheduler, n_workers=self._n_workers, backend=self.options["backend"])
        if self.on_cluster is not None:
            self.on_cluster(self.info)

    def __exit__(self, *exc) -> None:
        try:
            self._stop()
        finally:
            try:
                self.write_report()
            finally:
                self._unlock()

    def _prepare_output_dir(self) -> None:
        out = self.output_dir
        try:
            out.mkdir(parents=True, exist_ok=True)
            state = out / STATE_DIR
            state.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create the output folder {out}: {exc.strerror or exc}; check its parent's "
                              f"permissions or choose another folder") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise OutputError(f"output folder {out} is not writable; check its permissions or choose another folder")
        self._lock = _lock(state / "lock", out)

    def _unlock(self) -> None:
        shutil.rmtree(self.output_dir / STATE_DIR / self.run_id, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def _stop(self) -> None:
        """Cancel what has not finished; a cluster of our own is closed (its workers stopped) and the
        temporaries its stopped stacks left are deleted."""
        pending, self._pending = self._pending, {}
        if pending and self.client is not None:
            try:
                self.client.cancel(list(pending))
            except Exception:  # a scheduler already gone
                pass
        if self.cluster is not None:
            try:
                self.client.close()
            finally:
                self.cluster.close()
            for _, paths in pending.values():  # its workers are gone: nothing is writing these any more
                for path in paths.values():
                    remove_temporaries(path)
        elif self.client is not None and self._client is None:
            self.client.close()
        since = self.started.isoformat(timespec="seconds") if self.started else ""
        for job, paths in pending.values():
            sidecar = up_to_date(job, paths, self._options_of(job))
            if sidecar is not None and sidecar.get("created", "") >= since:  # finished as the batch stopped
                record = record_from_sidecar(job, paths, sidecar)
                record.status = "done"
            else:
                record = StackRecord.of(job, "interrupted", paths,
                                        error="the batch stopped before it finished; run it again")
            self.records[job.name] = record

    # ------------------------------------------------------------------ the run

    def _options_of(self, job: StackJob) -> dict:
        return self.options if job.position is None else {**self.options, "position": job.position}

    def run(self):
        """Yield each stack's :class:`StackRecord`: first those found up to date, then the others as
        they finish."""
        from distributed import as_completed

        specs = []
        for job in self.jobs:
            paths = output_paths(job, self.output_dir, self.format, self.maps)
            options = self._options_of(job)
            sidecar = None if self.redo else up_to_date(job, paths, options)
            if sidecar is not None:
                record = self.records[job.name] = record_from_sidecar(job, paths, sidecar)
                yield record
                continue
            paths["image"].parent.mkdir(parents=True, exist_ok=True)
            specs.append((job, paths, {
                "options": options,
                "paths": {k: str(v) for k, v in paths.items()},
                "overwrite": self.redo or any(p.exists() for p in paths.values()),
                "starts": str(self.output_dir / STATE_DIR / self.run_id / _digest(job.name)),
                "since": self.started.isoformat(timespec="seconds"),
            }))
        if not specs:
            return
        self._start_cluster()
        for job, paths, spec in specs:
            spec["numba_threads"] = self.info.numba_threads
            future = self.client.submit(run_stack, job, spec, key=f"gpustack-stack-{_digest(job.name)}-{self.run_id}",
                                        pure=False, retries=0)
            self._pending[future] = (job, paths)
        for future in as_completed(list(self._pending), loop=self.client.loop):
            job, paths = self._pending[future]
            record = self.records[job.name] = _result(future, job, paths)
            del self._pending[future]  # only now: a stop before this line finds the stack in one of the two
            yield record

    # ------------------------------------------------------------------ the report

    @property
    def counts(self) -> dict:
        counts = {"done": 0, "skipped": 0, "failed": 0, "interrupted": 0, "not run": 0}
        for job in self.jobs:
            record = self.records.get(job.name)
            counts[record.status if record else "not run"] += 1
        return counts

    def report(self) -> dict:
        """``batch.json``: the run, the options, the versions, the cluster and every stack's record."""
        import dask
        import distributed

        versions = {"gpustack": __version__, "python": platform.python_version(), "dask": dask.__version__,
                    "distributed": distributed.__version__}
        counts = self.counts
        return {
            "gpustack": __version__,
            "run": self.run_id,
            "started": self.started.isoformat(timespec="seconds") if self.started else None,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - self._t0, 3) if self.started else None,
            "status": "complete" if counts["interrupted"] == counts["not run"] == 0 else "interrupted",
            "counts": counts,
            "output_dir": str(self.output_dir),
            "options": self.options,
            "outputs": {"format": self.format, **self.maps},
            "redo": self.redo,
            "cluster": self.info.to_dict() if self.info else None,
            "versions": versions,
            "stacks": [(self.records.get(j.name) or StackRecord.of(j, "not run")).to_dict() for j in self.jobs],
        }

    def write_report(self) -> Path | None:
        if self.started is None:
            return None
        path = self.output_dir / REPORT
        write_sidecar(path, self.report(), overwrite=True)
        return path


def _result(future, job: StackJob, paths: dict) -> StackRecord:
    """A finished future's record; a task Dask gave up on (its workers died) becomes a failed record."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        error = ("its worker died (killed, out of memory, or a crash in a decoder: a corrupt frame?) as often as the "
                 "scheduler allows (distributed.scheduler.allowed-failures); run 'gpustack stack' on it to see why")
    except Exception as exc:  # e.g. a worker without gpustack installed
        error = f"the task failed on its worker: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return StackRecord.of(job, "failed", paths, error=error)


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()[:16]


def _lock(path: Path, output_dir: Path):
    """An exclusive lock on the output folder for this batch (released when the process ends)."""
    f = open(path, "a+")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return f
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise InputError(f"another gpustack batch is writing to {output_dir}; wait for it to finish or choose "
                         f"another output folder") from None
    return f
