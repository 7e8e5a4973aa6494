"""Verify a plan on a request log's own arrivals: each GPU replays the log's requests for its adapters.

An adapter placed on one GPU sends it all its requests; a split adapter's requests are routed at
random in proportion to its shares (one seeded draw per request, as a weighted router does). Each
GPU is then simulated by the twin on exactly those requests, with the plan's flags, over the log's
span; its verdict is the twin's usual one (starts, keeps up)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..executor import map_jobs, open_executor
from ..files import json_ready
from ..model import PlacementWorkload, Scenario, parse_model
from ..predictors.base import Prediction
from ..predictors.twin import prediction_of_run
from ..profile import load_profile
from ..requestlog import RequestLog
from ..solvers.result import SolveResult

__all__ = ["GpuTraceCheck", "TraceVerification", "verify_on_trace"]


@dataclass(frozen=True)
class GpuTraceCheck:
    """One GPU on the log: the requests it got and what the twin says."""

    gpu: int
    requests: int
    offered_tps: float
    throughput_tps: float | None
    mean_itl_ms: float | None
    p99_ttft_ms: float | None
    starved: bool
    memory_error: str | None
    ok: bool


@dataclass(frozen=True)
class TraceVerification:
    """Every GPU replayed on the log; ``unplanned_requests``: requests for adapters the plan lacks."""

    source: str
    span_s: float
    gpus: tuple[GpuTraceCheck, ...]
    unplanned_requests: int
    unplanned_adapters: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.gpus) and self.unplanned_requests == 0

    def to_dict(self) -> dict[str, Any]:
        return json_ready({"source": self.source, "span_s": self.span_s, "ok": self.ok,
                           "unplanned_requests": self.unplanned_requests,
                           "unplanned_adapters": list(self.unplanned_adapters),
                           "gpus": [g.__dict__ for g in self.gpus]})


def _route(result: SolveResult, log: RequestLog, seed: int) -> np.ndarray:
    """The GPU each request of the log goes to (-1: its adapter is not in the plan)."""
    placement = result.placement()
    gpu_of = np.full(log.requests, -1, dtype=np.int64)
    u = np.random.default_rng(seed).random(log.requests)
    for a, aid in enumerate(log.adapter_ids):
        where = placement.get(aid)
        if not where:
            continue
        mask = log.adapter == a
        if len(where) == 1:
            gpu_of[mask] = where[0][0]
            continue
        shares = np.array([s for _, s in where], dtype=np.float64)
        cum = np.cumsum(shares / shares.sum())
        pick = np.minimum(np.searchsorted(cum, u[mask], side="right"), len(where) - 1)
        gpu_of[mask] = np.array([g for g, _ in where])[pick]
    return gpu_of


def _check_gpu(g: int, scenario: dict, profile: str, arrival, adapter, prompt, output) -> GpuTraceCheck:
    from ..twin import Twin
    from ..twin.workload_gen import Requests

    sc = parse_model(Scenario, scenario)
    r = Twin(sc, load_profile(profile)).run(Requests(arrival, adapter, prompt, output))
    p: Prediction = prediction_of_run(r)
    return GpuTraceCheck(g, int(len(arrival)), float(r.offered_tps), p.throughput_tps, p.mean_itl_ms, p.p99_ttft_ms,
                         p.starved, p.memory_error, p.ok)


def verify_on_trace(result: SolveResult, workload: PlacementWorkload, log: RequestLog, *, seed: int = 0,
                    executor: Any = "process", workers: int | None = None,
                    ray_address: str | None = None) -> TraceVerification:
    """Replay ``log`` on every GPU of ``result`` (solved from ``workload``); see the module."""
    if not result.gpus:
        raise InputError("verify_trace", f"the plan has no GPUs ({result.status.value}): nothing to verify")
    profile = result.profile or workload.profile
    gpu_of = _route(result, log, seed)
    span = log.span_s
    jobs = []
    for g, plan in enumerate(result.gpus):
        ids = [a.id for a in plan.adapters]
        local = {aid: i for i, aid in enumerate(ids)}
        mine = np.flatnonzero(gpu_of == g)
        log_idx = np.array([local.get(aid, -1) for aid in log.adapter_ids], dtype=np.int32)
        adapter = log_idx[log.adapter[mine]]
        counts = np.bincount(adapter, minlength=len(ids))
        scenario = {"profile": profile, "server": workload.server.server(plan.max_loras, plan.max_lora_rank,
                                                                          plan.max_cpu_loras).model_dump(),
                    "adapters": [{"id": a.id, "rank": a.rank, "rate": max(float(c) / span, 1e-9)}
                                 for a, c in zip(plan.adapters, counts)],
                    "lengths": workload.lengths.model_dump(), "arrivals": {"kind": "poisson"},
                    "duration_s": span, "warmup_s": 0.0, "seed": seed}
        jobs.append((g, scenario, profile, log.arrival_s[mine].astype(np.float64), adapter.astype(np.int32),
                     log.prompt_tokens[mine].astype(np.int32), log.output_tokens[mine].astype(np.int32)))
    with open_executor(executor if len(jobs) > 1 else "serial", workers, ray_address) as ex:
        checks = map_jobs(ex, _check_gpu, jobs)
    missing = sorted({log.adapter_ids[a] for a in np.unique(log.adapter[gpu_of < 0])})
    return TraceVerification(log.source, span, tuple(checks), int((gpu_of < 0).sum()), tuple(missing))
