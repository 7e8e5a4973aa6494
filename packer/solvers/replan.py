"""Re-planning with few moves: start from the deployed plan's GPUs, not from scratch.

Every item keeps its current GPU (``home``) while that GPU stays within the capacity model. A GPU
that no longer fits sheds the fewest items it can (the lightest of those that suffice); shed items
and new items (new adapters, extra replicas) go first-fit into the existing GPUs, then onto new
ones. With ``max_moves``, once that many items have moved an overloaded GPU splits its heaviest
adapters instead (each keeps at least half its load there; the rest is a new replica, usually on a
new server) until it fits; only where that does not suffice does it move more.
GPUs left empty are dropped by the caller.

``items_with_plan_splits`` maps the deployed plan onto the new workload's items first: an adapter the
plan splits keeps the plan's shares (uneven ones too, as ``greedy-split`` chose them) at its new rate,
each share's home its GPU in the plan, where every share still fits one GPU alone; other adapters'
items (and their replicas) map onto their GPUs in order, extra replicas are new.

``replan_exact`` solves the same question exactly with ``cpsat`` or ``milp`` (``packer.solvers.exact``,
see ``exact.moves``): fewest GPUs first, then fewest moves, at most ``max_moves`` moves, starting from
the greedy re-plan. It moves whole adapters only: where ``max_moves`` admits no such placement it
proves so and the greedy re-plan (which splits adapters) is kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

from .base import LOAD_UNIT, Item, PlacementProblem, SolveStatus, bin_config, capacity_units, load_units

__all__ = ["Replan", "replan", "replan_exact", "ExactReplan", "items_with_plan_splits"]


@dataclass(frozen=True)
class Replan:
    """The re-planned bins: item indices into ``items`` (the problem's, plus split-off parts at the end),
    GPU ``g < n_current`` is the current plan's GPU ``g`` (possibly empty), the rest are new."""

    items: tuple[Item, ...]
    home: tuple[int | None, ...]      # each item's GPU in the current plan (None: new item)
    bins: tuple[tuple[int, ...], ...]
    n_current: int
    moved: int                        # items shed from an overloaded GPU
    split: tuple[str, ...]            # adapters split (instead of moved) because max_moves was reached


@dataclass(frozen=True)
class ExactReplan:
    """``replan_exact``'s answer: the re-plan kept (the exact one, or greedy's where the exact solver
    found none) and what the exact solver proved."""

    replan: Replan
    status: SolveStatus               # OPTIMAL: fewest GPUs, then fewest moves, proven
    gpus_lower_bound: int             # no re-plan within max_moves has fewer GPUs
    moves_lower_bound: int            # no re-plan with this many GPUs has fewer moves
    exact: bool                       # False: the exact solver found nothing; this is greedy's re-plan
    message: str
    details: dict = field(default_factory=dict, compare=False)


def replan(problem: PlacementProblem, home: Sequence[int | None], n_current: int,
           max_moves: int | None = None) -> Replan:
    """Place ``problem``'s items keeping each on ``home[i]`` (its current GPU, or None) where it fits."""
    items = list(problem.items)
    homes = list(home)
    bins: list[list[int]] = [[] for _ in range(n_current)]
    unplaced: list[int] = []
    for i, g in enumerate(homes):
        (bins[g].append(i) if g is not None else unplaced.append(i))

    def deficit(members: list[int]) -> float:
        """Units over capacity (<= 0: fits; inf: no config holds that many adapters)."""
        if not members:
            return -1
        its = [items[j] for j in members]
        c = problem.config_for(max(it.rank for it in its), len(its))
        return float("inf") if c is None else sum(it.units for it in its) - problem.config_units(c)

    moved = 0
    split: list[str] = []
    halved: set[int] = set()
    for g in range(n_current):
        while deficit(bins[g]) > 0:
            whole = [j for j in bins[g] if j not in halved]
            if max_moves is not None and moved >= max_moves and whole and deficit(bins[g]) < float("inf"):
                # split the heaviest adapter not yet split here: it keeps at least half its load on this GPU
                i = max(whole, key=lambda j: (items[j].units, -j))
                halved.add(i)
                shed = min(int(deficit(bins[g])), items[i].units // 2)
                if shed >= 1:
                    it = items[i]
                    room = it.units - shed
                    f = room * LOAD_UNIT / it.load_tps
                    items[i] = Item.of(it.adapter_id, it.rank, it.rate * f, it.share * f, room * LOAD_UNIT)
                    items.append(Item.of(it.adapter_id, it.rank, it.rate * (1 - f), it.share * (1 - f),
                                         it.load_tps - room * LOAD_UNIT))
                    homes.append(None)
                    unplaced.append(len(items) - 1)
                    split.append(it.adapter_id)
                continue
            # the fewest items: the lightest one whose removal suffices, else the one that helps most
            options = [(deficit([j for j in bins[g] if j != i]), items[i].units, i) for i in bins[g]]
            enough = [o for o in options if o[0] <= 0]
            _, _, i = min(enough, key=lambda o: (o[1], o[2])) if enough else min(options, key=lambda o: (o[0], o[2]))
            bins[g].remove(i)
            unplaced.append(i)
            moved += 1

    # heaviest first; into a GPU that fits and does not hold the adapter already (replicas stay apart)
    for i in sorted(unplaced, key=lambda j: (-items[j].units, -items[j].rank, j)):
        aid = items[i].adapter_id
        for g in range(len(bins)):
            if homes[i] == g:
                continue  # it was shed from there
            if any(items[j].adapter_id == aid for j in bins[g]):
                continue
            if deficit(bins[g] + [i]) <= 0:
                bins[g].append(i)
                break
        else:
            bins.append([i])
    return Replan(tuple(items), tuple(homes), tuple(tuple(b) for b in bins), n_current, moved, tuple(split))


_STATUS = {"optimal": SolveStatus.OPTIMAL, "feasible": SolveStatus.FEASIBLE, "time_limit": SolveStatus.TIME_LIMIT,
           "infeasible": SolveStatus.INFEASIBLE}


def replan_exact(problem: PlacementProblem, home: Sequence[int | None], n_current: int, max_moves: int | None,
                 backend: str, greedy: Replan, started: float | None = None) -> ExactReplan:
    """Re-plan ``problem``'s items exactly with ``backend`` ("cpsat" or "milp"): fewest GPUs, then fewest
    moves, at most ``max_moves``; ``greedy`` (``replan``'s answer for the same input) is the warm start
    when it moved whole adapters, and the answer kept when the exact solver finds nothing."""
    from .exact.runner import solve_exact

    from .exact.moves import count_moves, weight
    from .greedy import GreedySolver

    started = time.monotonic() if started is None else started
    plain = problem.to_plain(None)
    plain["current"] = {"home": list(home), "n_current": n_current, "max_moves": max_moves}
    index = {c: k for k, c in enumerate(problem.configs)}
    warm = []  # (objective, warm start): greedy's re-plan and a fresh greedy plan matched to the current GPUs
    if not greedy.split:  # the same items (and within max_moves: greedy moved at most that many)
        used = [g for g, b in enumerate(greedy.bins) if b]
        warm.append(_warm_start(problem, index, [greedy.bins[g] for g in used],
                                [g if g < n_current else None for g in used]))
    fresh = GreedySolver().solve(problem)
    if fresh.bins:
        warm.append(_warm_start(problem, index, fresh.bins, _matched_origin(fresh.bins, home, n_current)))
    scored = []
    for w in warm:
        moves = count_moves(plain, w["bins"], w["origin"])
        if max_moves is None or moves <= max_moves:
            scored.append((weight(plain) * len(w["configs"]) + moves, w))
    if scored:
        plain["warm_start"] = min(scored, key=lambda t: t[0])[1]
        plain["max_bins"] = len(plain["warm_start"]["configs"])
    else:  # a fresh placement, all on added servers, is feasible when moves allow it
        plain["max_bins"] = max([len([b for b in greedy.bins if b])] + [fresh.num_gpus])
    answer = solve_exact(plain, backend, started=started)
    w = weight(plain)
    bound = answer.get("bound")
    details = {"backend": backend, "phases": answer.get("phases", {}), "message": answer.get("message", ""),
               "solver_wall_seconds": answer.get("wall_seconds")}
    status = answer.get("status")
    if answer.get("bins") is None or status not in _STATUS or status == "infeasible":
        why = ("no re-plan of whole adapters moves at most max-moves "
               f"{max_moves} (proven)" if status == "infeasible" else f"found no re-plan ({answer.get('message')})")
        return ExactReplan(greedy, SolveStatus.FEASIBLE, 0, 0, False,
                           f"{backend}: {why}; the greedy re-plan is kept", details)
    slot, added = {}, n_current  # answer bin -> re-plan bin: a current GPU keeps its index, added ones follow
    for k, o in enumerate(answer["origin"]):
        slot[k] = added if o is None else o
        added += o is None
    bins: list[list[int]] = [[] for _ in range(added)]
    for i, k in enumerate(answer["bins"]):
        bins[slot[k]].append(i)
    new_home = _homes_kept(problem, home, bins)
    n_bins = len(answer["configs"])
    moves = sum(h is not None and i not in bins[h] for i, h in enumerate(new_home))
    gpus_lb = 0 if bound is None else max(0, math.ceil((bound - (w - 1)) / w))
    moves_lb = moves if status == "optimal" else (0 if bound is None else max(0, int(bound) - w * n_bins))
    r = Replan(tuple(problem.items), tuple(new_home), tuple(tuple(b) for b in bins), n_current, moves, ())
    return ExactReplan(r, _STATUS[status], gpus_lb, min(moves_lb, moves), True,
                       f"{backend} {status}: {n_bins} GPUs, {moves} moves (bounds: {gpus_lb} GPUs, "
                       f"{min(moves_lb, moves)} moves at {n_bins} GPUs)", details)


def _warm_start(problem: PlacementProblem, index: dict, bins: Sequence[Sequence[int]], origin: list) -> dict:
    """A warm start in the exact backends' form: bin per item, config per bin, origin per bin."""
    bin_of = [0] * len(problem.items)
    for k, members in enumerate(bins):
        for i in members:
            bin_of[i] = k
    return {"bins": bin_of, "configs": [index[bin_config(problem, b)] for b in bins], "origin": list(origin)}


def _matched_origin(bins: Sequence[Sequence[int]], home: Sequence[int | None], n_current: int) -> list[int | None]:
    """Each bin's current GPU in the matching that keeps the most items at home (None: an added server)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    if not n_current or not bins:
        return [None] * len(bins)
    keep = np.zeros((len(bins), n_current))
    for k, members in enumerate(bins):
        for i in members:
            if home[i] is not None:
                keep[k, home[i]] += 1
    rows, cols = linear_sum_assignment(-keep)
    origin: list[int | None] = [None] * len(bins)
    for r, c in zip(rows, cols):
        if keep[r, c] > 0:
            origin[r] = int(c)
    return origin


def _homes_kept(problem: PlacementProblem, home: Sequence[int | None], bins: Sequence[Sequence[int]]) -> list:
    """Each item's home, with an adapter's homes handed to its replicas that sit on them (replicas are
    interchangeable), the others to the rest in order: an item moves iff it is not on its home."""
    gpu_of = {i: g for g, b in enumerate(bins) for i in b}
    by_adapter: dict[str, list[int]] = {}
    for i, it in enumerate(problem.items):
        by_adapter.setdefault(it.adapter_id, []).append(i)
    out = list(home)
    for members in by_adapter.values():
        homes = [home[i] for i in members if home[i] is not None]
        kept = [i for i in members if gpu_of[i] in homes]
        left = [h for h in homes if h not in {gpu_of[i] for i in kept}]
        for i in members:
            out[i] = gpu_of[i] if i in kept else (left.pop(0) if left else None)
    return out


def items_with_plan_splits(problem: PlacementProblem, placement: dict[str, Sequence[tuple[int, float]]]
                           ) -> tuple[tuple[Item, ...], tuple[int | None, ...]]:
    """The items to re-plan and each one's GPU in the current plan (``placement``: adapter id ->
    [(GPU, share)]; see the module docstring), sorted as ``make_items`` sorts them."""
    by_adapter: dict[str, list[Item]] = {}
    for it in problem.items:
        by_adapter.setdefault(it.adapter_id, []).append(it)
    items: list[Item] = []
    home: list[int | None] = []
    for aid, its in by_adapter.items():
        gs = list(placement.get(aid, ()))
        kept = _plan_shares(problem, its, gs) if len(gs) > 1 else None
        if kept is not None:
            items += kept
            home += [g for g, _ in gs]
        else:
            items += its
            home += [gs[k][0] if k < len(gs) else None for k in range(len(its))]
    order = sorted(range(len(items)), key=lambda i: (-items[i].units, -items[i].rank, items[i].adapter_id, i))
    return tuple(items[i] for i in order), tuple(home[i] for i in order)


def _plan_shares(problem: PlacementProblem, its: list[Item], gs: list[tuple[int, float]]) -> list[Item] | None:
    """The adapter of items ``its`` split as the plan splits it (shares ``gs``) at its new rate, or None
    where a share would not fit one GPU alone."""
    rate, load, first = sum(it.rate for it in its), sum(it.load_tps for it in its), its[0]
    total = sum(s for _, s in gs)
    single = capacity_units(problem.capacity.max_single_load(first.rank))
    out: list[Item] = []
    for j, (_, s) in enumerate(gs):
        if j < len(gs) - 1:
            f = s / total
            r, lt = rate * f, load * f
        else:  # the last share takes what is left, so rates and shares sum exactly to the adapter's
            f = 1.0 - sum(it.share for it in out)
            r, lt = rate - sum(it.rate for it in out), load - sum(it.load_tps for it in out)
        it = Item.of(first.adapter_id, first.rank, r, f, lt)
        if load_units(it.load_tps) > single:
            return None
        out.append(it)
    return out
