"""The ``twin`` predictor: the Digital Twin itself, with a cache of repeated queries."""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from concurrent.futures import Executor
from typing import Sequence

from ..profile import Profile
from ..executor import map_jobs, open_executor
from ..twin import SimulationResult, Twin
from .base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S, PREDICTORS, GpuQuery, Prediction, Predictor

__all__ = ["TwinPredictor", "prediction_of_run"]


class TwinPredictor(Predictor):
    """Simulates each query with the twin (seeded): ``warmup_s`` simulated seconds (default 300), then
    a measured window of ``duration_s`` (default 600): a server in steady state. A short run without
    the warm-up loses the requests in flight at its end and undercounts throughput wherever requests
    wait long (e.g. many adapters contending for few slots).

    Identical queries are answered from an LRU cache of ``cache_size`` entries. ``predict_many`` runs its
    batch on ``executor`` (``packer.executor``: ``"process"`` with ``workers`` > 1 by default, ``"serial"``,
    ``"ray"`` at ``ray_address``, or an ``Executor``); every executor gives the same answers. ``profile``
    overrides the profile every query carries (one ``Profile`` for all queries).
    """

    name = "twin"

    def __init__(self, duration_s: float = DEFAULT_DURATION_S, seed: int = 0, cache_size: int = 65536,
                 workers: int | None = 1, profile: Profile | None = None, warmup_s: float = DEFAULT_WARMUP_S,
                 executor: "str | Executor | None" = None, ray_address: str | None = None):
        if not (duration_s > 0 and math.isfinite(duration_s)):
            raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
        if not (warmup_s >= 0 and math.isfinite(warmup_s)):
            raise ValueError(f"warmup_s must be a non-negative number of seconds, got {warmup_s!r}")
        self.duration_s = float(duration_s)
        self.warmup_s = float(warmup_s)
        self.seed = int(seed)
        self.cache_size = int(cache_size)
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.profile = profile
        self.executor, self.ray_address = executor, ray_address  # where batches run: not part of describe()
        self._cache: OrderedDict[GpuQuery, Prediction] = OrderedDict()
        self.calls = 0       # simulations actually run
        self.cache_hits = 0

    def __getstate__(self) -> dict:
        # A copy sent to a worker process (the capacity search) runs its queries there: an open
        # executor object (its locks and pipes) stays with the parent.
        state = self.__dict__.copy()
        if not isinstance(state["executor"], (str, type(None))):
            state["executor"] = None
        return state

    def describe(self) -> dict:
        d = {"name": self.name, "duration_s": self.duration_s, "warmup_s": self.warmup_s, "seed": self.seed}
        if self.profile is not None:
            d["profile"] = self.profile.fingerprint()
        return d

    def predict(self, query: GpuQuery) -> Prediction:
        hit = self._lookup(query)
        if hit is not None:
            return hit
        self.calls += 1
        return self._store(query, _simulate(query, self.duration_s, self.seed, self.profile, self.warmup_s))

    def predict_many(self, queries: Sequence[GpuQuery]) -> list[Prediction]:
        todo = list(dict.fromkeys(q for q in queries if self._lookup(q, count=False) is None))
        if len(todo) > 1 and (self.workers > 1 or self.executor is not None):
            with open_executor(self.executor or "process", min(self.workers, len(todo)), self.ray_address) as ex:
                results = map_jobs(ex, _simulate, [(q, self.duration_s, self.seed, self.profile, self.warmup_s)
                                                   for q in todo])
            self.calls += len(todo)
            for q, p in zip(todo, results):
                self._store(q, p)
        return [self.predict(q) for q in queries]

    def _lookup(self, query: GpuQuery, count: bool = True) -> Prediction | None:
        p = self._cache.get(query)
        if p is not None:
            self._cache.move_to_end(query)
            if count:
                self.cache_hits += 1
        return p

    def _store(self, query: GpuQuery, p: Prediction) -> Prediction:
        self._cache[query] = p
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return p


def _simulate(query: GpuQuery, duration_s: float, seed: int, profile: Profile | None,
              warmup_s: float) -> Prediction:
    prof = profile if profile is not None else query.profile
    return prediction_of_run(Twin(query.scenario(duration_s, seed, warmup_s), prof).run(), query.offered_tps)


def prediction_of_run(r: SimulationResult, offered_tps: float | None = None) -> Prediction:
    """The twin's verdict on one simulated run (starts, keeps up), as a ``Prediction``."""
    if r.memory_error:
        return Prediction(predictor="twin", starved=False, memory_error=r.memory_error, throughput_tps=None,
                          offered_tps=r.offered_tps if offered_tps is None else offered_tps)
    return Prediction(predictor="twin", starved=bool(r.starved), memory_error=None, throughput_tps=r.throughput_tps,
                      offered_tps=r.offered_tps, mean_itl_ms=r.mean_itl_ms, p99_ttft_ms=r.p99_ttft_ms,
                      mean_ttft_ms=r.mean_ttft_ms, p99_tpot_ms=r.p99_tpot_ms,
                      worst_adapter_p99_ttft_ms=r.worst_adapter_p99_ttft_ms)


PREDICTORS.register("twin", TwinPredictor, summary="the Digital Twin (discrete-event simulation), cached")
