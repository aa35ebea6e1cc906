"""Set-up of each worker process of the local cluster that ``gpustack batch`` starts (a Dask preload).

Ctrl-C in a terminal sends SIGINT to the whole foreground process group, the local workers
included; they would each die with a traceback in the middle of their stack. The batch (the
client) stops them itself, so they ignore SIGINT; SIGTERM and SIGKILL still end them.
"""

from __future__ import annotations

import signal
import threading


def dask_setup(worker) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
