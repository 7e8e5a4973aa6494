"""Measuring a capacity table with a predictor: a bracketed search per rank class and adapter count.

This module is the measurement itself (its code keys the cache, with ``table.py``); ``build.py`` runs it
for the rank classes a table lacks, on an executor, through the cache."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..model import ArrivalSpec, LengthSpec, ServerDefaults
from ..predictors.base import GpuQuery, Predictor
from ..profile import Profile
from .table import GpuConfig

__all__: list[str] = []  # used by build.py


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
