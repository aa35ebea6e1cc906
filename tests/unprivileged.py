"""Running Python without privileges, for the tests of permissions and unwritable homes.

Root (as CI runs) reads and writes everything whatever the mode bits say, so those tests run their
code in a subprocess that mode bits do stop: as ``nobody`` (``setpriv``) when that user can run this
interpreter and read this checkout, else as root without the capabilities that override mode bits
(``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH``: a checkout under /root is still readable, as its
owner); as this user when it is not root. Their files must then live where that user can reach
them: :func:`shared_folder`, not pytest's ``tmp_path`` (mode 0700, root's), and whatever must not be
writable must have no write bit at all (root without those capabilities is still the owner)."""

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


@functools.cache
def _how() -> tuple[list[str], int] | str:
    """(command prefix, uid) of a way to run this interpreter with gpustack importable, subject to
    mode bits; or why there is none."""
    if os.geteuid() != 0:
        return [], os.getuid()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "running as root without setpriv"
    ways = []
    try:
        nobody = pwd.getpwnam("nobody")
        ways.append(([setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"],
                     nobody.pw_uid))
    except KeyError:
        pass
    ways.append(([setpriv, "--bounding-set=-dac_override,-dac_read_search"], 0))
    why = ""
    for prefix, uid in ways:
        res = subprocess.run([*prefix, sys.executable, "-c", "import gpustack"], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), cwd="/", timeout=120)
        if res.returncode == 0:
            return prefix, uid
        why = (res.stderr.strip().splitlines() or ["?"])[-1]
    return f"neither 'nobody' nor root without CAP_DAC_OVERRIDE can run Python here: {why}"


def _way() -> tuple[list[str], int]:
    how = _how()
    if isinstance(how, str):
        pytest.skip(how)
    return how


def command_prefix() -> list[str]:
    """What to put before a command to run it without privileges (nothing when not root)."""
    return _way()[0]


def uid() -> int:
    """The user id such a command runs as."""
    return _way()[1]


def run_python(args: list[str], *, env: dict | None = None, cwd="/", timeout=300,
               pythonpath: str | None = None) -> subprocess.CompletedProcess:
    """``python *args`` without privileges (skips the test where that is impossible), with
    ``pythonpath`` (default: this checkout) and ``env`` added."""
    full = dict(os.environ, PYTHONPATH=pythonpath or str(REPO), **(env or {}))
    return subprocess.run([*command_prefix(), sys.executable, *args], capture_output=True, text=True, env=full,
                          cwd=cwd, timeout=timeout)


@contextlib.contextmanager
def shared_folder():
    """A new folder (mode 0755) outside pytest's private temporary folders, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="gpustack-test-"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        for p in (path, *path.rglob("*")):  # give back the write bits taken away, so it can be removed
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    p.chmod(0o755)
        shutil.rmtree(path, ignore_errors=True)
