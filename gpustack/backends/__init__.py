"""Backend registry. Importing this never imports CuPy; ``get_backend("cuda")`` does."""

from __future__ import annotations

import importlib
import logging

from ..errors import BackendUnavailableError

logger = logging.getLogger(__name__)

BACKENDS = {"cpu": "gpustack.backends.cpu", "cuda": "gpustack.backends.cuda"}


def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether the ``cuda`` backend can run here, and why not."""
    try:
        import cupy
    except ImportError:
        return False, "CuPy is not installed (pip install 'gpustack[cuda13]' or 'gpustack[cuda12]')"
    except Exception as exc:  # a broken CUDA install raises all sorts of things on import
        return False, f"CuPy failed to import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no usable CUDA driver or device ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "no CUDA device found (cupy reports 0 devices)"
    return True, f"{count} CUDA device(s)"


def get_backend(name: str = "auto"):
    """The backend object for ``name`` (``auto``, ``cpu`` or ``cuda``).

    ``auto`` picks ``cuda`` when CuPy sees a device, else ``cpu``, and logs the choice.
    ``cuda`` on a machine without one raises ``BackendUnavailableError``; never a silent fallback.
    """
    if name == "auto":
        ok, why = cuda_status()
        name = "cuda" if ok else "cpu"
        logger.info("backend auto: using %s (%s)", name, why if ok else f"cuda unavailable: {why}")
    elif name == "cuda":
        ok, why = cuda_status()
        if not ok:
            raise BackendUnavailableError(f"CUDA backend unavailable: {why}; run with --backend cpu")
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    module = importlib.import_module(BACKENDS[name])
    cls = module.CpuBackend if name == "cpu" else module.CudaBackend
    return cls()
