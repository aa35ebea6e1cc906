"""gpustack installed read-only, used by someone without a writable home (shared lab machines,
containers): ``gpustack --version`` and the first run work, quietly, and Numba's kernel cache goes
to a private folder, or nowhere when nothing at all is writable (gpustack._numba_cache)."""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unprivileged import command_prefix, run_python, shared_folder, uid

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")


def _read_only_install(top: Path) -> Path:
    """A copy of the package in ``top/site`` that nobody may write (no write bit at all), without any
    cache folder; and ``top/nohome``, a folder in which no home can be created."""
    site = top / "site"
    shutil.copytree(REPO / "gpustack", site / "gpustack", ignore=shutil.ignore_patterns("__pycache__"))
    for path in sorted((site, *site.rglob("*")), key=lambda p: -len(p.parts)):
        path.chmod(0o555 if path.is_dir() else 0o444)
    (top / "nohome").mkdir(mode=0o555)
    (top / "nohome").chmod(0o555)
    return site


def _frames(folder: Path) -> None:
    folder.mkdir()
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for k in range(3):
        Image.fromarray(np.roll(img, k, axis=1)).save(folder / f"f{k}.png")
    folder.chmod(0o755)


@pytest.mark.parametrize("home", ["missing", "unset"])
def test_version_and_first_run_without_a_writable_home(home):
    """Installed where the user may not write, HOME a folder that does not exist and cannot be
    created (or unset, the password database's home then being such a folder, as nobody's
    /nonexistent): --version and a first run work and say nothing; the kernels are cached in a
    private folder in the temporary directory."""
    with shared_folder() as top:
        site = _read_only_install(top)
        _frames(top / "in")
        (top / "out").mkdir()
        (top / "out").chmod(0o777)
        env = {"HOME": str(top / "nohome" / "home")} if home == "missing" else {}
        saved = {k: os.environ.pop(k) for k in ("HOME", "XDG_CACHE_HOME") if k in os.environ}
        try:
            if home == "unset":
                probe = run_python(["-c", "import os, sys; h = os.path.expanduser('~'); "
                                          "sys.exit(os.access(h, os.W_OK) or os.access(os.path.dirname(h), os.W_OK))"],
                                   pythonpath=str(site))
                if probe.returncode != 0:
                    pytest.skip("the home this user has in the password database is writable")
            version = run_python(["-m", "gpustack", "--version"], env=env, pythonpath=str(site))
            state = run_python(["-c", "import gpustack._numba_cache as c; print(c.STATE)"], env=env,
                               pythonpath=str(site))
            if home == "missing":  # the first run compiles every kernel it needs (cold cache): once is enough
                run = run_python(["-m", "gpustack", "stack", str(top / "in"), "-o", str(top / "out" / "f.tif"),
                                  "--align", "none"], env=dict(env, GPUSTACK_SUPERVISE="0"), pythonpath=str(site))
                assert run.returncode == 0 and run.stderr == "", run.stderr
                assert (top / "out" / "f.tif").stat().st_size > 0
        finally:
            os.environ.update(saved)
    assert version.returncode == 0 and version.stderr == "", version.stderr
    assert version.stdout.startswith("gpustack ")
    assert state.stdout.startswith("private:") and state.stdout.strip().endswith(f"gpustack-numba-{uid()}"), \
        state.stdout


def test_first_run_with_nothing_writable_but_the_output():
    """Temporary folders read-only too (a locked-down container): no cache at all, and it still
    runs. Root only: a private mount namespace makes /tmp, /var/tmp and /dev/shm read-only."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to make the temporary folders read-only")
    with shared_folder() as top:
        site = _read_only_install(top)
        _frames(top / "in")
        (top / "out").mkdir()
        user = " ".join(map(shlex.quote, command_prefix()))
        py = shlex.quote(sys.executable)
        script = f"""
set -e
for d in /tmp /var/tmp /dev/shm; do
    if [ -d $d ]; then mount --bind $d $d && mount -o remount,bind,ro $d; fi
done
mount -t tmpfs -o size=16m,mode=1777 tmpfs {top}/out
cd {top}
export HOME={top}/nohome/home PYTHONPATH={site} GPUSTACK_SUPERVISE=0
{user} {py} -c "import gpustack._numba_cache as c; print(c.STATE)"
{user} {py} -m gpustack --version
{user} {py} -m gpustack stack {top}/in -o {top}/out/f.tif --align none -q
test -s {top}/out/f.tif && echo wrote
"""
        res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                             capture_output=True, text=True, timeout=600)
        if res.returncode != 0 and "mount" in res.stderr and "wrote" not in res.stdout:
            pytest.skip(f"cannot make the temporary folders read-only here: {res.stderr.strip()[-200:]}")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "off"
    assert res.stdout.splitlines()[1].startswith("gpustack ") and res.stdout.splitlines()[-1] == "wrote"
    assert "Traceback" not in res.stderr and "cannot cache" not in res.stderr, res.stderr
