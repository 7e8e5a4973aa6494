"""The ``vllm`` predictor: a live benchmark of each query on real vLLM (or any server a launch template
starts, ``packer serve-twin`` included).

A ``GpuQuery`` becomes a launch with the query's flags and adapters (dummy adapters of its ranks, with
zero weights shaped from ``model_config`` for real vLLM), a benchmark of the query's workload over the
twin's window (300 s warm-up, 600 s measured, seeded), and a ``Prediction``. One server per GPU index
in ``gpus`` (``CUDA_VISIBLE_DEVICES``), so a batch runs in parallel on a multi-GPU box. Answers are
cached on disk (``$PACKER_CACHE_DIR/vllm``) by query and by everything that changes them (the
template, the window, the seed, the time scale); partial runs are never cached.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

from ..errors import InputError, PackerError
from ..files import cache_root, read_json, write_json_atomic
from .base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S, PREDICTORS, GpuQuery, Prediction, Predictor

__all__ = ["VllmPredictor", "LAUNCH_ENV"]

LAUNCH_ENV = "PACKER_VLLM_LAUNCH"  # the launch template when none is given


class VllmPredictor(Predictor):
    """Benchmarks each query on a server started from ``launch`` (default: ``$PACKER_VLLM_LAUNCH``)."""

    name = "vllm"

    def __init__(self, launch: str | None = None, gpus: Sequence[int] | str | None = None,
                 duration_s: float = DEFAULT_DURATION_S, warmup_s: float = DEFAULT_WARMUP_S, seed: int = 0,
                 time_scale: float = 1.0, model_config: Mapping | str | None = None,
                 health_timeout_s: float = 900.0, cache: bool = True):
        self.launch = launch if launch is not None else os.environ.get(LAUNCH_ENV)
        if not self.launch:
            raise InputError("launch", f"the vllm predictor needs a launch template (--vllm-launch, or {LAUNCH_ENV}); "
                             "e.g. \"vllm serve /models/llama --enable-lora --max-loras {max_loras} ... "
                             "--port {port} --lora-modules {lora_modules}\"")
        if not (duration_s > 0 and math.isfinite(duration_s)) or not (warmup_s >= 0 and math.isfinite(warmup_s)):
            raise InputError("duration_s", "the window must be a positive number of seconds and the warm-up >= 0")
        if not 0 < time_scale <= 1e4:
            raise InputError("time_scale", f"must be in (0, 10000], got {time_scale!r}")
        self.gpus = _gpu_list(gpus)
        self.duration_s, self.warmup_s, self.seed = float(duration_s), float(warmup_s), int(seed)
        self.time_scale = float(time_scale)
        self.model_config = read_json(model_config, field="model_config") if isinstance(model_config, str) \
            else model_config
        self.health_timeout_s = float(health_timeout_s)
        self.cache = cache
        self.calls = 0  # benchmarks actually run

    def describe(self) -> dict:
        return {"name": self.name, "launch": self.launch, "duration_s": self.duration_s, "warmup_s": self.warmup_s,
                "seed": self.seed, "time_scale": self.time_scale}

    def predict(self, query: GpuQuery) -> Prediction:
        return self.predict_many([query])[0]

    def predict_many(self, queries: Sequence[GpuQuery]) -> list[Prediction]:
        answers: dict[GpuQuery, Prediction] = {}
        todo = []
        for q in dict.fromkeys(queries):
            hit = self._cached(q)
            if hit is not None:
                answers[q] = hit
            else:
                todo.append(q)
        if todo:
            free: queue.Queue = queue.Queue()
            for g in self.gpus:
                free.put(g)

            def run(q: GpuQuery) -> Prediction:
                gpu = free.get()
                try:
                    return self._measure(q, gpu)
                finally:
                    free.put(gpu)

            with ThreadPoolExecutor(max_workers=max(1, len(self.gpus))) as pool:
                for q, p in zip(todo, pool.map(run, todo)):
                    answers[q] = p
        return [answers[q] for q in queries]

    def _measure(self, q: GpuQuery, gpu: int | None) -> Prediction:
        from ..live.session import launch_and_bench

        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        sc = q.scenario(self.duration_s, self.seed, self.warmup_s)
        self.calls += 1
        res = launch_and_bench(sc, q.profile, self.launch, time_scale=self.time_scale, model_config=self.model_config,
                               health_timeout_s=self.health_timeout_s, env=env)
        if res.partial:
            raise PackerError(f"the vllm benchmark stopped early: {res.error}")
        r = res.result
        warnings = ("the benchmark client fell behind its schedule: latencies include its delay",) \
            if res.client.get("behind_schedule") else ()
        if r.memory_error:
            p = Prediction(predictor=self.name, starved=False, memory_error=r.memory_error, throughput_tps=None,
                           offered_tps=q.offered_tps, warnings=warnings)
        else:
            p = Prediction(predictor=self.name, starved=bool(r.starved), memory_error=None,
                           throughput_tps=r.throughput_tps, offered_tps=r.offered_tps, mean_itl_ms=_finite(r.mean_itl_ms),
                           p99_ttft_ms=_finite(r.p99_ttft_ms), warnings=warnings, mean_ttft_ms=_finite(r.mean_ttft_ms),
                           p99_tpot_ms=_finite(r.p99_tpot_ms),
                           worst_adapter_p99_ttft_ms=_finite(r.worst_adapter_p99_ttft_ms))
        if self.cache:
            path = self._path(q)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, p.to_dict())
        return p

    def _path(self, q: GpuQuery) -> Path:
        blob = json.dumps({"predictor": self.describe(), "profile": q.profile.fingerprint(),
                           "server": q.server.model_dump(), "ranks": q.ranks, "rates": q.rates,
                           "lengths": q.lengths.model_dump(), "arrivals": q.arrivals.model_dump()},
                          sort_keys=True, default=str)
        return cache_root() / "vllm" / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.json"

    def _cached(self, q: GpuQuery) -> Prediction | None:
        path = self._path(q)
        if not self.cache or not path.is_file():
            return None
        try:
            d = read_json(path, field="cache", allow_nan=True)
            return Prediction(**{**d, "warnings": tuple(d.get("warnings") or ()),
                                 "slo_misses": tuple(d.get("slo_misses") or ())})
        except (InputError, TypeError):
            return None  # unreadable: measured again


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _gpu_list(gpus: Sequence[int] | str | None) -> list[int | None]:
    if gpus is None or gpus == "":
        return [None]  # one server at a time, on whatever the template gives it
    if isinstance(gpus, str):
        try:
            gpus = [int(g) for g in gpus.split(",")]
        except ValueError:
            raise InputError("gpus", f"{gpus!r}: expected GPU indices like 0,1,2,3") from None
    out = [int(g) for g in gpus]
    if any(g < 0 for g in out) or len(set(out)) != len(out):
        raise InputError("gpus", f"{list(gpus)}: GPU indices must be distinct and non-negative")
    return out


PREDICTORS.register("vllm", VllmPredictor, summary="a live benchmark on vLLM (or any server a launch template starts)")
