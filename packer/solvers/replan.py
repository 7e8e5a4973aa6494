"""Re-planning with few moves: start from the deployed plan's GPUs, not from scratch.

Every item keeps its current GPU (``home``) while that GPU stays within the capacity model. A GPU
that no longer fits sheds the fewest items it can (the lightest of those that suffice); shed items
and new items (new adapters, extra replicas) go first-fit into the existing GPUs, then onto new
ones. With ``max_moves``, once that many items have moved an overloaded GPU splits its heaviest
adapters instead (each keeps at least half its load there; the rest is a new replica, usually on a
new server) until it fits; only where that does not suffice does it move more.
GPUs left empty are dropped by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .base import LOAD_UNIT, Item, PlacementProblem

__all__ = ["Replan", "replan"]


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
