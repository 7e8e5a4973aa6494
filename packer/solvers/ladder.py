"""``ladder``: the published greedy (Agulló et al., background §3), re-implemented as a reference.

Adapters are grouped by rank (largest first) and, within a group, interleaved heavy / light by
rate. A GPU is filled and tested only at the checkpoints 8, 16, 32, 64, 96, 128, ... adapters (and
when the adapters run out). At each checkpoint ``max_loras`` may move one step up the ladder 8, 16,
32, 64, 96, 128, ... (bounded by the memory limit for the GPU's rank) if the predictor says that
serves more; the predictor then accepts or rejects the GPU. On rejection the adapters added since
the last accepted checkpoint go to the next GPU. It uses the predictor directly, not the capacity
model, with the capacity model's acceptance rule (``Prediction.keeps_up``) so its GPUs are judged like the
others'. It is a min-GPUs method only.

The time limit bounds the solve: before each predictor call the ladder checks that the call, as long
as the longest one so far, still ends within the limit; if not, it stops, and greedy places the adapters
it has not placed yet on the capacity model (status ``time_limit``). A first call longer than the whole
limit can still overrun it, by that one call.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..predictors.base import GpuQuery, Prediction
from .base import SOLVERS, Assignment, Objective, PlacementProblem, Solver, SolveStatus
from ..model import rank_class
from .greedy import GreedySolver

__all__ = ["LadderSolver", "checkpoints"]

FIRST_STEPS = (8, 16, 32, 64)
STEP_AFTER = 32


def checkpoints(limit: int) -> list[int]:
    """8, 16, 32, 64, 96, 128, ... up to ``limit`` (and ``limit`` itself)."""
    out = [c for c in FIRST_STEPS if c < limit]
    c = FIRST_STEPS[-1] + STEP_AFTER
    while c < limit:
        out.append(c)
        c += STEP_AFTER
    out.append(limit)
    return out


class _OutOfTime(Exception):
    """The next predictor call would end past the time limit."""


class _Budget:
    """Predictor calls against the time limit: the time they take and the longest one."""

    def __init__(self, t0: float, limit_s: float):
        self.deadline = t0 + limit_s
        self.longest = 0.0
        self.seconds = 0.0
        self.calls = 0

    def predict(self, problem: PlacementProblem, query: GpuQuery) -> Prediction:
        start = time.perf_counter()
        if start + self.longest > self.deadline:
            raise _OutOfTime
        pred = problem.predictor.predict(query)
        took = time.perf_counter() - start
        self.longest = max(self.longest, took)
        self.seconds += took
        self.calls += 1
        return pred


class LadderSolver(Solver):
    """The published checkpoint greedy with the max_loras ladder."""

    name = "ladder"

    def solve(self, problem: PlacementProblem) -> Assignment:
        t0 = time.perf_counter()
        if problem.objective is not Objective.MIN_GPUS:
            from ..errors import InputError
            raise InputError("objective", "the ladder solver only minimises GPUs; use greedy, cpsat or milp "
                             "for min_latency")
        order = _interleaved(problem)
        budget = _Budget(t0, problem.time_limit_s)
        bins, configs = [], []
        pos = 0
        status, message, t_fallback = SolveStatus.FEASIBLE, "", None
        try:
            while pos < len(order):
                accepted, accepted_a = 0, 0
                a_max = 8
                remaining = len(order) - pos
                for cp in checkpoints(remaining):
                    members = order[pos:pos + cp]
                    R = rank_class(max(problem.items[i].rank for i in members))
                    limit = _memory_limit(problem, R)
                    a = min(a_max, limit, cp)
                    nxt = min(_ladder_next(a_max), limit, cp)
                    pred = self._predict(problem, budget, members, a, R)
                    if nxt > a:
                        up = self._predict(problem, budget, members, nxt, R)
                        if (up.throughput_tps or 0) > (pred.throughput_tps or 0):
                            a_max, a, pred = _ladder_next(a_max), nxt, up
                    if pred.keeps_up:
                        accepted, accepted_a = cp, a
                    else:
                        break
                if accepted == 0:
                    # Not even the first checkpoint: fall back to the largest prefix that keeps up alone.
                    accepted, accepted_a = self._shrink(problem, budget, order[pos:pos + min(8, remaining)])
                members = order[pos:pos + accepted]
                bins.append(tuple(members))
                configs.append(_config(problem, members, accepted_a))
                pos += accepted
        except _OutOfTime:
            t_fallback = time.perf_counter()
            rest = sorted(order[pos:])  # the items' order: by load, descending, as greedy expects
            placed_by_ladder = len(bins)
            for members, config in _greedy_rest(problem, rest):
                bins.append(members)
                configs.append(config)
            status = SolveStatus.TIME_LIMIT
            message = (f"ladder stopped at the time limit ({problem.time_limit_s:g}s) after {placed_by_ladder} "
                       f"GPUs and {budget.calls} predictor calls; greedy placed the other {len(rest)} items")
        end = time.perf_counter()
        phases = {"predict": budget.seconds, "search": (t_fallback or end) - t0 - budget.seconds}
        if t_fallback is not None:
            phases["fallback"] = end - t_fallback
        return Assignment(tuple(bins), tuple(configs), status, objective_value=len(bins), message=message,
                          details={"wall_seconds": end - t0, "predictor_calls": budget.calls, "phases": phases})

    def _predict(self, problem: PlacementProblem, budget: _Budget, members, max_loras: int, R: int) -> Prediction:
        its = [problem.items[i] for i in members]
        cm = problem.capacity
        q = GpuQuery(cm.profile, cm.base.server(max_loras, R, max(max_loras, len(its))),
                     tuple(it.rank for it in its), tuple(it.rate for it in its), cm.lengths, cm.arrivals)
        return budget.predict(problem, q)

    def _shrink(self, problem: PlacementProblem, budget: _Budget, members) -> tuple[int, int]:
        for k in range(len(members), 0, -1):
            R = rank_class(max(problem.items[i].rank for i in members[:k]))
            a = min(k, _memory_limit(problem, R))
            if self._predict(problem, budget, members[:k], a, R).keeps_up:
                return k, a
        return 1, 1  # a single item always goes somewhere; verification reports it


def _greedy_rest(problem: PlacementProblem, rest: list[int]):
    """(members, config) per GPU for the items ``rest`` (indices into ``problem.items``), placed by greedy
    on the capacity model; one item per GPU where greedy finds no placement (verification reports it)."""
    if not rest:
        return []
    sub = replace(problem, items=tuple(problem.items[i] for i in rest))
    a = GreedySolver().solve(sub)
    if a.status is SolveStatus.INFEASIBLE:
        return [((i,), _config(problem, [i], 1)) for i in rest]
    return [(tuple(rest[j] for j in members), config) for members, config in zip(a.bins, a.configs)]


def _interleaved(problem: PlacementProblem) -> list[int]:
    """Rank groups, largest rank first; within a group heavy, light, heavy, light ... by rate."""
    groups: dict[int, list[int]] = {}
    for i, it in enumerate(problem.items):
        groups.setdefault(it.rank, []).append(i)
    out: list[int] = []
    for rank in sorted(groups, reverse=True):
        g = sorted(groups[rank], key=lambda i: (-problem.items[i].rate, i))
        lo, hi = 0, len(g) - 1
        while lo <= hi:
            out.append(g[lo])
            if lo != hi:
                out.append(g[hi])
            lo, hi = lo + 1, hi - 1
    return out


def _ladder_next(a: int) -> int:
    """The ladder step above ``a``: 8, 16, 32, 64, then every STEP_AFTER."""
    for s in FIRST_STEPS:
        if s > a:
            return s
    return a + STEP_AFTER


def _memory_limit(problem: PlacementProblem, R: int) -> int:
    prof = problem.capacity
    from ..profile import load_profile
    mem = load_profile(prof.profile).memory
    util = prof.base.gpu_memory_utilization
    a = 1
    for s in checkpoints(4096):
        if mem.startup_error(s, R, util, True) is None:
            a = s
    return a


def _config(problem: PlacementProblem, members, max_loras: int):
    from ..capacity import GpuConfig
    R = rank_class(max(problem.items[i].rank for i in members))
    return GpuConfig(R, len(members), max(1, max_loras), float("nan"))


SOLVERS.register("ladder", LadderSolver, summary="the published checkpoint greedy (reference, predictor in the loop)")
