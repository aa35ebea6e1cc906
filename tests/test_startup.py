"""What starting gpustack costs: the command's supervising process and ``import gpustack`` load no
array, kernel or reader library, and a machine without an NVIDIA driver never imports CuPy
(issue 14: a first run on a 2-core machine paid about a second for them)."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "numba", "llvmlite", "scipy", "skimage", "tifffile", "imagecodecs", "PIL", "rawpy", "cupy")


def _modules_after(code: str, env=None) -> dict:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    return {"out": lines[:-1], "modules": set(json.loads(lines[-1]))}


def test_the_supervising_process_and_import_gpustack_load_no_heavy_library():
    """``gpustack.cli`` (what ``gpustack stack`` runs in the parent, which only watches the child) and
    ``import gpustack`` import none of NumPy, Numba, SciPy, the readers or CuPy; the pipeline's
    names are still there, on first use."""
    loaded = _modules_after("import gpustack, gpustack.cli, gpustack.supervise")["modules"]
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    res = _modules_after("import gpustack\nprint(gpustack.StackResult.__module__)")
    assert res["out"] == ["gpustack.pipeline"]


def test_the_stacking_process_imports_libraw_and_scipy_ndimage_only_when_used():
    """What the stacking process imports before its first frame: not rawpy (RAW frames only), not
    scipy.ndimage (the alignment imports it on first use, on a reader thread), not CuPy."""
    loaded = _modules_after("import gpustack.pipeline, gpustack.backends.cpu, gpustack.cli")["modules"]
    assert not loaded & {"rawpy", "scipy.ndimage", "cupy"}, sorted(loaded & {"rawpy", "scipy.ndimage", "cupy"})


def test_no_driver_no_cupy_import():
    """Where the NVIDIA driver library cannot be loaded, ``cuda_status`` says so without importing
    CuPy (installed or not)."""
    code = ("import gpustack.backends as b\nb.DRIVER_LIBRARY = 'libgpustack-no-such-driver.so'\n"
            "print(b.cuda_status())")
    res = _modules_after(code)
    assert "cupy" not in res["modules"]
    assert res["out"][0].startswith("(False, ")
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        assert "no NVIDIA driver (libgpustack-no-such-driver.so cannot be loaded" in res["out"][0]
    else:
        assert "CuPy is not installed" in res["out"][0]
