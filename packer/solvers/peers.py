"""The peers' placement methods (background §7), re-implemented from their published descriptions.

- ``loraserve``: per-rank operating points OP_r (what one GPU sustains with one adapter of rank class r,
  from packer's own capacity model, i.e. its predictor); rank utilisation U_r = sum of demand / OP_r; the
  G GPUs apportioned to ranks by largest remainder on U_r; within a rank, items by descending demand
  poured into the least-loaded GPU; ``max_loras`` = adapters on the GPU (within the memory limit).
- ``dlora``: proactive placement maximising burst tolerance with free KV memory as the proxy: items by
  descending rate, each to the GPU with the most free KV tokens per expected request after adding it;
  uniform routing over an adapter's replicas; ``max_loras`` = adapters on the GPU.

Fractional packing works at the granularity the ``Assignment`` carries: the problem's items, i.e. whole
adapters and the equal replicas ``make_items`` made of hot ones (so loraserve's shares, and dLoRA's
routing, are equal over an adapter's replicas; neither creates new fractions).

For a fair comparison each searches its own smallest GPU count G: from a load bound upwards, the first G
whose every GPU fits the capacity table and keeps up on ``problem.predictor`` (the twin in default runs).
Predictor calls are bounded by ``time_limit_s`` as in ``ladder``; out of time, the first G that fits the
capacity table is kept (status ``time_limit``). Min-GPUs only.
"""

from __future__ import annotations

import math
import time

from ..errors import InputError
from ..model import rank_class
from ..profile import load_profile
from .base import SOLVERS, Assignment, Objective, PlacementProblem, Solver, SolveStatus, bin_config
from .ladder import _Budget, _config, _memory_limit, _OutOfTime
from ..predictors.base import GpuQuery

__all__ = ["LoraServeSolver", "DLoraSolver", "largest_remainder"]


def largest_remainder(weights: dict, total: int) -> dict:
    """``total`` seats apportioned to the keys of ``weights`` by largest remainder (ties by key); every key
    with positive weight gets at least one seat when ``total`` allows."""
    keys = sorted(weights)
    s = sum(weights.values())
    if total <= 0 or s <= 0:
        return {k: 0 for k in keys}
    quota = {k: weights[k] / s * total for k in keys}
    seats = {k: int(math.floor(quota[k])) for k in keys}
    for k in sorted(keys, key=lambda k: (-(quota[k] - seats[k]), k))[:total - sum(seats.values())]:
        seats[k] += 1
    for k in keys:  # a rank with demand and no seat takes one from the rank with the most
        if weights[k] > 0 and seats[k] == 0:
            donor = max(keys, key=lambda j: (seats[j], -keys.index(j)))
            if seats[donor] > 1:
                seats[donor] -= 1
                seats[k] += 1
    return seats


class _PeerSolver(Solver):
    """The G search shared by both peers: ``_place(problem, G)`` returns bins (lists of item indices) or None."""

    def _place(self, problem: PlacementProblem, G: int):
        raise NotImplementedError

    def _start(self, problem: PlacementProblem) -> int:
        top = max(problem.config_units(c) for c in problem.configs)
        copies: dict[str, int] = {}
        for it in problem.items:
            copies[it.adapter_id] = copies.get(it.adapter_id, 0) + 1
        return max(1, math.ceil(sum(it.units for it in problem.items) / max(top, 1)), max(copies.values()))

    def solve(self, problem: PlacementProblem) -> Assignment:
        t0 = time.perf_counter()
        if problem.objective is not Objective.MIN_GPUS:
            raise InputError("objective", f"the {self.name} solver only minimises GPUs; use greedy, cpsat or milp "
                             "for min_latency")
        budget = _Budget(t0, problem.time_limit_s)
        limits: dict[int, int] = {}
        fallback, status, message, tried = None, SolveStatus.FEASIBLE, "", 0
        chosen = None
        for G in range(self._start(problem), len(problem.items) + 1):
            bins = self._place(problem, G)
            if bins is None or any(bin_config(problem, b) is None for b in bins):
                continue
            if fallback is None:
                fallback = bins
            tried += 1
            try:
                if all(self._keeps_up(problem, budget, b, limits) for b in bins):
                    chosen = bins
                    break
            except _OutOfTime:
                status = SolveStatus.TIME_LIMIT
                message = (f"{self.name} stopped at the time limit ({problem.time_limit_s:g}s) after {budget.calls} "
                           f"predictor calls; kept the first GPU count that fits the capacity table")
                break
        if chosen is None and fallback is None:
            bad = next((i for i in range(len(problem.items)) if bin_config(problem, [i]) is None), None)
            what = (f"item {bad} ({problem.items[bad].adapter_id!r}) fits no GPU of the capacity model" if bad is not None
                    else "no GPU count up to one per item fits the capacity model")
            return Assignment((), (), SolveStatus.INFEASIBLE, message=f"{self.name}: {what}",
                              details={"wall_seconds": time.perf_counter() - t0, "predictor_calls": budget.calls})
        if chosen is None:
            chosen = fallback
            if status is SolveStatus.FEASIBLE:
                message = f"{self.name}: no GPU count passed the predictor; kept the first that fits the capacity table"
        bins = tuple(tuple(sorted(b)) for b in chosen)
        configs = tuple(self._gpu_config(problem, b, limits) for b in bins)
        end = time.perf_counter()
        return Assignment(bins, configs, status, objective_value=len(bins), message=message,
                          details={"wall_seconds": end - t0, "predictor_calls": budget.calls,
                                   "gpu_counts_tried": tried})

    def _gpu_config(self, problem, members, limits):
        """The capacity table's config for the GPU where its max_loras covers every adapter on it (the planner
        then sets max_loras = adapters on the GPU), else the adapter count within the memory limit."""
        c = bin_config(problem, members)
        if c is not None and c.max_loras >= len(members):
            return c
        return _config(problem, members, self._max_loras(problem, members, limits))

    def _max_loras(self, problem, members, limits) -> int:
        R = rank_class(max(problem.items[i].rank for i in members))
        if R not in limits:
            limits[R] = _memory_limit(problem, R)
        return max(1, min(len(members), limits[R]))

    def _keeps_up(self, problem, budget, members, limits) -> bool:
        its = [problem.items[i] for i in members]
        R = rank_class(max(it.rank for it in its))
        a = self._max_loras(problem, members, limits)
        cm = problem.capacity
        q = GpuQuery(cm.profile, cm.base.server(a, R, max(a, len(its))), tuple(it.rank for it in its),
                     tuple(it.rate for it in its), cm.lengths, cm.arrivals)
        return budget.predict(problem, q).keeps_up


