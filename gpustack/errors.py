"""The exceptions gpustack raises.

Every error also inherits a standard library type, so callers can catch either
(``except gpustack.InputError`` or ``except ValueError``). Messages say what
failed, which item, what was expected, and what to do about it.
"""

from __future__ import annotations


class GpustackError(Exception):
    """Root of every error gpustack raises on purpose."""


class InputError(GpustackError, ValueError):
    """Bad options, paths or frames (missing, mismatched sizes, non-finite samples...)."""


class DecodeError(GpustackError, OSError):
    """A frame file or folder exists but cannot be read (permissions, I/O error) or decoded
    (corrupt, truncated, unsupported)."""

    def __init__(self, path, message):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class OutputError(GpustackError, OSError):
    """An output cannot be written (exists, folder missing, not writable...)."""


class BackendUnavailableError(GpustackError, RuntimeError):
    """The requested backend cannot run on this machine."""


class KernelCompileError(GpustackError, RuntimeError):
    """A CUDA kernel failed to compile; names the .cu file and its specialisation."""


class KernelLaunchError(GpustackError, RuntimeError):
    """A CUDA kernel failed to launch or faulted on the device; names the kernel where it is known."""


class AlignmentError(GpustackError, RuntimeError):
    """Frames could not be aligned."""


class ClusterError(GpustackError, RuntimeError):
    """A batch's Dask cluster cannot be started or reached, or Dask is not installed."""
