"""Backend registry. Importing this never imports CuPy; ``get_backend("cuda")`` does."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

from ..errors import BackendUnavailableError, GpustackError

logger = logging.getLogger(__name__)

BACKENDS = {"cpu": "gpustack.backends.cpu", "cuda": "gpustack.backends.cuda"}


#: The NVIDIA driver's library, which CuPy loads to find any device.
DRIVER_LIBRARY = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}.get(sys.platform)


def driver_problem() -> str | None:
    """Why the NVIDIA driver library cannot be loaded (then CuPy finds no device), or None.

    Asked before CuPy is imported: importing CuPy costs about 0.2 CPU s (0.5 s of a first run on
    a busy 2-core machine), for nothing on a machine without an NVIDIA driver."""
    if DRIVER_LIBRARY is None:
        return None
    import ctypes

    try:
        ctypes.CDLL(DRIVER_LIBRARY)
    except OSError as exc:
        return f"no NVIDIA driver ({DRIVER_LIBRARY} cannot be loaded: {exc})"
    return None


def cuda_status() -> tuple[bool, str]:
    """(usable, reason): whether the ``cuda`` backend can run here, and why not."""
    not_installed = (False, "CuPy is not installed (pip install 'gpustack[cuda13]' for a CUDA 13 driver, "
                            "'gpustack[cuda12]' for a CUDA 12 driver)")
    if "cupy" not in sys.modules:  # (once imported, by us or the caller, CuPy itself is asked)
        if importlib.util.find_spec("cupy") is None:
            return not_installed
        problem = driver_problem()
        if problem is not None:
            return False, problem
    try:
        import cupy
    except ImportError:
        return not_installed
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
