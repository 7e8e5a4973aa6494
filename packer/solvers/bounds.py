"""Lower bounds for the capacity model of the placement problem (pure Python + numpy).

The capacity model is plain data (see ``packer.solvers.exact``): items with an integer ``load`` and a
``rank_class``; a bin (GPU) picks one config ``c`` with ``rank_class`` k_c (it may hold items of rank class
<= k_c), ``max_count`` n_c (items per bin) and ``capacity`` C_c (sum of loads per bin).

Every bound below is computed for each *rank threshold* k (the items of rank class >= k, with only the
configs of rank class >= k, the only configs that can hold them) and maximised over k. A bound on the bins
that hold this subset of items is a bound on all bins, and a bin's capacity or count limit does not shrink
when items outside the subset are removed from it, so each subset bound is valid for the whole problem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["lower_bounds", "latency_lower_bound", "trivially_optimal", "unplaceable_items", "PERMILLE"]

PERMILLE = 1000
_NEG = -(1 << 60)  # "no split exists" in the cardinality DP (far below any sum of capacities)


@dataclass(frozen=True)
class _Subset:
    """Items of rank class >= k and the configs that can hold them."""

    loads: np.ndarray  # int64, the items' loads
    cap_max: int  # the largest capacity over the configs
    steps: list[tuple[int, int, int]]  # cap(n) as (first n, last n, value), cap non-increasing in n


def _arrays(problem: dict) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    items = problem["items"]
    loads = np.fromiter((int(it["load"]) for it in items), dtype=np.int64, count=len(items))
    ranks = np.fromiter((int(it["rank_class"]) for it in items), dtype=np.int64, count=len(items))
    return loads, ranks, list(problem["configs"])


def _cap_steps(configs: list[dict]) -> list[tuple[int, int, int]]:
    """cap(n) = max capacity over configs with max_count >= n, as a step function over n = 1..max n_c."""
    nmax = max(int(c["max_count"]) for c in configs)
    cap = np.zeros(nmax + 2, dtype=np.int64)
    for c in configs:
        cap[int(c["max_count"])] = max(cap[int(c["max_count"])], int(c["capacity"]))
    cap = np.maximum.accumulate(cap[::-1])[::-1]  # suffix max: configs with max_count >= n
    steps: list[tuple[int, int, int]] = []
    for n in range(1, nmax + 1):
        if steps and steps[-1][2] == cap[n]:
            steps[-1] = (steps[-1][0], n, steps[-1][2])
        else:
            steps.append((n, n, int(cap[n])))
    return steps


def _subsets(problem: dict) -> list[_Subset]:
    """One subset per distinct item rank class that some config can hold (items no config holds are
    reported by ``unplaceable_items`` and left out here)."""
    loads, ranks, configs = _arrays(problem)
    out = []
    for k in sorted(set(ranks.tolist())):
        fit = [c for c in configs if int(c["rank_class"]) >= k]
        if not fit:
            continue
        cap_max = max(int(c["capacity"]) for c in fit)
        sel = loads[(ranks >= k) & (loads <= cap_max)]
        out.append(_Subset(sel, cap_max, _cap_steps(fit)))
    return out


def unplaceable_items(problem: dict) -> list[int]:
    """Indices of the items that fit no config even alone on a bin (rank class or capacity): with any of
    them the problem has no solution."""
    loads, ranks, configs = _arrays(problem)
    best = {}
    for k in set(ranks.tolist()):
        best[k] = max((int(c["capacity"]) for c in configs if int(c["rank_class"]) >= k), default=-1)
    return [i for i in range(len(loads)) if loads[i] > best[int(ranks[i])]]


def _l1(s: _Subset) -> int:
    """Total load over the largest capacity; item count over the largest max_count. Valid: no bin holds
    more load than the largest capacity nor more items than the largest max_count."""
    if s.loads.size == 0:
        return 0
    return max(-(-int(s.loads.sum()) // s.cap_max), -(-s.loads.size // s.steps[-1][1]))


def _l2(loads: np.ndarray, cap: int) -> int:
    """Martello-Toth L2 for bin capacity ``cap``. For a threshold a <= cap/2: items > cap - a pair with no
    item >= a, so each needs its own bin, as does every item > cap/2 (no two share a bin); items in
    [a, cap/2] fit only in the free space of the bins of items in (cap/2, cap - a] or in extra bins. Valid
    because every config's capacity is <= ``cap``."""
    if loads.size == 0:
        return 0
    w = np.sort(loads)
    n = w.size
    prefix = np.concatenate(([0], np.cumsum(w)))
    half = cap // 2  # for integer w: w > cap/2  <=>  w > cap // 2
    h = int(np.searchsorted(w, half, side="right"))  # first index with w > cap/2
    alphas = np.unique(np.concatenate(([0], w[:h])))
    j1 = np.searchsorted(w, cap - alphas, side="right")  # first index with w > cap - a
    n_big = n - j1  # items > cap - a
    n_mid = j1 - h  # items in (cap/2, cap - a]
    s_mid = prefix[j1] - prefix[h]
    j3 = np.searchsorted(w, alphas, side="left")  # first index with w >= a
    s_small = prefix[h] - prefix[j3]  # items in [a, cap/2]
    extra = np.maximum(0, -(-(s_small - (n_mid * cap - s_mid)) // cap))
    return int((n_big + n_mid + extra).max())


def _min_bins(bins: list[tuple[int, int]], n_items: int, total: int, max_bins: int) -> int | None:
    """The smallest m <= ``max_bins`` such that m bins, each of a kind (count b, capacity e) in ``bins``,
    have counts summing to >= ``n_items`` and capacities summing to >= ``total``; None if there is none.

    This is a relaxation of "the items split into m bins with counts n_g and loads <= e(n_g)" whenever
    e(n) is non-decreasing in n within each step of the count limits and ``bins`` holds each step's
    largest count b: a bin of count n is then replaced by its step's (b, e(b)), which has more items and
    no less capacity. Let best_m(j) be the largest capacity of m bins holding >= j items; it is
    non-increasing in j, so best_{m+1}(j) = max over kinds of e + best_m(max(j - b, 0)).
    """
    need = np.maximum(np.arange(n_items + 1)[None, :] - np.array([b for b, _ in bins])[:, None], 0)
    gain = np.array([e for _, e in bins], dtype=np.int64)[:, None]
    best = np.full(n_items + 1, _NEG, dtype=np.int64)
    best[0] = 0
    for m in range(1, max_bins + 1):
        best = (best[need] + gain).max(axis=0)  # stays hugely negative where no split exists
        if best[n_items] >= total:
            return m
    return None


def _count_steps(s: _Subset, top_loads: np.ndarray | None, permille: int = PERMILLE) -> list[tuple[int, int]]:
    """One bin kind per step of cap(n): (the step's largest count b, its capacity at ``permille``
    utilisation), capped by the sum of the b largest loads when ``top_loads`` (their prefix sums) is
    given."""
    out = []
    for _, b, v in s.steps:
        e = v * permille // PERMILLE
        if top_loads is not None:
            e = min(e, int(top_loads[min(b, top_loads.size - 1)]))
        out.append((b, e))
    return out


def _cardinality(s: _Subset, load_aware: bool) -> int:
    """Smallest m such that some split of the items into m bins with counts n_1..n_m has
    sum cap(n_g) >= total load (``load_aware``: sum min(cap(n_g), sum of the n_g largest loads)). Valid:
    in any solution the bins holding these items have such counts (a bin holding more items overall only
    has a smaller cap), their loads are <= cap(n_g) and <= the n_g largest loads, and they carry the total.
    Computed with ``_min_bins``; both per-bin capacities are non-decreasing within a step of cap."""
    n = int(s.loads.size)
    if n == 0:
        return 0
    top = np.concatenate(([0], np.cumsum(np.sort(s.loads)[::-1]))) if load_aware else None
    m = _min_bins(_count_steps(s, top), n, int(s.loads.sum()), n)
    return n + 1 if m is None else m  # n + 1: not even one item per bin fits (infeasible)


def lower_bounds(problem: dict) -> dict[str, int]:
    """Lower bounds on the number of bins (objective ``min_gpus``): ``l1`` (load and count over the best
    config), ``l2`` (Martello-Toth), ``cardinality`` (count-dependent capacities), ``load_cardinality``
    (the same with each bin's capacity capped by the sum of its count's largest loads) and ``best`` (their
    max). Each is the max over rank thresholds (see the module docstring)."""
    subsets = _subsets(problem)
    out = {"l1": max((_l1(s) for s in subsets), default=0),
           "l2": max((_l2(s.loads, s.cap_max) for s in subsets), default=0),
           "cardinality": max((_cardinality(s, False) for s in subsets), default=0),
           "load_cardinality": max((_cardinality(s, True) for s in subsets), default=0)}
    out["best"] = max(out.values())
    return out


def latency_lower_bound(problem: dict, gpus: int | None = None) -> int | None:
    """A lower bound on the max per-mille utilisation T (objective ``min_latency``) with ``gpus`` bins
    (default ``problem["gpus"]``); None when no placement on that many bins exists (proven).

    Valid: each item alone needs T >= 1000 load / (largest capacity that holds its rank); and with
    utilisation <= T/1000 a bin of count n carries at most floor(T cap(n) / 1000) and at most the n largest
    loads, so for each rank threshold the subset must fit ``_min_bins`` with those capacities on <= gpus
    bins. That test is monotone in T: binary search for the smallest T that passes.
    """
    g = int(problem["gpus"] if gpus is None else gpus)
    if unplaceable_items(problem) or lower_bounds(problem)["best"] > g:
        return None
    loads, ranks, configs = _arrays(problem)
    lo = 0
    for load, rank in zip(loads.tolist(), ranks.tolist()):
        cap = max(int(c["capacity"]) for c in configs if int(c["rank_class"]) >= rank)
        lo = max(lo, -(-PERMILLE * load // cap))
    subsets = [s for s in _subsets(problem) if s.loads.size]
    tops = [np.concatenate(([0], np.cumsum(np.sort(s.loads)[::-1]))) for s in subsets]

    def fits(t: int) -> bool:
        return all(_min_bins(_count_steps(s, top, t), int(s.loads.size), int(s.loads.sum()),
                             min(g, int(s.loads.size))) is not None for s, top in zip(subsets, tops))

    hi = PERMILLE
    if lo > hi or not fits(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def trivially_optimal(problem: dict, num_bins: int) -> bool:
    """True when a solution with ``num_bins`` bins is optimal for ``min_gpus`` because it meets the best
    lower bound."""
    return num_bins == lower_bounds(problem)["best"]
