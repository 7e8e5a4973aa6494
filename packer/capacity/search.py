"""Measuring a capacity table with a predictor: a bracketed search per rank class and adapter count."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from ..errors import InputError
from ..executor import process_pool
from ..model import ArrivalSpec, LengthSpec, ServerDefaults, rank_class
from ..predictors.base import GpuQuery, Predictor
from ..profile import Profile, load_profile
from .cache import cache_key, read_cached, write_cached
from .table import CapacityModel, GpuConfig, count_grid

__all__ = ["build_capacity_model"]


def build_capacity_model(predictor: Predictor, profile: str | Profile, lengths: LengthSpec, arrivals: ArrivalSpec,
                         base: ServerDefaults, ranks: Iterable[int], max_count: int, *, min_load_tps: float = 0.0,
                         tolerance: float = 0.02,
                         workers: int | None = None, cache: bool = True,
                         progress: Callable[[str], None] | None = None) -> CapacityModel:
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
        if progress:
            progress(f"measuring GPU capacity for max_lora_rank {', '.join(str(j[0]) for j in jobs)} "
                     f"(up to {grid[-1]} adapters, {n_workers} process{'es' if n_workers > 1 else ''})")
        if n_workers > 1:
            with process_pool(n_workers) as pool:
                results = list(pool.map(_measure_class, [spec] * len(jobs), [j[0] for j in jobs],
                                        [grid] * len(jobs), [j[2] for j in jobs], [min_load_tps] * len(jobs)))
        else:
            results = [_measure_class(spec, R, grid, known, min_load_tps) for R, _, known in jobs]
        for (R, key, known), measured in zip(jobs, results):
            if cache:
                write_cached(key, {**known, **measured})
            table[R] = _monotone([measured[n] for n in grid if n in measured])
    for R in classes:
        if not table[R] or table[R][0].capacity_tps <= 0:
            raise InputError("adapters", f"no {prof.name} server can serve an adapter of rank {R}: even with "
                             "max_loras=1 it does not start or keeps up with nothing; use lower ranks or a larger GPU")
        table[R] = tuple(c for c in table[R] if c.capacity_tps > 0)
    return CapacityModel(prof, lengths, arrivals, base, tokens, table)


@dataclass(frozen=True)
class _SearchSpec:
    predictor: Predictor
    profile: Profile
    lengths: LengthSpec
    arrivals: ArrivalSpec
    base: ServerDefaults
    tolerance: float
    tokens_per_request: float

    def keeps_up(self, R: int, n: int, A: int, total_rate: float) -> bool:
        if total_rate <= 0:
            return True
        q = GpuQuery(self.profile, self.base.server(A, R), (R,) * n, (total_rate / n,) * n,
                     self.lengths, self.arrivals)
        return self.predictor.predict(q).keeps_up

    def max_loras_limit(self, R: int) -> int:
        return self.profile.memory.max_loras_that_start(R, self.base.gpu_memory_utilization)


def _measure_class(spec: _SearchSpec, R: int, grid: Sequence[int], known: dict[int, GpuConfig],
                   min_load_tps: float = 0.0) -> dict[int, GpuConfig]:
    """Capacity entries of one rank class for the grid counts (reusing ``known`` ones).

    Stops early once ``count * min_load_tps`` exceeds the capacity: no GPU can hold that many."""
    a_limit = spec.max_loras_limit(R)
    step = 1.0 - spec.tolerance
    out: dict[int, GpuConfig] = {}
    rate = None  # the previous count's capacity (req/s): capacity only falls with the count
    slots_per_adapter = 1.0  # the previous count's best max_loras / count
    for n in grid:
        if n in known:
            out[n] = known[n]
            rate = known[n].capacity_tps / spec.tokens_per_request
            slots_per_adapter = known[n].max_loras / n
        elif a_limit == 0 or rate == 0.0:
            out[n] = GpuConfig(R, n, 1, 0.0)
            rate = 0.0
        else:
            top = min(n, a_limit)
            A = max(1, min(top, round(slots_per_adapter * n)))

            def ok_at(A: int) -> Callable[[float], bool]:
                return lambda x: spec.keeps_up(R, n, A, x)

            rate = _search_down(ok_at(A), rate, step) if rate else _max_rate(ok_at(A), spec.tolerance)
            # Neighbouring slot counts: fewer slots leave more KV and cost less per token, but
            # adapters contend for them. Move while a neighbour sustains one tolerance step more.
            for direction in (4 / 3, 0.75):
                moved = False
                while rate > 0:
                    B = min(top, max(1, int(A * direction))) if n > 8 else top
                    if B == A or not ok_at(B)(rate / step):
                        break
                    A, rate, moved = B, _search_up(ok_at(B), rate / step, 1.0 / step), True
                if moved:
                    break
            slots_per_adapter = A / n
            out[n] = GpuConfig(R, n, A, rate * spec.tokens_per_request)
        if n * min_load_tps > out[n].capacity_tps:
            break
    return out


def _covers(known: dict[int, GpuConfig], grid: Sequence[int], min_load_tps: float) -> bool:
    """Whether cached entries answer every grid count that a GPU could hold."""
    for n in grid:
        if n not in known:
            return False
        if n * min_load_tps > known[n].capacity_tps:
            return True
    return True


def _search_down(ok: Callable[[float], bool], start: float, factor: float) -> float:
    """The first of start, start*factor, start*factor^2, ... with ok() (0 if none above 1e-6)."""
    x = start
    while x > 1e-6:
        if ok(x):
            return x
        x *= factor
    return 0.0


def _search_up(ok: Callable[[float], bool], start: float, factor: float) -> float:
    """The last of start, start*factor, ... with ok(), given ok(start)."""
    x = start
    while x < 1e7 and ok(x * factor):
        x *= factor
    return x


def _max_rate(ok: Callable[[float], bool], tol: float) -> float:
    """The largest x with ok(x), for ok monotone (true below a threshold), to relative ``tol``."""
    lo, hi = 0.0, 1.0
    while ok(hi):
        lo, hi = hi, hi * 2.0
        if hi > 1e7:
            return lo
    if lo == 0.0:
        lo = _search_down(ok, hi / 2, 0.5)
        if lo == 0.0:
            return 0.0
    while hi - lo > tol * lo:
        mid = math.sqrt(lo * hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _monotone(entries: Sequence[GpuConfig]) -> tuple[GpuConfig, ...]:
    """Make capacity non-increasing in the adapter count (a running minimum)."""
    out, cap = [], math.inf
    for c in entries:
        if c.capacity_tps < cap:
            cap = c.capacity_tps
            out.append(c)
        else:
            out.append(GpuConfig(c.max_lora_rank, c.max_adapters, c.max_loras, cap))
    return tuple(out)
