"""Workers die with their parent: a ``packer`` command killed by SIGTERM or SIGKILL while its pools run
leaves no process behind (issue 19, defect "orphaned workers")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import packer
from packer.executor import process_pool

ROOT = Path(packer.__file__).resolve().parents[1]


def _children(pid: int) -> set[int]:
    """Every live descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(d.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return pred()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_solve_while_it_measures_capacity_leaves_no_worker(tmp_path, sig):
    # Two rank classes on an empty cache: two worker processes measure capacity tables for minutes.
    wl = {"profile": "llama-3.1-8b-instruct@h100-64gb",
          "lengths": {"input_mean": 300, "output_mean": 150},  # no shipped table for these lengths
          "adapters": [{"id": f"a{i}", "rank": 8 if i % 2 else 64, "rate": 0.05} for i in range(400)]}
    (tmp_path / "w.json").write_text(json.dumps(wl))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PACKER_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "packer.cli", "solve", "w.json"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 2, 60), "the capacity pool never started"
        workers = _children(proc.pid)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _wait_for(lambda: not any(_alive(w) for w in workers), 10), \
            f"workers {sorted(w for w in workers if _alive(w))} outlived their parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers | _children(proc.pid):
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def _sleep_and_report(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def test_pool_workers_do_their_work_and_end_with_the_pool():
    with process_pool(2) as pool:
        pids = set(pool.map(_sleep_and_report, [0.2] * 4))
    assert pids and os.getpid() not in pids
    assert _wait_for(lambda: not any(_alive(p) for p in pids), 10)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_killing_an_exact_solve_takes_its_solver_process_with_it(tmp_path):
    from packer.solvers import SOLVERS

    if not SOLVERS.available("cpsat"):
        pytest.skip("cpsat not installed")
    # Zipf rates on the shipped tables: greedy misses the bound, so the CP-SAT worker searches for a minute.
    rates = [200.0 / (i + 1) ** 1.1 / sum(1.0 / (k + 1) ** 1.1 for k in range(400)) for i in range(400)]
    wl = {"profile": "llama-3.1-8b-instruct@h100-64gb",
          "adapters": [{"id": f"a{i}", "rank": (8, 16, 32)[i % 3], "rate": r} for i, r in enumerate(rates)]}
    (tmp_path / "w.json").write_text(json.dumps(wl))
    env = dict(os.environ, PYTHONPATH=str(ROOT), PACKER_CACHE_DIR=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "packer.cli", "solve", "w.json", "--solver", "cpsat",
                             "--time-limit", "60", "--no-verify"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        assert _wait_for(lambda: len(_children(proc.pid)) >= 1, 60), "the solver process never started"
        time.sleep(6.0)  # past its start-up and model build, into the search (it writes nothing until the end)
        workers = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        assert _wait_for(lambda: not any(_alive(w) for w in workers), 10), "the solver outlived packer"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
