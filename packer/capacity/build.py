"""Building a capacity table: the rank classes the cache lacks are measured (``search.py``), on one
executor (``packer.executor``), and stored back in the cache."""

from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import Callable, Iterable

from ..errors import InputError
from ..executor import map_jobs, open_executor
from ..model import ArrivalSpec, LengthSpec, ServerDefaults, rank_class
from ..predictors.base import Predictor
from ..profile import Profile, load_profile
from .cache import cache_key, read_cached, write_cached
from .search import _covers, _measure_class, _monotone, _SearchSpec
from .table import CapacityModel, GpuConfig, count_grid

__all__ = ["build_capacity_model"]


def build_capacity_model(predictor: Predictor, profile: str | Profile, lengths: LengthSpec, arrivals: ArrivalSpec,
                         base: ServerDefaults, ranks: Iterable[int], max_count: int, *, min_load_tps: float = 0.0,
                         tolerance: float = 0.02,
                         workers: int | None = None, cache: bool = True,
                         progress: Callable[[str], None] | None = None, executor: "str | Executor | None" = None,
                         ray_address: str | None = None) -> CapacityModel:
    """Measure the capacity table for the rank classes of ``ranks`` and counts up to ``max_count``."""
    prof = load_profile(profile)
    classes = sorted({rank_class(r) for r in ranks})
    grid = count_grid(max(1, int(max_count)))
    tokens = lengths.input_mean + lengths.output_mean
    jobs = []
    table: dict[int, tuple[GpuConfig, ...]] = {}
    for R in classes:
        key = cache_key(predictor, prof, lengths, arrivals, base, R, tolerance)
        cached = read_cached(key, R, prof, base) if cache else None
        if cached is not None and _covers(cached, grid, min_load_tps):
            table[R] = _monotone([cached[n] for n in grid if n in cached])
        else:
            jobs.append((R, key, cached or {}))
    if jobs:
        spec = _SearchSpec(predictor, prof, lengths, arrivals, base, tolerance, tokens)
        n_workers = min(len(jobs), workers or os.cpu_count() or 1)
        how = executor if executor is not None else ("process" if n_workers > 1 else "serial")
        if progress:
            progress(f"measuring GPU capacity for max_lora_rank {', '.join(str(j[0]) for j in jobs)} "
                     f"(up to {grid[-1]} adapters, {how if isinstance(how, str) else type(how).__name__}, "
                     f"{n_workers} worker{'s' if n_workers > 1 else ''})")
        with open_executor(how, n_workers, ray_address) as ex:
            results = map_jobs(ex, _measure_class, [(spec, R, grid, known, min_load_tps) for R, _, known in jobs])
        for (R, key, known), measured in zip(jobs, results):
            if cache:
                write_cached(key, {**known, **measured})
            table[R] = _monotone([measured[n] for n in grid if n in measured])
    for R in classes:
        if not table[R] or table[R][0].capacity_tps <= 0:
            slo = getattr(predictor, "slo", None)
            if slo is not None:
                targets = ", ".join(f"{m} {v:g}" for m, v in slo.targets().items())
                raise InputError("slo", f"no {prof.name} server serving one adapter of rank {R} meets the SLO "
                                 f"({targets}) at any rate: relax the targets, or plan for a faster GPU")
            raise InputError("adapters", f"no {prof.name} server can serve an adapter of rank {R}: even with "
                             "max_loras=1 it does not start or keeps up with nothing; use lower ranks or a larger GPU")
        table[R] = tuple(c for c in table[R] if c.capacity_tps > 0)
    return CapacityModel(prof, lengths, arrivals, base, tokens, table)
