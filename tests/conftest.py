import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


#: set (as CI does) to make a missing CUDA toolchain (NVRTC, g++) fail the tests that need it
#: instead of skipping them, so that the kernel checks can never go silently missing
REQUIRE_TOOLCHAIN = os.environ.get("GPUSTACK_REQUIRE_TOOLCHAIN", "0") not in ("", "0")


def toolchain_missing(what: str):
    """Skip (or, under GPUSTACK_REQUIRE_TOOLCHAIN=1, fail) a test that needs ``what``."""
    if REQUIRE_TOOLCHAIN:
        pytest.fail(f"{what} (GPUSTACK_REQUIRE_TOOLCHAIN=1: the CUDA kernel checks must run here)", pytrace=False)
    pytest.skip(what)


def cuda_available() -> bool:
    from gpustack.backends import cuda_status

    return cuda_status()[0]


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def backend(request):
    if request.param == "cuda" and not cuda_available():
        pytest.skip("no CUDA device")
    from gpustack.backends import get_backend

    return get_backend(request.param)


@pytest.fixture(autouse=True)
def _restore_gpustack_logger():
    """``gpustack.cli.main`` configures the ``gpustack`` logger for a terminal (its own handler, no
    propagation) and the root logger's handlers; undo that after each test so that ``caplog`` sees
    the library's records."""
    import logging

    log = logging.getLogger("gpustack")
    saved = (list(log.handlers), log.level, log.propagate)
    root = list(logging.root.handlers)
    yield
    log.handlers[:], log.level, log.propagate = saved[0], saved[1], saved[2]
    logging.root.handlers[:] = root


@pytest.fixture(autouse=True)
def _cli_in_process(monkeypatch):
    """``gpustack.cli.main`` runs ``stack`` in a supervised child process; the tests that call it
    in-process want it here (``tests/test_cli.py`` tests the supervisor itself)."""
    monkeypatch.setenv("GPUSTACK_SUPERVISE", "0")


def pytest_configure(config):
    """``GPUSTACK_TEST_NO_POOL=1`` (ci/gpu_first_light.sh, under compute-sanitizer): every CuPy
    allocation is its own cudaMalloc, so that an out-of-bounds access is not hidden inside a pool."""
    if os.environ.get("GPUSTACK_TEST_NO_POOL") == "1":
        import cupy

        cupy.cuda.set_allocator(None)
        cupy.cuda.set_pinned_memory_allocator(None)
