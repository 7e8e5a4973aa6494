"""Chunked twin runs on the executor: ``generate(spec, out_dir)`` runs the twin on every query of a
sweep, chunk by chunk, on ``packer.executor`` and writes the chunks to the store (``store.py``);
``run_query`` is one twin run of a query and its outcome columns. The plumbing the replicates share
(chunk bounds, the executor choice, the progress bar) is here too.

Sample ``i`` runs with workload seed ``spec.seed * 1_000_003 + i`` (mod 2^32).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...executor import EXECUTORS, map_jobs, open_executor
from ..base import GpuQuery
from ..features import FEATURE_NAMES, features_code, features_many
from .spec import SweepSpec, sample_query
from .store import BOOL_COLS, FLOAT_COLS, chunk_ok, chunk_path, claim_directory, query_columns, write_npz

__all__ = ["generate", "run_query", "chunk_bounds", "pick_executor", "run_jobs", "executor_name", "SweepProgress"]

_SEED_MULT = 1_000_003


def run_query(query: GpuQuery, duration_s: float, seed: int, warmup_s: float = 0.0) -> dict[str, Any]:
    """One twin run of ``query`` (``warmup_s``, then the measured ``duration_s``): the dataset's outcome
    columns for it."""
    from ...twin import Twin

    t0 = time.perf_counter()
    r = Twin(query.scenario(duration_s, seed, warmup_s), query.profile).run()
    offered = query.offered_tps
    nan = float("nan")
    if r.memory_error:
        return dict(throughput_tps=nan, offered_tps=offered, twin_offered_tps=nan, throughput_ratio=nan,
                    twin_throughput_ratio=nan, mean_itl_ms=nan, mean_ttft_ms=nan, p99_ttft_ms=nan,
                    worst_adapter_p99_ttft_ms=nan,
                    twin_wall_s=time.perf_counter() - t0,
                    starved=False, starved_by_throughput=False, queue_diverging=False, memory_error=True)
    return dict(throughput_tps=r.throughput_tps, offered_tps=offered, twin_offered_tps=r.offered_tps,
                throughput_ratio=r.throughput_tps / offered if offered > 0 else nan,
                twin_throughput_ratio=r.throughput_ratio,
                mean_itl_ms=r.mean_itl_ms, mean_ttft_ms=r.mean_ttft_ms, p99_ttft_ms=r.p99_ttft_ms,
                worst_adapter_p99_ttft_ms=r.worst_adapter_p99_ttft_ms,
                twin_wall_s=time.perf_counter() - t0, starved=bool(r.starved),
                starved_by_throughput=bool(r.starved_by_throughput), queue_diverging=bool(r.queue_diverging),
                memory_error=False)


def _twin_seed(spec: SweepSpec, i: int) -> int:
    return (spec.seed * _SEED_MULT + i) % (1 << 32)


def _chunk_columns(spec: SweepSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    """Run the twin on samples start..stop-1 and build the chunk's columns."""
    from ...twin.engine import warm_up

    warm_up()
    queries = [sample_query(spec, i) for i in range(start, stop)]
    seeds = [_twin_seed(spec, i) for i in range(start, stop)]
    rows = [run_query(q, spec.duration_s, s, spec.warmup_s) for q, s in zip(queries, seeds)]
    cols: dict[str, np.ndarray] = {
        "index": np.arange(start, stop, dtype=np.int64),
        "twin_seed": np.array(seeds, dtype=np.int64),
        "features": features_many(queries),
        "feature_names": np.array(FEATURE_NAMES),
        "features_code": np.array(features_code()),
    }
    for c in FLOAT_COLS:
        cols[c] = np.array([r[c] for r in rows], dtype=np.float64)
    for c in BOOL_COLS:
        cols[c] = np.array([r[c] for r in rows], dtype=bool)
    cols.update(query_columns(queries))
    cols["spec_json"] = np.array(json.dumps(spec.to_dict(with_size=False), sort_keys=True))
    cols["fingerprint"] = np.array(spec.fingerprint())
    return cols


def _run_and_write(spec: SweepSpec, out_dir: str, k: int, start: int, stop: int) -> int:
    write_npz(chunk_path(Path(out_dir), k), _chunk_columns(spec, start, stop))
    return stop - start