class LoraServeSolver(_PeerSolver):
    """LoRAServe as published: per-rank operating points, largest-remainder GPUs per rank, least-loaded pouring."""

    name = "loraserve"

    def operating_points(self, problem: PlacementProblem) -> dict[int, float]:
        """OP_r: tokens/s one GPU sustains with one adapter of rank class r (packer's capacity model)."""
        out = {}
        for R in sorted({it.rank_class for it in problem.items}):
            c = problem.config_for(R, 1)
            out[R] = c.capacity_tps if c is not None else 0.0
        return out

    def apportion(self, problem: PlacementProblem, G: int) -> dict[int, int]:
        """GPUs per rank class: largest remainder on U_r = sum of demand / OP_r (sums to ``G``)."""
        op = self.operating_points(problem)
        u = {R: 0.0 for R in op}
        for it in problem.items:
            u[it.rank_class] += it.load_tps / op[it.rank_class] if op[it.rank_class] > 0 else math.inf
        return largest_remainder(u, G)

    def _start(self, problem):
        return max(super()._start(problem), len({it.rank_class for it in problem.items}))

    def _place(self, problem, G):
        seats = self.apportion(problem, G)
        bins = []
        for R in sorted(seats):
            members = [i for i, it in enumerate(problem.items) if it.rank_class == R]
            n = seats[R]
            if n == 0 or any(sum(1 for j in members if problem.items[j].adapter_id == problem.items[i].adapter_id) > n
                             for i in members):
                return None
            group = [[] for _ in range(n)]
            load = [0] * n
            for i in sorted(members, key=lambda i: (-problem.items[i].units, i)):
                aid = problem.items[i].adapter_id
                g = min((g for g in range(n) if all(problem.items[j].adapter_id != aid for j in group[g])),
                        key=lambda g: (load[g], g))
                group[g].append(i)
                load[g] += problem.items[i].units
            bins.extend(b for b in group if b)
        return bins


class DLoraSolver(_PeerSolver):
    """dLoRA's proactive placement: most free KV memory per expected request; uniform routing over replicas."""

    name = "dlora"

    def _place(self, problem, G):
        mem = load_profile(problem.capacity.profile).memory
        util = problem.capacity.base.gpu_memory_utilization
        group = [[] for _ in range(G)]
        rate = [0.0] * G
        top = [0] * G
        for i in sorted(range(len(problem.items)), key=lambda i: (-problem.items[i].rate, i)):
            it = problem.items[i]
            best, score = None, -math.inf
            for g in range(G):
                if any(problem.items[j].adapter_id == it.adapter_id for j in group[g]):
                    continue
                R = max(top[g], it.rank_class)
                free = mem.kv_tokens(len(group[g]) + 1, R, util, True)
                s = free / (rate[g] + it.rate) if rate[g] + it.rate > 0 else math.inf
                if s > score:
                    best, score = g, s
            if best is None:
                return None
            group[best].append(i)
            rate[best] += it.rate
            top[best] = max(top[best], it.rank_class)
        return [b for b in group if b]


SOLVERS.register("loraserve", LoraServeSolver, summary="LoRAServe as published (peer baseline, own smallest G)")
SOLVERS.register("dlora", DLoraSolver, summary="dLoRA's proactive placement as published (peer baseline, own smallest G)")
