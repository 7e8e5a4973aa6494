"""What one twin run reports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..files import json_ready

__all__ = ["AdapterStats", "RequestLog", "SimulationResult"]


@dataclass(frozen=True)
class AdapterStats:
    """Per-adapter outcome: how its requests fared (the starvation tail shows here)."""

    id: str
    arrived: int
    finished: int
    mean_ttft_ms: float
    p99_ttft_ms: float
    max_wait_s: float  # the longest time one of its requests waited for a first token (finished or not)


@dataclass(frozen=True)
class RequestLog:
    """Per-request outcome (kept only when asked for: ``Twin.run(..., keep_requests=True)``).

    Times are seconds from the start of the window; NaN where the event did not happen.
    ``status``: 1 waiting, 2 running, 3 finished, 4 not sent (the load generator's queue was full).
    """

    arrival_s: Any
    adapter: Any
    prompt_len: Any
    output_len: Any
    first_token_s: Any
    finish_s: Any
    status: Any


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of simulating one server for one workload.

    Throughputs count prompt + output tokens of requests finished inside the window, divided by the
    window (as the measured runs do). Latencies are over finished requests: ``mean_itl_ms`` is the
    token-weighted mean inter-token latency (vLLM's benchmark ``mean_itl``); ``p50/p99_tpot_ms`` are
    percentiles of each request's mean time per output token. ``starved`` is true when throughput is
    below 90 % of the offered token rate (the published rule) or the waiting queue diverges.

    With a warm-up (``Workload.warmup_s`` = W > 0) the window is [W, W + duration_s): throughputs,
    latencies, request counts, per-adapter rows and the series cover it only (requests finished in
    it; offered load and counts from arrivals in it), which removes the start-up and end-of-window
    bias of a short run; the engine's own counters (max running / waiting, preemptions, adapter
    loads, steps) cover the whole run, and ``sim_seconds`` is W + duration_s.

    With a ``memory_error`` the server does not start: nothing is served, but the load it was offered
    (``offered_tps``, ``offered_rps``, ``generated``) is still drawn and reported.
    """

    profile: str
    memory_error: str | None
    kv_capacity_tokens: int
    throughput_tps: float = 0.0
    input_tps: float = 0.0
    output_tps: float = 0.0
    offered_tps: float = 0.0
    offered_rps: float = 0.0
    throughput_ratio: float = 0.0
    generated: int = 0
    arrived: int = 0
    not_sent: int = 0
    finished: int = 0
    mean_ttft_ms: float = math.nan
    p50_ttft_ms: float = math.nan
    p99_ttft_ms: float = math.nan
    mean_itl_ms: float = math.nan
    p50_tpot_ms: float = math.nan
    p99_tpot_ms: float = math.nan
    mean_running: float = 0.0
    max_running: int = 0
    mean_waiting: float = 0.0
    max_waiting: int = 0
    end_waiting: int = 0
    waiting_growth_rps: float = 0.0
    queue_diverging: bool = False
    mean_kv_usage: float = 0.0
    max_kv_usage: float = 0.0
    mean_distinct_adapters: float = 0.0
    preemptions: int = 0
    gpu_adapter_loads: int = 0
    disk_adapter_loads: int = 0
    steps: int = 0
    worst_adapter_p99_ttft_ms: float = math.nan
    starved_by_throughput: bool = False
    starved: bool = False
    sim_seconds: float = 0.0
    wall_seconds: float = 0.0
    adapters: tuple[AdapterStats, ...] = field(default=(), repr=False)
    waiting_series: tuple[float, ...] = field(default=(), repr=False)
    series_bucket_s: float = 0.0
    requests: RequestLog | None = field(default=None, repr=False, compare=False)

    @property
    def speedup(self) -> float:
        """Simulated seconds per wall second."""
        return self.sim_seconds / self.wall_seconds if self.wall_seconds > 0 else math.inf

    def to_dict(self, per_adapter: bool = False, series: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes None); per-adapter rows and the queue series on request."""
        d = asdict(self)
        d.pop("requests")
        if not per_adapter:
            d.pop("adapters")
        if not series:
            d.pop("waiting_series")
            d.pop("series_bucket_s")
        return json_ready(d)
