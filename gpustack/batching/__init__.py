"""Many stacks at once on Dask distributed: ``gpustack.batch`` and ``gpustack batch``.

- :mod:`.discover`: what the stacks are (subfolders, stack files, a CSV list) and their output names.
- :mod:`.cluster`: a local cluster sized to the machine, dask-cuda's, or a running scheduler.
- :mod:`.stack_task`: one stack on a worker, through the one ``gpustack.stack`` path; up-to-date checks.
- :mod:`.runner`: submitting, collecting records, resuming, ``batch.json``.

Dask is an optional dependency (``pip install 'gpustack[batch]'``); importing this package does not
import it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .discover import DISCOVERY, FORMATS, StackJob, check_names, find_stacks, make_job, output_paths, read_list
from .runner import REPORT, Batch
from .stack_task import StackRecord

__all__ = ["DISCOVERY", "FORMATS", "REPORT", "Batch", "StackJob", "StackRecord", "batch", "batch_iter", "find_stacks",
           "jobs_of", "make_job", "output_paths", "read_list"]


def jobs_of(stacks, *, stacks_from: str = "subfolders", exclude=(), split_positions: bool = True) -> list[StackJob]:
    """The :class:`StackJob` list ``stacks`` stands for: a root folder or stack file, a list of them
    (discovered as ``stacks_from`` says), a ``.csv`` stack list, a ``{name: inputs}`` dict, or
    StackJobs."""
    if isinstance(stacks, dict):
        jobs = [make_job(name, inputs, where="stacks: ") for name, inputs in stacks.items()]
        check_names(jobs)
        return jobs
    if isinstance(stacks, (str, os.PathLike)):
        stacks = [stacks]
    stacks = list(stacks)
    if stacks and all(isinstance(s, StackJob) for s in stacks):
        return stacks
    if len(stacks) == 1 and Path(stacks[0]).suffix.lower() == ".csv":
        return read_list(stacks[0])
    if not all(isinstance(s, (str, os.PathLike)) for s in stacks):
        raise InputError("stacks must be folders or stack files, a .csv stack list, a {name: inputs} dict or "
                         "StackJobs")
    return find_stacks(stacks, stacks_from, exclude=exclude, split_positions=split_positions)


def batch_iter(stacks, output_dir, *, client=None, scheduler=None, n_workers=None, stacks_from="subfolders",
               redo=False, format=None, **options):
    """Like :func:`batch`, but yield each stack's :class:`StackRecord` as it finishes (the stacks
    found up to date first). ``batch.json`` is written when the iterator ends or is closed."""
    jobs = jobs_of(stacks, stacks_from=stacks_from, exclude=[output_dir],
                   split_positions=options.get("position") is None)
    with Batch(jobs, output_dir, client=client, scheduler=scheduler, n_workers=n_workers, redo=redo, format=format,
               **options) as run:
        yield from run.run()


def batch(stacks, output_dir, *, client=None, scheduler=None, n_workers=None, stacks_from="subfolders", redo=False,
          format=None, **options) -> list[StackRecord]:
    """Focus-stack many stacks on a Dask cluster; each stack's outputs as ``gpustack.stack`` writes them.

    Parameters
    ----------
    stacks : path, list of paths, dict or list of StackJob
        Root folders (each subfolder that holds frames is a stack, named by its path relative to the
        root; see ``stacks_from``), a ``.csv`` stack list (rows ``inputs[,name]``), or
        ``{name: inputs}`` with inputs as ``gpustack.stack`` takes them (paths).
    output_dir : path
        Where ``<name>.tif``, its sidecar ``<name>.tif.json`` and the maps asked for go, and
        ``batch.json``. Created if missing; it must be visible to every worker (a shared file system).
    client : distributed.Client, optional
        Run on this client's cluster (it stays open).
    scheduler : str, optional
        A running scheduler's address (``tcp://host:8786``) or scheduler file.
    n_workers : int, optional
        Workers of the local cluster started when neither ``client`` nor ``scheduler`` is given
        (default: one per core, at most one per 2 GiB of memory).
    stacks_from : {"subfolders", "files"}
        ``files``: each multi-page TIFF, OME-TIFF or microscopy file under the roots is a stack (one
        per stage position).
    redo : bool
        Run every stack, even those whose outputs are up to date (same inputs: names, sizes,
        modification times; same options).
    format : {".tif", ".png", ".jpg", ".ome.tif"}, optional
        The fused images' format (default: ``.ome.tif`` for microscopy inputs, ``.tif`` otherwise).
    **options
        Any ``StackOptions`` field but the output paths, ``overwrite`` and ``sidecar``; ``depth_map``,
        ``height_map`` and ``confidence_map`` are True to write ``<name>.depth.tif`` and so on.

    Returns
    -------
    list of StackRecord
        One per stack, in the order they finished (``status`` done, skipped or failed, ``error``).

    Raises
    ------
    InputError, OutputError, ClusterError
        Before any stack runs: no stacks, bad options, an output folder that cannot be written,
        Dask not installed, a scheduler that cannot be reached. A failing stack raises nothing: its
        record says why.
    """
    return list(batch_iter(stacks, output_dir, client=client, scheduler=scheduler, n_workers=n_workers,
                           stacks_from=stacks_from, redo=redo, format=format, **options))
