"""What both exact backends share: the problem prepared for the model (``prepare``: items sorted, dominated
configs dropped, the warm start relabelled as a hint), the hint's variable values, and the answer mapped
back to the original items (``make_answer``).

The model (both backends): bins g < U; x[i,g] item i on bin g; z[g,c] bin g takes config c;
y[g] = sum_c z[g,c] (bin used); each item on one bin; per bin load <= sum_c C_c z[g,c], item count
<= sum_c n_c z[g,c], and x[i,g] <= sum of z[g,c] over the configs whose rank class holds item i; items of
one ``group`` (replicas of one adapter) go on distinct bins: sum over the group of x[i,g] <= 1. Symmetry
breaking, with items sorted by load descending: bins are labelled in the order of their smallest item
index, so item i only goes on bins g <= i and y[g] >= y[g+1]. sum_g y[g] >= the lower bound of
``packer.solvers.bounds``. Objective ``min_gpus``: minimise sum_g y[g] (U = max_bins). Objective
``min_latency``: U = gpus, T in [latency lower bound, 1000] integer, u[g,c] in [0, 1000] with
u <= 1000 z, u <= T, u >= T - 1000 (1 - z) (so u[g,c] = T on the chosen config) and
1000 load(g) <= sum_c C_c u[g,c]; minimise T.

Re-planning (``problem["current"]``, see ``moves``): bins g < N are the current plan's GPUs (told apart:
no symmetry breaking among them, any item may go on them); bins N.. are servers added, labelled in the
order of their smallest sorted item (the k-th added bin holds items s >= k) with y ordered among them.
moves = sum over adapters of (items with a home - sum over its homes h and its items s of x[s,h]);
moves <= max_moves when given; minimise weight * sum_g y[g] + moves (fewest GPUs, then fewest moves).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

from ..bounds import PERMILLE, latency_lower_bound, lower_bounds
from .moves import adapters, current_of, weight

__all__ = ["EPS", "ANSWER_RESERVE_S", "MIN_SEARCH_S", "OutOfTime", "Prepared", "prepare", "apart", "hint_values",
           "make_answer"]

EPS = 1e-6
ANSWER_RESERVE_S = 0.05  # taken off the search: reading the solution back and writing the answer
MIN_SEARCH_S = 0.05  # less than this left after the model build: no search


class OutOfTime(Exception):
    """The deadline leaves no time to search: answer with no incumbent (the parent has the warm start)."""


@dataclass
class Prepared:
    """The problem with items sorted by load descending and the bins/configs the model uses."""

    objective: str
    order: list[int]  # order[s] = original index of sorted item s
    loads: list[int]  # by sorted index
    ranks: list[int]
    configs: list[int]  # the original indices of the non-dominated configs the model offers
    cap: dict[int, int]
    count: dict[int, int]
    rank: dict[int, int]
    bins: int  # U
    lower_bound: int  # on sum_g y[g]
    t_lower: int  # on T (min_latency)
    hint: tuple[list[int], list[int]] | None  # (bin per sorted item, config per bin), symmetry-consistent
    groups: list[list[int]]  # sorted items that must go on distinct bins (replicas of one adapter)
    deadline: float  # time.monotonic() by which the answer must be written
    workers: int
    seed: int
    n_current: int = 0  # re-planning: bins 0..n_current-1 are the current plan's GPUs
    moved: list[tuple[list[int], list[int], int]] | None = None  # (sorted items, homes, homed) per adapter
    max_moves: int | None = None
    weight: int = 1  # of a bin against a move

    def slots(self, s: int) -> range | list[int]:
        """The bins sorted item ``s`` may go on (symmetry breaking: the k-th symmetric bin, k <= s)."""
        n = self.n_current
        if not n:
            return range(min(s + 1, self.bins))
        return [*range(n), *range(n, min(n + s + 1, self.bins))]

    def members(self, g: int) -> range:
        """The sorted items that may go on bin ``g``."""
        return range(max(0, g - self.n_current), len(self.loads))

    def allowed(self, s: int, g: int) -> bool:
        """Whether sorted item ``s`` may go on bin ``g``."""
        return g < self.n_current or g - self.n_current <= s

    def ordered(self) -> range:
        """The bins g with y[g] >= y[g+1] (the symmetric ones)."""
        return range(self.n_current, self.bins - 1)

    def search_seconds(self) -> float:
        """The search's own limit: what is left until the deadline, less the time to write the answer."""
        return self.deadline - time.monotonic() - ANSWER_RESERVE_S

    def check_time(self) -> None:
        """Raise ``OutOfTime`` once no search of at least ``MIN_SEARCH_S`` can start before the deadline
        (checked while the model is built: building a large model can take longer than the limit)."""
        if self.search_seconds() < MIN_SEARCH_S:
            raise OutOfTime

    def fits(self, s: int) -> list[int]:
        """The offered configs whose rank class holds sorted item ``s``."""
        return [c for c in self.configs if self.rank[c] >= self.ranks[s]]


