"""Worker processes for packer's parallel jobs: one way to make a pool, and workers that never outlive it.

Every process pool packer opens (capacity tables, twin verification, sweeps and replicates, validation
replays, benchmarks) comes from ``process_pool``. Its workers ask the kernel to kill them when the process
that made them dies (``prctl(PR_SET_PDEATHSIG)`` on Linux; a watchdog thread that polls the parent
elsewhere), so a ``packer`` command killed by SIGTERM or SIGKILL leaves no orphans behind. Child processes
started by other means (the exact solvers' worker) call ``die_with_parent`` themselves.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_context", "process_pool", "die_with_parent"]

_PR_SET_PDEATHSIG = 1
_WATCHDOG_S = 0.5


def process_context():
    """The multiprocessing context for packer's worker pools: fork where the OS has it (children
    inherit the compiled twin and no ``__main__`` guard is needed in user scripts), else spawn."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def process_pool(max_workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers die with the process that opened it."""
    return ProcessPoolExecutor(max_workers, mp_context=process_context(), initializer=die_with_parent,
                               initargs=(os.getpid(),))


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process end when its parent (``parent_pid``, default the current parent) dies."""
    parent = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux") and _set_parent_death_signal():
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)
        return
    threading.Thread(target=_watch_parent, args=(parent,), name="packer-parent-watchdog", daemon=True).start()


def _set_parent_death_signal() -> bool:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_WATCHDOG_S)
    os._exit(1)