def chunk_bounds(spec: SweepSpec, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk number, first sample, end sample) of every chunk of the sweep."""
    if chunk_size < 1:
        raise InputError("chunk_size", f"must be >= 1 (got {chunk_size})")
    return [(k, s, min(s + chunk_size, spec.n_samples)) for k, s in enumerate(range(0, spec.n_samples, chunk_size))]


def pick_executor(executor: "str | Executor", workers: int | None, n_jobs: int) -> "tuple[str | Executor, int]":
    """The executor and worker count to use: a process pool for one worker or one job is serial."""
    if not isinstance(executor, Executor) and executor not in EXECUTORS:
        raise InputError("executor", f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    n_workers = max(1, int(workers or os.cpu_count() or 1))
    if executor == "process" and (n_workers == 1 or n_jobs <= 1):
        executor = "serial"
    return executor, n_workers


def run_jobs(fn: Any, jobs: list[tuple], executor: "str | Executor", n_workers: int, done: Any,
             ray_address: str | None = None) -> None:
    """``fn(*job)`` for every job on the executor (``packer.executor``); ``done(result)`` as each finishes."""
    if not jobs:
        return
    if executor == "process":
        from ...twin.engine import warm_up

        warm_up()  # forked workers inherit the compiled kernel
    with open_executor(executor, min(n_workers, len(jobs)), ray_address) as ex:
        map_jobs(ex, fn, jobs, done)


def executor_name(executor: "str | Executor") -> str:
    """The executor's name for a summary (an executor object: its class name)."""
    return executor if isinstance(executor, str) else type(executor).__name__


def generate(spec: SweepSpec, out_dir: str | os.PathLike, workers: int | None = None, chunk_size: int = 256,
             executor: "str | Executor" = "process", progress: bool = True,
             ray_address: str | None = None) -> dict[str, Any]:
    """Run the twin on the sweep's queries and write chunk files to ``out_dir`` (see ``store.py``).

    On ``executor`` (``packer.executor``): ``workers`` processes (default: the CPU count) in a local
    pool (``"process"``), this process (``"serial"``, also used when ``workers`` is 1), a Ray cluster
    (``"ray"`` at ``ray_address``, default a local Ray; needs the ``packer[ray]`` extra), or any
    ``concurrent.futures.Executor``; every executor gives the same rows. Complete chunks already in
    ``out_dir`` are kept. Returns a summary (rows, chunks run and skipped, seconds).
    """
    bounds = chunk_bounds(spec, chunk_size)
    pick_executor(executor, workers, 0)  # a bad name is refused before anything runs
    out = Path(out_dir)
    claim_directory(out, spec)
    todo = [b for b in bounds if not chunk_ok(chunk_path(out, b[0]), spec, b[1], b[2])]
    done_rows = spec.n_samples - sum(b[2] - b[1] for b in todo)
    executor, n_workers = pick_executor(executor, workers, len(todo))
    t0 = time.perf_counter()
    with SweepProgress(progress, spec, spec.n_samples, done_rows) as advance:
        run_jobs(_run_and_write, [(spec, str(out), k, s, e) for k, s, e in todo], executor, n_workers, advance,
                 ray_address)
    return {"out_dir": str(out), "rows": spec.n_samples, "chunks": len(bounds), "chunks_run": len(todo),
            "chunks_skipped": len(bounds) - len(todo), "seconds": time.perf_counter() - t0,
            "executor": executor_name(executor), "workers": 1 if executor == "serial" else n_workers}


class SweepProgress:
    """A rich progress bar over samples on stderr (or nothing); ``advance(n)`` moves it.

    Shown only when asked for and stderr is a terminal: stdout carries results (``packer train
    --json``), and a bar redrawn into a log file or a pipe is noise."""

    def __init__(self, show: bool, spec: SweepSpec, total: int, done: int, what: str = ""):
        self.show, self.spec, self.total, self.done, self.what = show, spec, total, done, what
        self._p = None

    def __enter__(self):
        if not (self.show and sys.stderr.isatty()):
            return lambda n: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._p = Progress(TextColumn("[bold]twin sweep[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
                           console=Console(file=sys.stderr))
        self._p.__enter__()
        task = self._p.add_task(f"{self.spec.profile} {self.what}".strip(), total=self.total, completed=self.done)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False