def _non_dominated(configs: list[dict]) -> list[int]:
    """Drop configs that another config matches or beats on rank class, max_count and capacity (a
    solution using one can switch to its dominator). Among equal configs the first index is kept."""
    key = [(int(c["rank_class"]), int(c["max_count"]), int(c["capacity"])) for c in configs]
    keep = []
    for a, ka in enumerate(key):
        dominated = any(
            all(kb[t] >= ka[t] for t in range(3)) and (kb != ka or b < a) for b, kb in enumerate(key) if b != a)
        if not dominated:
            keep.append(a)
    return keep


def prepare(problem: dict, deadline: float) -> Prepared:
    """``problem`` (the capacity model's JSON form) ready for the model, its answer due by ``deadline``."""
    items, configs = problem["items"], problem["configs"]
    objective = problem["objective"]
    order = sorted(range(len(items)), key=lambda i: (-int(items[i]["load"]), -int(items[i]["rank_class"]), i))
    loads = [int(items[i]["load"]) for i in order]
    ranks = [int(items[i]["rank_class"]) for i in order]
    if objective == "min_latency":
        bins = int(problem["gpus"])
        t_lower = latency_lower_bound(problem)
        t_lower = PERMILLE + 1 if t_lower is None else t_lower  # empty domain: the model is infeasible
    else:
        bins = int(problem["max_bins"])
        t_lower = 0
    bins = min(bins, len(items))
    cur = current_of(problem)
    n_current = int(cur["n_current"]) if cur else 0
    if cur:
        bins += n_current  # the current GPUs, and as many added ones as the solution may use
    hint = _hint(problem, order, bins, n_current)
    if hint is not None and objective == "min_gpus" and not cur:
        bins = len(hint[1])  # the warm start is the incumbent: a better solution needs no more bins
    lb = problem.get("lower_bound")
    lb = int(lower_bounds(problem)["best"] if lb is None else lb)
    sorted_at = {i: s for s, i in enumerate(order)}
    moved = [([sorted_at[i] for i in members], homes, homed) for members, homes, homed in adapters(problem)]
    return Prepared(
        objective=objective, order=order, loads=loads, ranks=ranks, configs=_non_dominated(configs),
        cap={c: int(cf["capacity"]) for c, cf in enumerate(configs)},
        count={c: int(cf["max_count"]) for c, cf in enumerate(configs)},
        rank={c: int(cf["rank_class"]) for c, cf in enumerate(configs)},
        bins=bins, lower_bound=lb, t_lower=t_lower, hint=hint, groups=_groups(items, order),
        deadline=deadline, workers=int(problem.get("workers") or os.cpu_count() or 1),
        seed=int(problem.get("seed") or 0), n_current=n_current, moved=moved if cur else None,
        max_moves=None if not cur or cur.get("max_moves") is None else int(cur["max_moves"]),
        weight=weight(problem))


def _groups(items: list[dict], order: list[int]) -> list[list[int]]:
    """The sorted indices of the items of each ``group`` with more than one item."""
    by_group: dict[int, list[int]] = {}
    for s, i in enumerate(order):
        if items[i].get("group") is not None:
            by_group.setdefault(int(items[i]["group"]), []).append(s)
    return [members for members in by_group.values() if len(members) > 1]


