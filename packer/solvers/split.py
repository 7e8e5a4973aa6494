"""``greedy-split``: greedy packing where the solver chooses each hot adapter's replica split.

``make_items`` splits an adapter too hot for one GPU into k equal replicas before any solver runs. This
solver re-splits every such adapter into uneven *shares*, each at least ``min_share`` (default 5 %) of
what one GPU of the adapter's rank class sustains for it alone (``CapacityModel.max_single_load``), and
keeps the fewest GPUs over three candidate packings (ties: the fewest shares, then the order below):

1. ``equal``: greedy on the problem's equal replicas (so this solver never needs more GPUs than greedy);
2. ``full``: each hot adapter as ``ceil(load / single)`` shares, the fewest possible: full GPUs of one
   adapter each, and one remainder share packed by greedy with the other adapters;
3. ``fill``: the other adapters packed by greedy first, then each hot adapter (heaviest first) poured
   into the open GPUs' residual capacity (largest residual first, a GPU at most one share of it), the
   rest on full new GPUs.

A remainder below the minimum takes load from its neighbour share (``min_share`` <= 0.5 keeps both at
the minimum or above). Shares are integer load units (``LOAD_UNIT``), so the answer fits the capacity
model with every solver's arithmetic; each share's rate is its fraction of the adapter's rate, and the
answer's ``items`` carry them (the routing weights follow from the shares). ``min_latency`` runs
``greedy`` on the equal replicas.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

from ..errors import InputError
from .base import (LOAD_UNIT, SOLVERS, Assignment, Item, Objective, PlacementProblem, Solver, SolveStatus, bin_config,
                   capacity_units, load_units)
from .greedy import CapacityLookup, GreedySolver, _pack

__all__ = ["GreedySplitSolver", "DEFAULT_MIN_SHARE", "share_units", "split_lower_bound"]

DEFAULT_MIN_SHARE = 0.05  # of one GPU's single-adapter capacity for the adapter's rank class


def share_units(total: int, parts: list[int], minimum: int) -> list[int] | None:
    """``parts`` (units, each >= ``minimum``) completed by a remainder so they sum to ``total``: the
    remainder is dropped when zero and, below ``minimum``, raised to it by taking from the last part
    (None when that leaves the last part below ``minimum`` or the parts exceed ``total``)."""
    rest = total - sum(parts)
    if rest < 0:
        return None
    out = list(parts)
    if rest == 0:
        return out
    if rest < minimum:
        if not out or out[-1] - (minimum - rest) < minimum:
            return None
        out[-1] -= minimum - rest
        rest = minimum
    return out + [rest]


class GreedySplitSolver(Solver):
    """Greedy with solver-chosen uneven replica splits (see the module docstring)."""

    name = "greedy-split"
    chooses_splits = True

    def __init__(self, min_share: float = DEFAULT_MIN_SHARE):
        if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 < min_share <= 0.5:
            raise InputError("min_share", f"expected a fraction of one GPU's capacity in (0, 0.5], got {min_share!r}; "
                             f"the default is {DEFAULT_MIN_SHARE}")
        self.min_share = float(min_share)

    def __repr__(self) -> str:
        return f"GreedySplitSolver(min_share={self.min_share:g})"

    def solve(self, problem: PlacementProblem) -> Assignment:
        t0 = time.perf_counter()
        equal = GreedySolver().solve(problem)
        if problem.objective is not Objective.MIN_GPUS or equal.status is SolveStatus.INFEASIBLE:
            return equal
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(problem.items):
            groups.setdefault(it.adapter_id, []).append(i)
        hot = [aid for aid, idx in groups.items() if len(idx) > 1]
        if not hot:
            return replace(equal, details={**equal.details, "split": _stats("equal", problem.items, {}, self.min_share)})
        adapters = {aid: _Adapter.of(problem, groups[aid]) for aid in hot}
        cold = [it for it in problem.items if it.adapter_id not in adapters]
        candidates = [("equal", problem.items, [list(b) for b in equal.bins])]
        for name, build in (("full", self._full), ("fill", self._fill)):
            got = build(problem, adapters, cold)
            if got is not None:
                candidates.append((name, *got))
        best = None
        for rank, (name, items, bins) in enumerate(candidates):
            p = replace(problem, items=tuple(items))
            if sorted(i for b in bins for i in b) != list(range(len(items))) or any(
                    bin_config(p, b) is None for b in bins):  # pragma: no cover - each item once, each GPU fits
                raise AssertionError(f"greedy-split's {name} candidate misplaced an item or overfilled a GPU")
            key = (len(bins), len(items), rank)
            if best is None or key < best[0]:
                best = (key, name, items, bins)
        _, name, items, bins = best
        items, bins = _sorted(items, bins)
        p = replace(problem, items=items)
        configs = tuple(bin_config(p, b) for b in bins)
        now = time.perf_counter()
        return Assignment(tuple(tuple(b) for b in bins), configs, SolveStatus.FEASIBLE, objective_value=len(bins),
                          items=items if name != "equal" else None,
                          details={"wall_seconds": now - t0, "phases": {"search": now - t0},
                                   "split": _stats(name, items, adapters, self.min_share)})

    # ---- the candidates ------------------------------------------------------------------------------

    def _minimum(self, a: "_Adapter") -> int:
        return max(1, math.ceil(self.min_share * a.single - 1e-9))

    def _full(self, problem: PlacementProblem, adapters: dict, cold: list[Item]):
        """Full single-adapter GPUs and one remainder share per hot adapter; remainders packed with the rest."""
        items: list[Item] = []
        full_bins: list[list[int]] = []
        for a in adapters.values():
            m = a.units // a.single
            units = share_units(a.units, [a.single] * m, self._minimum(a))
            if units is None:
                return None
            shares = a.shares(units)
            for s in shares[:m]:
                full_bins.append([len(items)])
                items.append(s)
            items.extend(shares[m:])
        items.extend(cold)
        p = replace(problem, items=tuple(items))
        look = CapacityLookup(p)
        alone = {b[0] for b in full_bins}
        rest = sorted((i for i in range(len(items)) if i not in alone), key=lambda i: (-items[i].units, i))
        by_rank = sorted(rest, key=lambda i: (-look.item_class[i], -items[i].units, i))
        packed = min((_pack(look, o, bf) for o in (rest, by_rank) for bf in (False, True)), key=len)
        return items, full_bins + packed

    def _fill(self, problem: PlacementProblem, adapters: dict, cold: list[Item]):
        """The other adapters packed first; each hot adapter poured into the residual capacity, then new GPUs."""
        items = list(cold)
        bins: list[list[int]] = []
        if cold:
            look = CapacityLookup(replace(problem, items=tuple(cold)))
            order = list(range(len(cold)))
            by_rank = sorted(order, key=lambda i: (-look.item_class[i], -cold[i].units, i))
            bins = min((_pack(look, o, bf) for o in (order, by_rank) for bf in (False, True)), key=len)
        classes = list(problem.capacity.rank_classes)
        cap_cache: dict[tuple[int, int], int] = {}

        def cap(k: int, n: int) -> int:
            if (k, n) not in cap_cache:
                c = problem.config_for(classes[k], n)
                cap_cache[k, n] = problem.config_units(c) if c is not None else -1
            return cap_cache[k, n]

        for a in sorted(adapters.values(), key=lambda a: (-a.units, a.id)):
            k_a = classes.index(a.rank_class)
            minimum = self._minimum(a)
            residual = []
            for g, b in enumerate(bins):
                k = max([k_a] + [classes.index(items[i].rank_class) for i in b])
                c = cap(k, len(b) + 1)
                room = c - sum(items[i].units for i in b) if c >= 0 else -1
                if room >= minimum:
                    residual.append((room, g))
            residual.sort(key=lambda x: (-x[0], x[1]))
            parts: list[int] = []
            where: list[int] = []
            left = a.units
            for room, g in residual:
                if left <= 0:
                    break
                s = min(room, left)
                if 0 < left - s < minimum:
                    s = left - minimum
                if s < minimum:
                    continue
                parts.append(s)
                where.append(g)
                left -= s
            m = left // a.single
            fixed = len(parts)
            units = share_units(a.units, parts + [a.single] * m, minimum)  # the fix-up only lowers a part
            if units is None:
                return None
            for j, s in enumerate(a.shares(units)):
                if j < fixed:
                    bins[where[j]].append(len(items))
                else:
                    bins.append([len(items)])
                items.append(s)
        return items, bins


def split_lower_bound(problem: PlacementProblem) -> int:
    """GPUs that any split of the problem's adapters needs: for each rank threshold k, the adapters of rank
    class >= k carry their raw load (in whole units, rounded down) and each needs a slot, on GPUs of rank
    class >= k holding at most the largest capacity and count of those configs. Valid for every split,
    uneven or equal, since shares sum to the adapter's load and each is rounded up."""
    best = 0
    for k in problem.capacity.rank_classes:
        its = [it for it in problem.items if it.rank_class >= k]
        fit = [c for c in problem.configs if c.max_lora_rank >= k]
        if not its or not fit:
            continue
        load = int(math.floor(sum(it.load_tps for it in its) / LOAD_UNIT + 1e-9))
        cap = max(problem.config_units(c) for c in fit)
        count = max(c.max_adapters for c in fit)
        best = max(best, -(-load // max(cap, 1)), -(-len({it.adapter_id for it in its}) // count))
    return best


class _Adapter:
    """A hot adapter: its total rate, load and units, and what one GPU sustains for it alone (units)."""

    def __init__(self, id: str, rank: int, rate: float, load_tps: float, rank_class: int, single: int):
        self.id, self.rank, self.rate, self.load_tps, self.rank_class = id, rank, rate, load_tps, rank_class
        self.units = load_units(load_tps)
        self.single = single

    @classmethod
    def of(cls, problem: PlacementProblem, idx: list[int]) -> "_Adapter":
        its = [problem.items[i] for i in idx]
        first = its[0]
        return cls(first.adapter_id, first.rank, sum(it.rate for it in its), sum(it.load_tps for it in its),
                   first.rank_class, capacity_units(problem.capacity.max_single_load(first.rank)))

    def shares(self, units: list[int]) -> list[Item]:
        """Items for shares of ``units`` (summing to ``self.units``): each carries its fraction of the rate;
        the last takes what is left, so rates and shares sum exactly to the adapter's."""
        out, rate, frac = [], 0.0, 0.0
        for j, u in enumerate(units):
            if j < len(units) - 1:
                f = u / self.units
                load = min(u * LOAD_UNIT, self.load_tps)
            else:
                f = 1.0 - frac
                load = self.load_tps - sum(it.load_tps for it in out)
            r = self.rate * f if j < len(units) - 1 else self.rate - rate
            out.append(Item.of(self.id, self.rank, r, f, load))
            rate += r
            frac += f
        return out


def _sorted(items, bins) -> tuple[tuple[Item, ...], list[list[int]]]:
    """Items in the problem order (load descending, as ``make_items``) and the bins re-indexed."""
    order = sorted(range(len(items)), key=lambda i: (-items[i].units, -items[i].rank, items[i].adapter_id, i))
    new = {old: k for k, old in enumerate(order)}
    return tuple(items[i] for i in order), [sorted(new[i] for i in b) for b in bins]


def _stats(name: str, items, adapters: dict, min_share: float = DEFAULT_MIN_SHARE) -> dict:
    """What the answer says about its splits: the candidate kept, shares per hot adapter, the minimum."""
    counts: dict[str, int] = {}
    for it in items:
        if it.adapter_id in adapters:
            counts[it.adapter_id] = counts.get(it.adapter_id, 0) + 1
    return {"candidate": name, "min_share": min_share, "shares": dict(sorted(counts.items()))}


SOLVERS.register("greedy-split", GreedySplitSolver,
                 summary="greedy with solver-chosen uneven replica splits of hot adapters (min share 5 %)")
