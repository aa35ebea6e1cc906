"""Running Python as a user without privileges, for the tests of permissions and unwritable homes.

Root (as CI runs) reads and writes everything whatever the mode bits say, so those tests run their
code in a subprocess as ``nobody`` (``setpriv``) when this process is root, and as this user
otherwise. Their files must then live where that user can reach them: :func:`shared_folder`, not
pytest's ``tmp_path`` (mode 0700, root's)."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def command_prefix() -> list[str]:
    """What to put before a command to run it as the unprivileged user (nothing when not root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        nobody = None
    if setpriv is None or nobody is None:
        pytest.skip("running as root without setpriv or a 'nobody' user: cannot drop privileges")
    return [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


@functools.cache
def _can_run() -> str | None:
    """None if the unprivileged user can run this interpreter and import gpustack from the checkout;
    else why not."""
    res = subprocess.run([*command_prefix(), sys.executable, "-c", "import gpustack"], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), cwd="/", timeout=120)
    return None if res.returncode == 0 else (res.stderr.strip().splitlines() or ["?"])[-1]


def run_python(args: list[str], *, env: dict | None = None, cwd="/", timeout=300,
               pythonpath: str | None = None) -> subprocess.CompletedProcess:
    """``python *args`` as the unprivileged user (skips the test if that user cannot run Python with
    gpustack importable), with ``pythonpath`` (default: this checkout) and ``env`` added."""
    prefix = command_prefix()
    why = _can_run()
    if why is not None:
        pytest.skip(f"an unprivileged user cannot run this interpreter with gpustack: {why}")
    full = dict(os.environ, PYTHONPATH=pythonpath or str(REPO), **(env or {}))
    return subprocess.run([*prefix, sys.executable, *args], capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout)


@contextlib.contextmanager
def shared_folder():
    """A new folder (mode 0755) outside pytest's private temporary folders, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="gpustack-test-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