def apart(p: Prepared) -> list[tuple[int, list[int]]]:
    """(bin, sorted items of one group that may go on it) where at most one of them may."""
    return [(g, on) for grp in p.groups for g in range(p.bins) if len(on := [s for s in grp if p.allowed(s, g)]) > 1]


def _hint(problem: dict, order: list[int], bins: int, n_current: int = 0) -> tuple[list[int], list[int]] | None:
    """The warm start relabelled to satisfy the symmetry breaking (symmetric bins in the order of their
    smallest sorted item; re-planning, a current GPU keeps its index and configs of unused current GPUs
    are -1), or None when there is none or it does not fit in ``bins`` bins."""
    warm = problem.get("warm_start")
    if not warm or not warm.get("bins") or len(warm["bins"]) != len(order):
        return None
    origin = warm.get("origin") or []
    new_label: dict[int, int] = {}
    for b, o in enumerate(origin):
        if o is not None:
            new_label[b] = int(o)
    added = 0
    hint_bins = []
    for i in order:  # sorted order: first appearance = smallest sorted item of the bin
        b = int(warm["bins"][i])
        if b not in new_label:
            new_label[b] = n_current + added
            added += 1
        hint_bins.append(new_label[b])
    if n_current + added > bins or any(b >= len(warm["configs"]) for b in new_label):
        return None
    hint_configs = [-1] * (max(new_label.values()) + 1 if new_label else 0)
    for old, new in new_label.items():
        hint_configs[new] = int(warm["configs"][old])
    used = {g for g in hint_bins}
    if any(g >= n_current and g - n_current > s for s, g in enumerate(hint_bins)):  # not with this labelling
        return None
    hint_configs = [c if g in used else -1 for g, c in enumerate(hint_configs)]
    return hint_bins, hint_configs


def hint_values(p: Prepared) -> dict[str, dict] | None:
    """Full variable values (x, z, y, T, u) for the hint. A hinted config that the model does not offer
    (a dominated one) is replaced by one that dominates it; None if there is none (cannot happen)."""
    if p.hint is None:
        return None
    hint_bins, hint_configs = p.hint
    offered = set(p.configs)
    configs = []
    for g, c in enumerate(hint_configs):
        if c < 0:  # a current GPU the warm start leaves empty
            configs.append(c)
            continue
        if c not in offered:
            c = next((d for d in p.configs if p.rank[d] >= p.rank[c] and p.count[d] >= p.count[c]
                      and p.cap[d] >= p.cap[c]), None)
            if c is None:
                return None
        configs.append(c)
    load = [0] * p.bins
    for s, g in enumerate(hint_bins):
        load[g] += p.loads[s]
    used = len(configs)
    t = max([math.ceil(PERMILLE * load[g] / p.cap[configs[g]]) for g in range(used) if configs[g] >= 0], default=0)
    t = max(t, p.t_lower)
    x = {(s, g): int(hint_bins[s] == g) for s in range(len(p.loads)) for g in p.slots(s)}
    z = {(g, c): int(g < used and configs[g] == c) for g in range(p.bins) for c in p.configs}
    y = {g: int(g < used and configs[g] >= 0) for g in range(p.bins)}
    u = {(g, c): t * z[g, c] for g in range(p.bins) for c in p.configs}
    return {"x": x, "z": z, "y": y, "T": t, "u": u}


def make_answer(p: Prepared, status: str, bin_of: list[int] | None, config_of: dict[int, int] | None,
                objective: float | None, bound: float | None, t0: float, message: str) -> dict:
    """Map a sorted-item solution back to the original items, bins relabelled 0..m-1 (used bins only)."""
    bins_out = configs_out = origin = None
    if bin_of is not None and config_of is not None:
        relabel: dict[int, int] = {}
        bins_out = [0] * len(p.order)
        for s, g in enumerate(bin_of):
            bins_out[p.order[s]] = relabel.setdefault(g, len(relabel))
        configs_out = [0] * len(relabel)
        origin = [None] * len(relabel)
        for g, new in relabel.items():
            configs_out[new] = config_of[g]
            origin[new] = g if g < p.n_current else None
    return {"status": status, "bins": bins_out, "configs": configs_out,
            "origin": origin if p.moved is not None else None, "objective": objective,
            "bound": bound, "wall_seconds": time.monotonic() - t0, "message": message}
