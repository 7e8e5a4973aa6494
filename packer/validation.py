"""Twin against measurements: replay measured runs and score the twin's errors.

Used by ``benchmarks/twin_fidelity.py`` and ``calibrate/fit_e2e.py``; usable on any CSV in the
real-runs format (see ``packer.replay``).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .executor import open_executor
from .profile import Profile
from .replay import MeasuredRun

__all__ = ["ReplayRow", "replay", "summarise", "holdout_split"]


@dataclass(frozen=True)
class ReplayRow:
    """Twin vs measurement for one run."""

    key: str
    model: str
    status: str
    memory_error: str | None
    measured: dict[str, float]
    sim: dict[str, Any]

    def rel_err(self, sim_key: str, real_key: str) -> float:
        """(sim - real) / real, NaN when not comparable."""
        real = self.measured.get(real_key, math.nan)
        sim = self.sim.get(sim_key)
        if sim is None or not math.isfinite(real) or real == 0:
            return math.nan
        return (sim - real) / real


def _run_one(args: tuple[MeasuredRun, Profile | None]) -> ReplayRow:
    from .twin import Twin

    run, profile = args
    r = Twin.from_scenario(run.scenario, profile).run()
    return ReplayRow(run.key, run.model, run.status, r.memory_error, run.measured, r.to_dict())


def replay(runs: Sequence[MeasuredRun], profiles: dict[str, Profile] | None = None,
           workers: int | None = None, executor: Executor | None = None) -> list[ReplayRow]:
    """Simulate every run (in parallel processes); ``profiles`` maps a profile name to an override.

    ``executor`` reuses a pool across calls (calibration replays the same runs many times)."""
    profiles = profiles or {}
    jobs = [(r, profiles.get(r.scenario["profile"])) for r in runs]
    workers = workers or min(len(jobs), os.cpu_count() or 1)
    if executor is None:
        if workers <= 1:
            return [_run_one(j) for j in jobs]
        with open_executor("process", workers) as ex:
            return replay(runs, profiles, executor=ex)
    # Big runs first so that the pool's tail is short.
    order = sorted(range(len(jobs)), key=lambda i: -sum(a["rate"] for a in jobs[i][0].scenario["adapters"]))
    done = dict(zip(order, executor.map(_run_one, [jobs[i] for i in order], chunksize=1)))
    return [done[i] for i in range(len(jobs))]


def _mean_abs(xs: Iterable[float]) -> float:
    v = [abs(x) for x in xs if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def summarise(rows: Sequence[ReplayRow]) -> dict[str, dict[str, float]]:
    """Per model: throughput / ITL / TTFT mean absolute relative error (%), starvation agreement,
    and the start-up memory-failure confusion counts."""
    out: dict[str, dict[str, float]] = {}
    for model in sorted({r.model for r in rows}):
        mr = [r for r in rows if r.model == model]
        ok = [r for r in mr if r.status == "ok" and r.memory_error is None]
        oom = [r for r in mr if r.status.startswith("oom")]
        out[model] = {
            "runs_ok": len([r for r in mr if r.status == "ok"]),
            "throughput_mare_pct": 100 * _mean_abs(r.rel_err("throughput_tps", "total_throughput_tps") for r in ok),
            "itl_mare_pct": 100 * _mean_abs(r.rel_err("mean_itl_ms", "mean_itl_ms") for r in ok),
            "ttft_mare_pct": 100 * _mean_abs(r.rel_err("mean_ttft_ms", "mean_ttft_ms") for r in ok),
            "starvation_agreement_pct": 100 * (sum(bool(r.sim["starved"]) == bool(r.measured["starved"]) for r in ok)
                                               / len(ok) if ok else math.nan),
            "oom_runs": len(oom),
            "oom_predicted": sum(r.memory_error is not None for r in oom),
            "false_memory_errors": sum(r.memory_error is not None for r in mr if r.status == "ok"),
        }
    return out


def holdout_split(runs: Sequence[MeasuredRun], part: str) -> list[MeasuredRun]:
    """A fixed, seed-free split of runs for calibration ("fit", ~half) and validation ("holdout")."""
    import zlib

    if part == "all":
        return list(runs)
    want = {"fit": 0, "holdout": 1}[part]
    return [r for r in runs if zlib.crc32(r.key.encode()) % 2 == want]
