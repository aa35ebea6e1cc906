import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
