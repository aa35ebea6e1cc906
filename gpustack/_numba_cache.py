"""Where Numba caches our compiled kernels: a writable place, or nowhere; never an import error.

Numba's ``cache=True`` looks for a writable folder when each kernel is decorated, at import: the
package's own ``__pycache__`` folders, then the user's cache folder (``~/.cache/numba``). With
neither (a root-owned install used by another user whose home is missing or read-only: shared lab
machines, containers) it raises ``RuntimeError: cannot cache function ...: no locator available``
and ``import gpustack`` fails. This module runs first, before any kernel is decorated, and asks
Numba itself (by decorating a probe function) whether a place is found; if not, it points
``NUMBA_CACHE_DIR`` at a private folder in the temporary directory (created with mode 0700, and
used only if this user owns it and nobody else may write to it: Numba's cache files are pickles),
and if there is none either, it turns caching off for our kernels (each process then compiles
them: slower to start, same results). A ``NUMBA_CACHE_DIR`` the user set is tried first, as Numba
does. :data:`STATE` says what was chosen.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile

import numba

logger = logging.getLogger(__name__)

#: ``"numba"`` (Numba found a place), ``"private:<folder>"`` or ``"off"``.
STATE = "numba"


def _probe(x):
    return x


def _numba_finds_a_place() -> bool:
    try:
        numba.njit(cache=True)(_probe)  # decorating looks for the cache folder; nothing is compiled
    except RuntimeError:
        return False
    return True


def _private_folder(base: str) -> str | None:
    """``base/gpustack-numba-<uid>``, created if need be; None unless it is a folder this user owns,
    that nobody else may write to, and that takes a file."""
    uid = getattr(os, "getuid", lambda: None)()
    path = os.path.join(base, f"gpustack-numba-{uid if uid is not None else 'user'}")
    try:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or (uid is not None and (st.st_uid != uid or st.st_mode & 0o022)):
            return None
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return None
    return path


def _candidates() -> list[str]:
    bases = []
    try:
        bases.append(tempfile.gettempdir())  # TMPDIR, TEMP, TMP, /tmp, /var/tmp, /usr/tmp, the working folder
    except (FileNotFoundError, OSError):
        pass
    if os.path.isdir("/dev/shm"):
        bases.append("/dev/shm")
    return bases


def _turn_caching_off() -> None:
    """Leave Numba's do-nothing cache on kernels whose cache folder cannot be found."""
    from numba.core.dispatcher import Dispatcher

    enable = Dispatcher.enable_caching

    def enable_caching(self):
        try:
            enable(self)
        except RuntimeError:  # "no locator available": compile in every process instead
            pass

    Dispatcher.enable_caching = enable_caching


def _choose() -> str:
    if _numba_finds_a_place():
        return "numba"
    for base in _candidates():
        folder = _private_folder(base)
        if folder is None:
            continue
        os.environ["NUMBA_CACHE_DIR"] = folder  # for child processes too
        numba.config.CACHE_DIR = folder
        if _numba_finds_a_place():
            return f"private:{folder}"
    try:
        _turn_caching_off()
    except (ImportError, AttributeError):  # a Numba without this hook: its own error will say why
        return "numba"
    return "off"


STATE = _choose()
if STATE != "numba":
    logger.debug("Numba kernel cache: %s (no writable package or user cache folder)", STATE)
