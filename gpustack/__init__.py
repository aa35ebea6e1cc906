"""gpustack: focus stacking that streams frames through a GPU (CuPy) or CPU (Numba) backend.

>>> import gpustack
>>> result = gpustack.stack(["f1.tif", "f2.tif", "f3.tif"], output="fused.tif")  # doctest: +SKIP
>>> result.image.shape, result.depth.shape                                         # doctest: +SKIP

Importing gpustack never imports CuPy; only the ``cuda`` backend does. Nor does it import NumPy,
Numba or the readers: ``FrameInfo``, ``ProgressEvent`` and ``StackResult`` come from
``gpustack.pipeline`` on first use, so that ``gpustack --version`` and the command's supervising
process (``gpustack.supervise``), which never stack anything, start in a few milliseconds.
"""

from __future__ import annotations

import logging

from ._version import __version__
from .errors import (AlignmentError, BackendUnavailableError, ClusterError, DecodeError, GpustackError, InputError,
                     KernelCompileError, KernelLaunchError, OutputError)
from .options import METHODS, ORDERS, StackOptions

logging.getLogger(__name__).addHandler(logging.NullHandler())

_FROM_PIPELINE = ("FrameInfo", "ProgressEvent", "StackResult")


def __getattr__(name):
    if name in _FROM_PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'gpustack' has no attribute {name!r}")

__all__ = [
    "AlignmentError", "BackendUnavailableError", "ClusterError", "DecodeError", "FrameInfo", "GpustackError", "InputError",
    "KernelCompileError", "KernelLaunchError", "METHODS", "ORDERS", "OutputError", "ProgressEvent", "StackOptions", "StackResult",
    "__version__", "batch", "batch_iter", "stack",
]


def stack(inputs, *, progress=None, **options) -> StackResult:  # noqa: F821 - gpustack.pipeline's
    """Focus-stack ``inputs`` into one image sharp front to back, plus its depth map.

    Parameters
    ----------
    inputs : path, list of paths, list of arrays, (N, H, W[, C]) array, or iterable of arrays
        Frame files, folders or glob patterns (any mix), in any order (sorted by
        ``order``); or frames as arrays, (H, W) or (H, W, C) with C = 1 or 3, of
        dtype uint8, uint16 (sRGB-encoded unless ``linear=True``) or float32
        (linear light), in shot order. An iterator of arrays is consumed once,
        one frame at a time (the ``depthmap`` method needs a list).
    progress : callable, optional
        Called with a ``ProgressEvent`` after each frame and stage.
    **options
        Any field of ``StackOptions`` (``backend``, ``method``, ``output``,
        ``depth_map``, ``order``, ``linear``, ``overwrite``, ...), with the same
        names as the command-line options.

    Returns
    -------
    StackResult
        ``image`` (as written), ``linear``, ``depth``, ``confidence``, ``frames``, ``timings``.

    Raises
    ------
    InputError, DecodeError, OutputError, BackendUnavailableError
    """
    from .pipeline import run

    return run(inputs, StackOptions(**options), progress=progress)


def batch(stacks, output_dir, **kwargs):
    """Focus-stack many stacks on Dask distributed; see :func:`gpustack.batching.batch` (needs
    ``pip install 'gpustack[batch]'``)."""
    from .batching import batch

    return batch(stacks, output_dir, **kwargs)


def batch_iter(stacks, output_dir, **kwargs):
    """:func:`batch` as an iterator of per-stack records, as they finish; see
    :func:`gpustack.batching.batch_iter`."""
    from .batching import batch_iter

    return batch_iter(stacks, output_dir, **kwargs)
