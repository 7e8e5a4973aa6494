"""Exact pricing for the configuration model: a knapsack with a cardinality-dependent capacity, by
branch and bound (numba).

For one rank class: configs sorted by ``max_count`` ascending (``n_0 < n_1 < ...``) with capacities
non-increasing (``C_0 >= C_1 >= ...``: the non-dominated ones), and items (copies of item types) with
a value ``v_i > 0`` and an integer load ``w_i``. A set S is a column iff some config c has
``|S| <= n_c`` and ``w(S) <= C_c``; pricing maximises ``v(S)``.

The search is a depth-first branch and bound over the items sorted by value per load (copies of a type
adjacent; excluding a copy excludes the type's later copies, which breaks their symmetry). At a node
(items before ``pos`` decided, k taken, load L) the configs still open are a contiguous range
``[a(k), b(L)]``; the bound on what the rest adds is, maximised over that range, the smaller of the
fractional (Dantzig) bound at capacity ``C_c - L`` and the sum of the ``n_c - k`` largest values left.
Nodes whose bound does not beat the incumbent by more than ``tol`` are pruned, so a finished search
proves ``max v(S) <= incumbent + tol``: the upper bound M the Farley bound needs. A search that runs
out of nodes says so (``exact`` False) and its M is not to be used.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["price_rank_class", "brute_force_pricing"]

MAX_KEEP = 16  # improving sets the search hands back (the last incumbents)


@njit(cache=True)
def _suffix_top(values: np.ndarray, rmax: int) -> np.ndarray:
    """T[j, r]: the sum of the r largest values among items j.. (r <= rmax)."""
    n = values.size
    T = np.zeros((n + 1, rmax + 1))
    top = np.zeros(rmax)  # descending
    m = 0
    for j in range(n - 1, -1, -1):
        v = values[j]
        # insert v into the descending list, keeping at most rmax
        p = m if m < rmax else rmax
        if m < rmax:
            m += 1
        while p > 0 and top[p - 1] < v:
            if p < rmax:
                top[p] = top[p - 1]
            p -= 1
        if p < rmax:
            top[p] = v
        s = 0.0
        for r in range(1, rmax + 1):
            if r <= m:
                s += top[r - 1]
            T[j, r] = s
    return T


@njit(cache=True)
def _bnb(values, loads, nxt, counts, caps, best0, tol, max_nodes, keep):
    """The search (see the module docstring). values/loads sorted by value per load, ``nxt[i]`` the
    first item of the next type. Returns (best value, nodes, finished, kept sets as a 0/1 matrix,
    their values, their configs, how many kept)."""
    n = values.size
    nc = counts.size
    nmax = counts[nc - 1]
    rmax = min(nmax, n)
    T = _suffix_top(values, rmax)
    PW = np.zeros(n + 1)
    PV = np.zeros(n + 1)
    for i in range(n):
        PW[i + 1] = PW[i] + loads[i]
        PV[i + 1] = PV[i] + values[i]
    # a(k): the first config with count >= k
    first = np.full(nmax + 2, nc, dtype=np.int64)
    c = 0
    for k in range(nmax + 2):
        while c < nc and counts[c] < k:
            c += 1
        first[k] = c
    kept = np.zeros((keep, n), dtype=np.uint8)
    kept_val = np.zeros(keep)
    kept_cfg = np.zeros(keep, dtype=np.int64)
    n_kept = 0
    stack = np.zeros(n + 1, dtype=np.int64)
    inset = np.zeros(n, dtype=np.uint8)
    depth = 0
    pos, k, L, V = 0, 0, 0.0, 0.0
    best = best0
    nodes = 0
    while True:
        nodes += 1
        if nodes > max_nodes:
            return best, nodes, False, kept, kept_val, kept_cfg, n_kept
        # configs open at this node: [a, b]
        a = first[k]
        b = nc - 1
        while b >= a and caps[b] < L:
            b -= 1
        if V > best + 1e-12:
            best = V
            slot = n_kept % keep
            kept[slot, :] = inset
            kept_val[slot] = V
            kept_cfg[slot] = a
            n_kept += 1
        prune = pos >= n
        if not prune:
            bound = 0.0
            for cc in range(a, b + 1):
                R = caps[cc] - L
                # Dantzig: the largest m with PW[m] - PW[pos] <= R
                lo, hi = pos, n
                target = PW[pos] + R
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if PW[mid] <= target:
                        lo = mid
                    else:
                        hi = mid - 1
                m = lo
                dz = PV[m] - PV[pos]
                if m < n:
                    dz += (R - (PW[m] - PW[pos])) * values[m] / loads[m]
                r = counts[cc] - k
                if r > rmax:
                    r = rmax
                tv = T[pos, r]
                ub = dz if dz < tv else tv
                if ub > bound:
                    bound = ub
            prune = V + bound <= best + tol
        if not prune:
            # include pos if some config stays open, else skip it (forced exclusion)
            w = loads[pos]
            k1 = k + 1
            ok = k1 <= nmax and first[k1] < nc and caps[first[k1]] >= L + w
            if ok:
                stack[depth] = pos
                depth += 1
                inset[pos] = 1
                k, L, V = k1, L + w, V + values[pos]
                pos += 1
            else:
                pos = nxt[pos]
            continue
        # backtrack: undo the last inclusion, take its exclusion branch
        if depth == 0:
            return best, nodes, True, kept, kept_val, kept_cfg, n_kept
        depth -= 1
        i = stack[depth]
        inset[i] = 0
        k, L, V = k - 1, L - loads[i], V - values[i]
        pos = nxt[i]


def price_rank_class(values: np.ndarray, loads: np.ndarray, ubs: np.ndarray, counts: np.ndarray,
                     caps: np.ndarray, best0: float = 0.0, tol: float = 1e-6,
                     max_nodes: int = 2_000_000) -> tuple[float, bool, list[tuple[float, int, dict[int, int]]], int]:
    """Maximise ``values.a`` over a in [0, ubs] (integer) with ``sum a <= counts[c]`` and
    ``loads.a <= caps[c]`` for some config c (``counts`` ascending, ``caps`` non-increasing).

    Returns (an upper bound M on the maximum — the maximum itself within ``tol`` when ``best0`` is at
    most it —, whether the search finished (M is valid only then), improving solutions found as
    (value, config index, {type: count}), nodes searched). Solutions are those beating ``best0``."""
    values = np.asarray(values, dtype=float)
    loads = np.asarray(loads, dtype=float)
    counts = np.asarray(counts, dtype=np.int64)
    caps = np.asarray(caps, dtype=float)
    nmax = int(counts[-1]) if counts.size else 0
    ok = np.flatnonzero((values > 0) & (loads <= (caps[0] if caps.size else -1)) & (ubs > 0))
    if ok.size == 0 or nmax == 0:
        return max(best0, 0.0), True, [], 0
    ratio = values[ok] / np.maximum(loads[ok], 1e-12)
    order = ok[np.lexsort((ok, -ratio))]
    reps = np.minimum(np.asarray(ubs)[order], nmax).astype(np.int64)
    typ = np.repeat(order, reps)
    v = values[typ]
    w = loads[typ]
    nxt = np.empty(typ.size, dtype=np.int64)
    ends = np.cumsum(reps)
    nxt[:] = np.repeat(ends, reps)
    best, nodes, finished, kept, kept_val, kept_cfg, n_kept = _bnb(v, w, nxt, counts, caps, float(best0), float(tol),
                                                                   int(max_nodes), MAX_KEEP)
    sols = []
    for s in range(min(n_kept, MAX_KEEP)):
        sel = np.flatnonzero(kept[s])
        cnt: dict[int, int] = {}
        for t in typ[sel].tolist():
            cnt[int(t)] = cnt.get(int(t), 0) + 1
        sols.append((float(kept_val[s]), int(kept_cfg[s]), cnt))
    sols.sort(key=lambda x: -x[0])
    return best + tol, bool(finished), sols, int(nodes)


def brute_force_pricing(values, loads, ubs, counts, caps) -> float:
    """The maximum by enumeration (tiny instances; for tests)."""
    import itertools

    best = 0.0
    for a in itertools.product(*[range(int(u) + 1) for u in ubs]):
        a = np.array(a)
        n, w = a.sum(), float(np.dot(a, loads))
        if any(n <= c and w <= cap for c, cap in zip(counts, caps)):
            best = max(best, float(np.dot(a, values)))
    return best
