"""One executor for every parallel job packer runs (sweeps and replicates, capacity tables, the twin
verification of a placement, validation replays, benchmarks), chosen by name or passed in.

``open_executor(spec, workers, ray_address)`` gives a ``concurrent.futures.Executor``:

- ``"serial"``: every job in this process, in order;
- ``"process"``: a local process pool (``process_pool``) whose workers ask the kernel to kill them when
  the process that made them dies (``prctl(PR_SET_PDEATHSIG)`` on Linux; a watchdog thread polling the
  parent elsewhere), so a ``packer`` command killed by SIGTERM or SIGKILL leaves no orphans behind;
- ``"ray"``: tasks on a Ray cluster (``ray_address``; by default a local Ray started for the job and
  stopped after it), one CPU each; needs the ``packer[ray]`` extra;
- any ``concurrent.futures.Executor`` given: used as it is and left open.

``map_jobs(executor, fn, jobs, done)`` runs ``fn(*job)`` for every job and returns the results in job
order, calling ``done(result)`` as each finishes (progress). Jobs are seeded and single-threaded, so the
same seed gives the same results under every executor. Child processes started by other means (the exact
solvers' worker) call ``die_with_parent`` themselves.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

__all__ = ["EXECUTORS", "open_executor", "map_jobs", "SerialExecutor", "RayExecutor", "process_context",
           "process_pool", "die_with_parent"]

EXECUTORS = ("serial", "process", "ray")

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


class SerialExecutor(Executor):
    """Runs each job at once, in this process (the ``"serial"`` executor)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - the future carries it, as a pool's would
            f.set_exception(e)
        return f


class RayExecutor(Executor):
    """Jobs as Ray tasks of one CPU each, on the cluster at ``address`` or on a local Ray of ``max_workers``
    CPUs started here (and stopped by ``shutdown``)."""

    def __init__(self, max_workers: int | None = None, address: str | None = None):
        try:
            import ray  # type: ignore[import-not-found]
        except ImportError:
            from .errors import InputError

            raise InputError("executor", 'executor "ray" needs Ray; install it with: pip install "packer[ray]"') from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                options["num_cpus"] = max_workers or os.cpu_count() or 1
            ray.init(address=address, **options)
        self._task = ray.remote(num_cpus=1)(_call)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._task.remote(fn, args, kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False


def _call(fn, args, kwargs):
    return fn(*args, **kwargs)


@contextmanager
def open_executor(spec: "str | Executor" = "process", workers: int | None = None,
                  ray_address: str | None = None) -> Iterator[Executor]:
    """The executor ``spec`` names (see the module docstring), closed on exit unless it was given."""
    if isinstance(spec, Executor):
        yield spec
        return
    n = max(1, int(workers or os.cpu_count() or 1))
    if spec == "serial":
        ex: Executor = SerialExecutor()
    elif spec == "process":
        ex = process_pool(n)
    elif spec == "ray":
        ex = RayExecutor(n, ray_address)
    else:
        from .errors import InputError

        raise InputError("executor", f"unknown executor {spec!r}; valid: {', '.join(EXECUTORS)}, or a "
                         "concurrent.futures.Executor")
    with ex:
        yield ex


def map_jobs(executor: Executor, fn: Callable[..., Any], jobs: Sequence[tuple],
             done: Callable[[Any], None] | None = None) -> list[Any]:
    """``fn(*job)`` for every job on ``executor``: the results in job order; ``done(result)`` as each ends."""
    futures = {executor.submit(fn, *job): i for i, job in enumerate(jobs)}
    results: list[Any] = [None] * len(jobs)
    for f in as_completed(futures):
        results[futures[f]] = r = f.result()
        if done is not None:
            done(r)
    return results
