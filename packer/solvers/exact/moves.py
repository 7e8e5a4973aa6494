"""Re-planning in the exact backends' JSON form: one home for counting moves, used by the worker's models
and by the runner that checks their answers.

``problem["current"] = {"home": [current GPU or null, per item], "n_current": N, "max_moves": K or null}``
says where each item is deployed now. A placement then carries ``origin``, per bin: the current GPU it
is (an int < N, each at most once) or null (a server added). An adapter's items are its replicas (one
``group``) or a single item; its moves are its items that have a home less the homes it keeps (replicas
are interchangeable). The objective is lexicographic, fewest GPUs first, then fewest moves:
``weight * bins + moves`` with ``weight`` = items with a home + 1, so one GPU outweighs every move.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["current_of", "weight", "adapters", "count_moves", "check_origin"]


def current_of(problem: dict) -> dict | None:
    """The problem's ``current`` block, or None for a fresh solve."""
    return problem.get("current") or None


def weight(problem: dict) -> int:
    """What one bin costs in the re-planning objective: more than all moves together."""
    cur = current_of(problem)
    return 1 if cur is None else 1 + sum(h is not None for h in cur["home"])


def adapters(problem: dict) -> list[tuple[list[int], list[int], int]]:
    """(items, their distinct homes, items with a home) per adapter that has a home."""
    cur = current_of(problem)
    if cur is None:
        return []
    by: dict[object, list[int]] = {}
    for i, it in enumerate(problem["items"]):
        by.setdefault(("g", int(it["group"])) if it.get("group") is not None else ("i", i), []).append(i)
    out = []
    for members in by.values():
        homes = [cur["home"][i] for i in members if cur["home"][i] is not None]
        if homes:
            out.append((members, sorted(set(int(h) for h in homes)), len(homes)))
    return out


def count_moves(problem: dict, bins: Sequence[int], origin: Sequence[int | None]) -> int:
    """The moves of a placement (``bins``: bin per item, ``origin``: current GPU per bin or None)."""
    moves = 0
    for members, homes, homed in adapters(problem):
        on = {origin[bins[i]] for i in members}
        moves += homed - sum(h in on for h in homes)
    return moves


def check_origin(problem: dict, bins: Sequence[int], n_bins: int, origin: Sequence[int | None] | None) -> str | None:
    """None when ``origin`` fits the problem's ``current`` block (and its ``max_moves``), else the broken rule."""
    cur = current_of(problem)
    if cur is None:
        return None if not origin else "origin is given but the problem has no current plan"
    if not isinstance(origin, list) or len(origin) != n_bins:
        return f"origin must list one entry per bin ({n_bins})"
    n = int(cur["n_current"])
    kept = [o for o in origin if o is not None]
    if any(not isinstance(o, int) or not 0 <= o < n for o in kept):
        return f"an origin is not a current GPU index in 0..{n - 1}"
    if len(set(kept)) != len(kept):
        return "two bins claim the same current GPU"
    k = cur.get("max_moves")
    if k is not None and (moves := count_moves(problem, bins, origin)) > int(k):
        return f"{moves} moves, max_moves is {k}"
    return None
