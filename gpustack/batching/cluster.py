"""Where a batch runs: an in-process ``distributed.LocalCluster``, a ``dask_cuda.LocalCUDACluster``, or
any running Dask scheduler (an address or a scheduler file).

How the local cluster is sized (see the README, "Many stacks", for the measurements): one stack
runs per worker process (one Dask thread each), and its Numba kernels get the machine's cores
shared out among the workers, so ``workers x Numba threads = cores``. The reader threads of each
stack (``--workers``) are not counted: they mostly wait on the disk and on decoders that release
the GIL. By default there is one worker per core, with one Numba thread each: a stack's serial
parts (decoding, alignment estimation, encoding the output) then overlap the other stacks' work
instead of leaving cores idle; measured on 2 cores, 2 workers x 1 thread ran 24 stacks 1.2x as fast
as 1 worker x 2 threads. Each worker holds one stack in memory, so there is at most one worker per
:data:`MEMORY_PER_WORKER` of the machine's memory (bigger stacks: ``--n-workers``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import asdict, dataclass

from ..errors import ClusterError, InputError
from ..io.frames import _memory_bytes

logger = logging.getLogger(__name__)

#: Seconds to reach a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10
#: Numba threads per worker of the local cluster (see the module docstring).
THREADS_PER_STACK = 1
#: Memory the default local cluster allows each worker (a 12 MP RGB stack peaks at about 1.5 GB).
MEMORY_PER_WORKER = 2 * 1024**3
INSTALL_HINT = "pip install 'gpustack[batch]'"
#: Preloaded in each local worker process: it ignores the terminal's Ctrl-C (the batch stops it).
WORKER_SETUP = "gpustack.batching.worker_setup"


@dataclass
class ClusterInfo:
    """What the batch ran on (``batch.json``'s ``cluster``)."""

    kind: str  # "local", "local-cuda" or "external"
    scheduler: str
    dashboard: str | None
    workers: int
    threads_per_worker: int | None
    numba_threads: int | None  # per stack; None: the worker's own choice (external clusters)

    def to_dict(self) -> dict:
        return asdict(self)


def require_distributed():
    """The ``distributed`` module, or ClusterError saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ClusterError(f"gpustack batch needs Dask distributed, which is not installed ({exc.name} is missing); "
                           f"install it with: {INSTALL_HINT}") from None
    return distributed


def cores() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def local_size(n_workers: int | None, n_cores: int | None = None, memory: int | None = None) -> tuple[int, int]:
    """(workers, Numba threads per worker) of the local cluster on ``n_cores`` cores and ``memory``
    bytes (default: this machine's)."""
    n_cores = n_cores or cores()
    if n_workers is None:
        memory = memory or _memory_bytes() or MEMORY_PER_WORKER
        n_workers = max(1, min(n_cores // THREADS_PER_STACK, memory // MEMORY_PER_WORKER))
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise InputError(f"n_workers must be a whole number of at least 1; got {n_workers!r}")
    return n_workers, max(1, n_cores // n_workers)


def start(*, scheduler=None, n_workers: int | None = None, backend: str = "auto"):
    """(client, cluster or None, ClusterInfo): a client of ``scheduler`` (an address such as
    ``tcp://host:8786``, or a scheduler file), else of a new local cluster."""
    distributed = require_distributed()
    if scheduler is not None:
        client = connect(scheduler)
        return client, None, describe(client, "external")
    cluster = _local_cluster(distributed, n_workers, backend)
    try:
        client = distributed.Client(cluster, timeout=f"{CONNECT_TIMEOUT_S}s")
    except BaseException:
        cluster.close()
        raise
    kind = "local-cuda" if type(cluster).__name__ == "LocalCUDACluster" else "local"
    return client, cluster, describe(client, kind, local_size(len(cluster.workers))[1] if kind == "local" else None)


def connect(scheduler):
    """A client of a running scheduler: an address (``tcp://host:8786``, ``host:8786``) or a scheduler
    file (``dask scheduler --scheduler-file``); ClusterError within :data:`CONNECT_TIMEOUT_S` seconds
    when it cannot be reached."""
    distributed = require_distributed()
    text = str(scheduler)
    kwargs = {"timeout": f"{CONNECT_TIMEOUT_S}s", "set_as_default": False}  # a caller's own client stays the default
    if os.path.isfile(text):
        kwargs["scheduler_file"], what = text, f"the scheduler of {text}"
    elif "://" in text or ":" in text:
        kwargs["address"], what = text, f"the Dask scheduler at {text}"
    else:
        raise InputError(f"scheduler {text!r} is neither a scheduler file nor an address such as tcp://host:8786; "
                         f"check it")
    try:
        return distributed.Client(**kwargs)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ClusterError(f"cannot reach {what} within {CONNECT_TIMEOUT_S} s ({reason}); check that it is running "
                           f"and that this machine can reach it, or omit --scheduler for a local cluster") from None


def describe(client, kind: str, numba_threads: int | None = None) -> ClusterInfo:
    """ClusterInfo of a client's cluster as it is now."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sorted({w.get("nthreads") for w in workers.values()})
    return ClusterInfo(kind, client.scheduler.address, client.dashboard_link if _has_dashboard(info, kind) else None,
                       len(workers), threads[0] if len(threads) == 1 else None, numba_threads)


def _local_cluster(distributed, n_workers, backend):
    import dask

    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers; setting it at all turns off
    # glibc's dynamic mmap threshold, so every full-size temporary array is mmapped and its pages
    # faulted in anew: measured on 2 MP stacks, 10x the page faults and 1.2-1.7x the time
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return _new_local_cluster(distributed, n_workers, backend)


def _new_local_cluster(distributed, n_workers, backend):
    if backend == "auto" and importlib.util.find_spec("cupy") is not None:
        from ..backends import cuda_status

        if cuda_status()[0]:  # the workers will pick cuda: size the cluster for the GPUs, not the cores
            backend = "cuda"
    if backend == "cuda":
        try:
            from dask_cuda import LocalCUDACluster  # unverified here: no GPU in CI (see the README)
        except ImportError:
            if n_workers is None:
                logger.warning("dask-cuda is not installed, so one local worker uses the GPU; for one worker per GPU: "
                               "pip install 'gpustack[batch-cuda13]' (or batch-cuda12)")
                n_workers = 1
        else:
            return LocalCUDACluster(n_workers=n_workers, threads_per_worker=1, dashboard_address=":0",
                                    silence_logs=logging.CRITICAL, preload=[WORKER_SETUP])
    workers, threads = local_size(n_workers)
    # each worker's share of the cores for the kernels' threads (and, in place of the nanny's
    # OMP_NUM_THREADS=1, for any OpenMP or BLAS threads a library starts)
    env = {"OMP_NUM_THREADS": str(threads), "NUMBA_NUM_THREADS": str(threads)}
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                    silence_logs=logging.CRITICAL, preload=[WORKER_SETUP], env=env)


def _has_dashboard(info: dict, kind: str) -> bool:
    """Whether the scheduler serves the dashboard (a local one only with bokeh installed)."""
    if kind.startswith("local") and importlib.util.find_spec("bokeh") is None:
        return False
    return "dashboard" in info.get("services", {})
