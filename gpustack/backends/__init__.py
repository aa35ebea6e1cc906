"""Backend registry. Importing this never imports CuPy; ``get_backend("cuda")`` does."""

from __future__ import annotations

import importlib
import logging

from ..errors import BackendUnavailableError, GpustackError

logger = logging.getLogger(__name__)

BACKENDS = {"cpu": "gpustack.backends.cpu", "cuda": "gpustack.backends.cuda"}


def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether the ``cuda`` backend can run here, and why not."""
    try:
        import cupy
    except ImportError:
        return False, ("CuPy is not installed (pip install 'gpustack[cuda13]' for a CUDA 13 driver, "
                       "'gpustack[cuda12]' for a CUDA 12 driver)")
    except Exception as exc:  # a broken CUDA install raises all sorts of things on import
        return False, f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no usable CUDA driver or device ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "no CUDA device found (cupy reports 0 devices)"
    from .cuda import _kernels

    try:
        major, minor = _kernels._nvrtc().getVersion()
    except BackendUnavailableError as exc:
        return False, _kernels.nvrtc_problem(exc.__cause__)
    return True, f"{count} CUDA device(s), NVRTC {major}.{minor}"


def get_backend(name: str = "auto"):
    """The backend object for ``name`` (``auto``, ``cpu`` or ``cuda``).

    ``auto`` picks ``cuda`` when CuPy sees a device and NVRTC loads and every kernel module
    compiles and loads, else ``cpu``, and logs the choice (a warning when a device is there but
    the backend cannot start on it). ``cuda`` on a machine where it cannot start raises
    ``BackendUnavailableError`` (or ``KernelCompileError``); never a silent fallback.
    """
    if name == "auto":
        ok, why = cuda_status()
        if ok:
            from .cuda import CudaBackend

            try:
                be = CudaBackend()
            except GpustackError as exc:
                logger.warning("backend auto: using cpu; the cuda backend cannot start: %s", exc)
            else:
                logger.info("backend auto: using cuda (%s)", why)
                return be
        else:
            logger.info("backend auto: using cpu (cuda unavailable: %s)", why)
        name = "cpu"
    elif name == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise BackendUnavailableError(f"CUDA backend unavailable: {why}; run with --backend cpu")
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[name])
    cls = module.CpuBackend if name == "cpu" else module.CudaBackend
    return cls()
