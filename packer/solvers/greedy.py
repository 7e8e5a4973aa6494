"""``greedy``: first-fit / best-fit decreasing on the shared capacity model.

Every adapter count is a checkpoint: an item joins a GPU when the capacity model says the GPU, with
its new count and largest rank, still keeps up. Each GPU's ``max_loras`` follows from its final
count and rank (the capacity table's choice). Four passes (first fit and best fit, items by load or
by rank class then load) run in microseconds each; the one with the fewest GPUs wins.

For ``min_latency`` the budget's GPUs are filled largest item first, each into the GPU whose
utilisation (load over capacity) stays lowest.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .base import SOLVERS, Assignment, Objective, PlacementProblem, Solver, SolveStatus, bin_config, utilisation

__all__ = ["GreedySolver", "CapacityLookup"]


class CapacityLookup:
    """Dense capacity (``PlacementProblem.config_units``) by rank-class index and adapter count: O(1)
    fit checks that agree with ``PlacementProblem.fits``. ``NO_FIT`` (-1): no config holds that count."""

    NO_FIT = -1

    def __init__(self, problem: PlacementProblem):
        self.problem = problem
        self.classes = list(problem.capacity.rank_classes)
        max_n = max(len(problem.items), 1)
        self.units = np.full((len(self.classes), max_n + 1), self.NO_FIT, dtype=np.int64)
        for k, R in enumerate(self.classes):
            for n in range(1, max_n + 1):
                c = problem.config_for(R, n)
                self.units[k, n] = problem.config_units(c) if c is not None else self.NO_FIT
        self.item_class = [self.classes.index(it.rank_class) for it in problem.items]

    def cap(self, k: int, n: int) -> int:
        return int(self.units[k, n]) if n < self.units.shape[1] else self.NO_FIT

    def fits(self, k: int, n: int, units: int) -> bool:
        """Whether ``n`` items of largest rank-class index ``k`` and total ``units`` fit one GPU."""
        cap = self.cap(k, n)
        return cap != self.NO_FIT and units <= cap


class GreedySolver(Solver):
    """First-fit / best-fit decreasing on the capacity model (the default solver)."""

    name = "greedy"

    def solve(self, problem: PlacementProblem) -> Assignment:
        t0 = time.perf_counter()
        look = CapacityLookup(problem)
        t_look = time.perf_counter()
        n = len(problem.items)
        too_big = next((i for i in range(n) if not look.fits(look.item_class[i], 1, problem.items[i].units)), None)
        if too_big is not None:
            it = problem.items[too_big]
            alone = max(look.cap(look.item_class[too_big], 1), 0)
            return Assignment((), (), SolveStatus.INFEASIBLE, message=(
                f"item {it.adapter_id} ({it.units} load units) exceeds one GPU of max_lora_rank {it.rank_class} "
                f"({alone} units) on the capacity model; it needs more replicas"),
                details=_details(t0, t_look))
        by_load = list(range(n))  # items come sorted by load, descending
        by_rank = sorted(by_load, key=lambda i: (-look.item_class[i], -problem.items[i].units, i))
        if problem.objective is Objective.MIN_LATENCY:
            budget = problem.gpus or 0
            bins = _balance(look, by_load, budget)
            if bins is None:  # largest-first balancing can jam where packing fits: start from a packing
                packed = min((_pack(look, o, bf) for o in (by_load, by_rank) for bf in (False, True)), key=len)
                bins = packed if len(packed) <= budget else None
            if bins is not None:
                bins = _improve_balance(look, bins, budget)
            if bins is None:
                return Assignment((), (), SolveStatus.INFEASIBLE, message=f"the items do not fit on {budget} GPUs "
                                  "on the capacity model", details=_details(t0, t_look))
            return _assignment(problem, bins, SolveStatus.FEASIBLE, t0, t_look)
        best = None
        for order in (by_load, by_rank):
            for best_fit in (False, True):
                bins = _pack(look, order, best_fit)
                if best is None or len(bins) < len(best):
                    best = bins
        return _assignment(problem, best, SolveStatus.FEASIBLE, t0, t_look)


def _pack(look: CapacityLookup, order: list[int], best_fit: bool) -> list[list[int]]:
    """First fit (or best fit: the fullest GPU that fits) in ``order``."""
    items = look.problem.items
    bins: list[list[int]] = []
    cls: list[int] = []
    load: list[int] = []
    ids: list[set[str]] = []
    for i in order:
        u, k = items[i].units, look.item_class[i]
        chosen, slack_best = -1, math.inf
        for g in range(len(bins)):
            if items[i].adapter_id in ids[g]:
                continue  # replicas apart (a GPU of a larger rank class could hold two)
            kk = max(cls[g], k)
            cap = look.cap(kk, len(bins[g]) + 1)
            slack = cap - load[g] - u
            if cap != look.NO_FIT and slack >= 0:
                if not best_fit:
                    chosen = g
                    break
                if slack < slack_best:
                    chosen, slack_best = g, slack
        if chosen < 0:  # a new GPU: GreedySolver.solve has checked that every item fits one alone
            bins.append([i])
            cls.append(k)
            load.append(u)
            ids.append({items[i].adapter_id})
        else:
            bins[chosen].append(i)
            cls[chosen] = max(cls[chosen], k)
            load[chosen] += u
            ids[chosen].add(items[i].adapter_id)
    return bins


def _balance(look: CapacityLookup, order: list[int], budget: int) -> list[list[int]] | None:
    """Largest item first into the GPU whose utilisation stays lowest; None if one fits nowhere."""
    items = look.problem.items
    bins: list[list[int]] = [[] for _ in range(budget)]
    cls = [0] * budget
    load = [0] * budget
    for i in order:
        u, k = items[i].units, look.item_class[i]
        chosen, util_best = -1, math.inf
        for g in range(budget):
            if any(items[j].adapter_id == items[i].adapter_id for j in bins[g]):
                continue  # replicas apart
            kk = max(cls[g], k) if bins[g] else k
            cap = look.cap(kk, len(bins[g]) + 1)
            if not look.fits(kk, len(bins[g]) + 1, load[g] + u):
                continue
            util = (load[g] + u) / max(cap, 1)
            if util < util_best - 1e-12:
                chosen, util_best = g, util
        if chosen < 0:
            return None
        bins[chosen].append(i)
        cls[chosen] = max(cls[chosen], k) if len(bins[chosen]) > 1 else k
        load[chosen] += u
    return [b for b in bins if b]


def _bin_util(look: CapacityLookup, members: list[int]) -> float:
    if not members:
        return 0.0
    k = max(look.item_class[i] for i in members)
    load = sum(look.problem.items[i].units for i in members)
    return load / max(look.cap(k, len(members)), 1) if look.fits(k, len(members), load) else math.inf


def _improve_balance(look: CapacityLookup, bins: list[list[int]], budget: int) -> list[list[int]]:
    """Move items off the most utilised GPU (onto any GPU of the budget) while that lowers the
    larger of the two GPUs' utilisations."""
    bins = [list(b) for b in bins] + [[] for _ in range(budget - len(bins))]
    items = look.problem.items
    for _ in range(10 * sum(len(b) for b in bins) + 10):
        utils = [_bin_util(look, b) for b in bins]
        g = max(range(len(bins)), key=lambda x: (utils[x], -x))
        best = None
        for i in sorted(bins[g], key=lambda i: (-items[i].units, i)):
            rest = [j for j in bins[g] if j != i]
            u_rest = _bin_util(look, rest)
            for h in range(len(bins)):
                if h == g or any(items[j].adapter_id == items[i].adapter_id for j in bins[h]):
                    continue
                u_new = _bin_util(look, bins[h] + [i])
                worst = max(u_rest, u_new)
                if worst < utils[g] - 1e-12 and (best is None or worst < best[0] - 1e-12):
                    best = (worst, i, h)
        if best is None:
            break
        _, i, h = best
        bins[g].remove(i)
        bins[h].append(i)
    return [b for b in bins if b]


def _details(t0: float, t_look: float) -> dict:
    """Wall time and phases: ``lookup`` (the capacity lookup table) and ``search`` (the packing passes)."""
    now = time.perf_counter()
    return {"wall_seconds": now - t0, "phases": {"lookup": t_look - t0, "search": now - t_look}}


def _assignment(problem: PlacementProblem, bins: list[list[int]], status: SolveStatus, t0: float,
                t_look: float) -> Assignment:
    configs = tuple(bin_config(problem, b) for b in bins)
    if any(c is None for c in configs):  # pragma: no cover - the packers only build fitting bins
        raise AssertionError("greedy built a GPU that does not fit the capacity model")
    value = (len(bins) if problem.objective is Objective.MIN_GPUS
             else max((utilisation(problem, b) for b in bins), default=0.0))
    return Assignment(tuple(tuple(b) for b in bins), configs, status, objective_value=value,
                      details=_details(t0, t_look))


SOLVERS.register("greedy", GreedySolver, summary="first-fit/best-fit decreasing on the capacity model (default)")
