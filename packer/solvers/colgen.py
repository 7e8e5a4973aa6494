"""``colgen``: a Gilmore-Gomory configuration model of the capacity model, solved by column generation.

A *column* is one feasible GPU content: a config c (rank class k_c, ``max_count`` n_c, ``capacity`` C_c)
and a multiset of item *types* (items with equal load and rank class; the replicas of one adapter are a
type of their own, at most one of them per column) of rank class <= k_c, at most n_c items and at most
C_c load. The master problem covers every type's demand d_t with the fewest columns::

    min sum_j lambda_j   s.t.   sum_j a_tj lambda_j >= d_t  (every type t),  lambda >= 0 (integer).

Its LP relaxation is solved by column generation on ``scipy.optimize.linprog`` (HiGHS, built into
scipy: it shares a process with ortools or highspy, unlike those two). Pricing, for the duals pi >= 0,
is a knapsack with a cardinality-dependent capacity, ``max pi.a`` over the columns, one per config
rank class: exactly by a branch and bound (``packer.solvers.pricing``, numba, ``SEARCH_NODES`` nodes),
and where that runs out of nodes by a small MILP (a_t integer in [0, ub_t], one config chosen by
binaries z_c, load <= sum C_c z_c, count <= sum n_c z_c) cut short at ``PRICING_MILP_S`` (its dual
bound still bounds); a greedy pricing heuristic runs first and the exact pricing only when it finds
nothing (or every ``EXACT_EVERY`` rounds). The master carries dual-optimal inequalities (exchange
variables, ``_exchange_pairs``: pi_i <= pi_j where type j is at least as heavy and of at least the
rank class), which leave its LP value unchanged and damp the duals' degeneracy; with Wentges
smoothing they are what makes the LP converge at 200-500 adapters.

The bound is valid even when column generation stops early: for any pi >= 0 and an upper bound M on
``max pi.a`` over *all* columns (the finished search's best plus its tolerance, or the pricing
MILP's dual bound, never an incumbent), pi / M is feasible
for the dual LP, so the LP optimum, hence every placement, needs at least (Farley) ``d.pi / M`` GPUs;
the reported bound is that, rounded up after a safety margin for floating point. It is computed on the
same model the exact backends solve (``packer.solvers.exact``), so it bounds every solver's answer.

Integer solutions (the registered ``colgen`` solver): greedy's placement is the incumbent and its GPUs
are among the first columns; a MILP over the generated columns (``scipy.optimize.milp``) looks for a
cover with fewer GPUs than the incumbent; surplus items of a cover are dropped from their column,
which keeps it within its config. Min-GPUs only.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .pricing import price_rank_class
from .base import SOLVERS, Assignment, Objective, PlacementProblem, Solver, SolveStatus, bin_config

__all__ = ["Column", "ColgenBound", "column_generation", "integer_master", "ColgenSolver", "BOUND_METHODS",
           "best_bound", "PLANNER_BOUND_S"]

BOUND_METHODS = ("combinatorial", "column_generation", "split_combinatorial")  # then the exact backends' own names: "cpsat", "milp"
PLANNER_BOUND_S = 5.0  # the most a solve spends on the column-generation bound for a solver that computes none
EXCHANGES = True  # dual-optimal inequalities in the master (``_exchange_pairs``)
SMOOTHING = 0.8  # Wentges dual smoothing: the weight of the stability centre
EXACT_EVERY = 15  # exact pricing at least every this many rounds (its dual bound gives the Farley bound)
SEARCH_NODES = 200_000  # branch-and-bound nodes per pricing subproblem before the MILP takes over
PRICING_MILP_S = 3.0  # the most one pricing MILP runs: cut short, its dual bound still bounds (Farley)
_BNB_TOL = 1e-6  # the branch and bound proves max pi.a <= its best + this
_RC_EPS = 1e-7  # a column improves the LP when pi.a > 1 + this
_PRICING_GAP = 1e-4  # pricing MILPs stop within this relative gap: the Farley bound uses their dual bound
_SAFE_REL, _SAFE_ABS = 1e-6, 1e-6  # margins on the proven fractional bound before it is rounded up


@dataclass(frozen=True)
class Column:
    """A GPU content: a config index (into the problem's ``configs``) and (type, count) pairs."""

    config: int
    counts: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class _Types:
    load: np.ndarray     # int64, per type
    rank: np.ndarray     # int64, rank class per type
    demand: np.ndarray   # int64, items of the type
    ub: np.ndarray       # int64, most items of the type on one GPU (1 for the replicas of one adapter)
    items: tuple[tuple[int, ...], ...]  # item indices per type
    group: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # replica types (of one adapter)


@dataclass(frozen=True)
class ColgenBound:
    """What column generation proved: ``bound`` GPUs at least (0 when nothing), from the fractional
    bound ``fractional``; ``lp_value`` is the last restricted master's value (>= the LP optimum),
    ``converged`` says pricing proved it the LP optimum."""

    bound: int
    fractional: float
    lp_value: float
    converged: bool
    iterations: int
    exact_pricings: int
    seconds: float
    message: str
    columns: tuple[Column, ...] = field(default=(), repr=False, compare=False)
    types: _Types | None = field(default=None, repr=False, compare=False)

    def summary(self) -> dict:
        """The JSON-ready figures (no columns)."""
        return {"bound": self.bound, "fractional": round(self.fractional, 6), "lp_value": round(self.lp_value, 6),
                "converged": self.converged, "iterations": self.iterations, "exact_pricings": self.exact_pricings,
                "columns": len(self.columns), "seconds": round(self.seconds, 3), "message": self.message}


def _item_types(problem: dict) -> _Types:
    keys: dict[tuple, int] = {}
    members: list[list[int]] = []
    for i, it in enumerate(problem["items"]):
        g = it.get("group")
        key = (int(it["load"]), int(it["rank_class"]), None if g is None else int(g))
        if key not in keys:
            keys[key] = len(members)
            members.append([])
        members[keys[key]].append(i)
    ks = list(keys)
    demand = np.array([len(m) for m in members], dtype=np.int64)
    ub = np.array([1 if k[2] is not None else len(m) for k, m in zip(ks, members)], dtype=np.int64)
    return _Types(np.array([k[0] for k in ks], dtype=np.int64), np.array([k[1] for k in ks], dtype=np.int64),
                  demand, ub, tuple(tuple(m) for m in members), np.array([k[2] is not None for k in ks], dtype=bool))


def _non_dominated(configs: list[dict]) -> dict[int, list[int]]:
    """Rank class -> the indices of its configs no other config matches or beats (rank class, count and
    capacity), by max_count ascending."""
    key = [(int(c["rank_class"]), int(c["max_count"]), int(c["capacity"])) for c in configs]
    order = sorted(range(len(key)), key=lambda a: (-key[a][0], -key[a][2], -key[a][1], a))
    keep: list[int] = []
    for a in order:  # a is dominated iff some kept b (earlier: rank and capacity >=) has count >= too
        if not any(key[b][0] >= key[a][0] and key[b][1] >= key[a][1] and key[b][2] >= key[a][2] for b in keep):
            keep.append(a)
    out: dict[int, list[int]] = {}
    for a in keep:
        out.setdefault(key[a][0], []).append(a)
    return {k: sorted(v, key=lambda a: key[a][1]) for k, v in sorted(out.items())}


def _exchange_pairs(T: _Types) -> list[tuple[int, int]]:
    """Dual-optimal inequalities pi_i <= pi_j: type j takes at least i's load and rank class, so in any
    column j's place can hold i instead (for i not a replica type: one more copy of a plain type is still a
    GPU content, its surplus dropped). Pairs: i to the next type up in load within its rank class, and to
    the lightest type of the next rank class that is at least as heavy; transitivity does the rest."""
    pairs = []
    ranks = sorted(set(T.rank.tolist()))
    by_rank = {r: sorted(np.flatnonzero(T.rank == r).tolist(), key=lambda t: (int(T.load[t]), t)) for r in ranks}
    for a, r in enumerate(ranks):
        ts = by_rank[r]
        up = by_rank[ranks[a + 1]] if a + 1 < len(ranks) else []
        up_loads = [int(T.load[t]) for t in up]
        for k, i in enumerate(ts):
            if T.group[i]:
                continue
            if k + 1 < len(ts):
                pairs.append((i, ts[k + 1]))
            q = int(np.searchsorted(up_loads, int(T.load[i]))) if up else 0
            if q < len(up):
                pairs.append((i, up[q]))
    return pairs


class _Master:
    """The restricted master: columns as dense type-count vectors."""

    def __init__(self, problem: dict, types: _Types):
        self.types = types
        self.configs = problem["configs"]
        self.by_rank = _non_dominated(self.configs)
        self.cols: list[Column] = []
        self.vecs: list[np.ndarray] = []
        self.seen: set = set()
        self._lp: _Lp | None = None
        self._in_lp = 0  # columns passed to the LP
        self.search_nodes = SEARCH_NODES  # per rank class and pricing; 0: the MILP alone
        self.nodes = 0  # branch-and-bound nodes searched
        self.fallbacks = 0  # searches out of nodes, priced by the MILP instead

    def add(self, col: Column) -> bool:
        key = (col.config, col.counts)
        if key in self.seen or not col.counts:
            return False
        self.seen.add(key)
        v = np.zeros(len(self.types.demand))
        for t, n in col.counts:
            v[t] = n
        self.cols.append(col)
        self.vecs.append(v)
        return True

    def solve_lp(self) -> tuple[float, np.ndarray]:
        """The restricted master's value and its duals (pi >= 0), re-optimised from the last basis."""
        if self._lp is None:
            self._lp = _Lp(self.types.demand.astype(float))
            if EXCHANGES:
                for i, j in _exchange_pairs(self.types):
                    self._lp.add_exchange(i, j)
        for v in self.vecs[self._in_lp:]:
            self._lp.add_column(v)
        self._in_lp = len(self.vecs)
        return self._lp.solve()

    # ---- columns -------------------------------------------------------------------------------
    def _fill(self, c: int, counts: dict[int, int], order: np.ndarray) -> Column:
        """The column with config ``c`` and ``counts``, topped up with more items (in ``order``) while
        they fit: they cost nothing in the LP and give the integer master fuller GPUs."""
        cf = self.configs[c]
        T = self.types
        room_n = int(cf["max_count"]) - sum(counts.values())
        room_w = int(cf["capacity"]) - sum(int(T.load[t]) * n for t, n in counts.items())
        for t in order.tolist():
            if room_n <= 0:
                break
            have = counts.get(t, 0)
            k = min(int(T.ub[t]) - have, room_n, room_w // int(T.load[t]) if T.load[t] > 0 else room_n)
            if k > 0:
                counts[t] = have + k
                room_n -= k
                room_w -= k * int(T.load[t])
        return Column(c, tuple(sorted(counts.items())))

    def value(self, col: Column, pi: np.ndarray) -> float:
        return float(sum(n * pi[t] for t, n in col.counts))

    def column_of(self, c: int, members_types: list[int]) -> Column:
        counts: dict[int, int] = {}
        for t in members_types:
            counts[t] = counts.get(t, 0) + 1
        return Column(c, tuple(sorted(counts.items())))

    def heuristic_pricing(self, pi: np.ndarray, limit: int = 30) -> list[Column]:
        """Greedy fills of every config (by dual per load, then by dual) whose value pi.a exceeds 1."""
        T = self.types
        found: list[tuple[float, Column]] = []
        for K, cs in self.by_rank.items():
            ok = np.flatnonzero((T.rank <= K) & (pi > 1e-12))
            if ok.size == 0:
                continue
            dens = ok[np.lexsort((-T.load[ok], -pi[ok] / np.maximum(T.load[ok], 1)))]
            byval = ok[np.lexsort((T.load[ok], -pi[ok]))]
            filler = np.flatnonzero(T.rank <= K)
            filler = filler[np.argsort(-T.load[filler], kind="stable")]
            for c in cs:
                cap, cnt = int(self.configs[c]["capacity"]), int(self.configs[c]["max_count"])
                best, best_counts = 1.0 + _RC_EPS, None
                for order in (dens, byval):
                    room_w, room_n, val, counts = cap, cnt, 0.0, {}
                    for t in order.tolist():
                        w = int(T.load[t])
                        k = min(int(T.ub[t]), room_n, room_w // w if w > 0 else room_n)
                        if k > 0:
                            counts[t] = k
                            room_n -= k
                            room_w -= k * w
                            val += k * pi[t]
                            if room_n == 0:
                                break
                    if val > best:
                        best, best_counts = val, counts
                if best_counts is not None:
                    found.append((best, self._fill(c, best_counts, filler)))
        found.sort(key=lambda x: -x[0])
        return [col for _, col in found[:limit]]

    def _start(self, pi: np.ndarray, ok: np.ndarray, caps: np.ndarray, cnts: np.ndarray) -> np.ndarray:
        """The best greedy fill (by dual per load) over the configs, as a MIP start (a over ``ok``, then z)."""
        T = self.types
        order = np.lexsort((-T.load[ok], -pi[ok] / np.maximum(T.load[ok], 1)))
        best, best_x = -1.0, None
        for j, (cap, cnt) in enumerate(zip(caps.tolist(), cnts.tolist())):
            room_w, room_n, val = int(cap), int(cnt), 0.0
            x = np.zeros(ok.size + caps.size)
            for i in order.tolist():
                w = int(T.load[ok[i]])
                k = min(int(T.ub[ok[i]]), room_n, room_w // w if w > 0 else room_n)
                if k > 0:
                    x[i] = k
                    room_n -= k
                    room_w -= k * w
                    val += k * pi[ok[i]]
                    if room_n == 0:
                        break
            if val > best:
                x[ok.size + j] = 1.0
                best, best_x = val, x
        return best_x

    def exact_pricing(self, pi: np.ndarray, deadline: float) -> tuple[float, list[Column], bool]:
        """(an upper bound on max pi.a over every column, the best columns found, whether every
        subproblem was solved to optimality). One MILP per config rank class."""
        T = self.types
        upper, cols, exact = 0.0, [], True
        for K, cs in self.by_rank.items():
            ok = np.flatnonzero((T.rank <= K) & (pi > 1e-12))
            if ok.size == 0:
                continue
            caps = np.array([int(self.configs[c]["capacity"]) for c in cs], dtype=float)
            cnts = np.array([int(self.configs[c]["max_count"]) for c in cs], dtype=float)
            ok = ok[T.load[ok] <= caps.max()]
            if ok.size == 0:
                continue
            nt = ok.size
            ubs = np.minimum(T.ub[ok], int(cnts.max())).astype(float)
            # a valid bound should the MILP give none: the largest count's best duals, copies counted
            trivial = float(np.sort(np.repeat(pi[ok], ubs.astype(np.int64)))[::-1][: int(cnts.max())].sum())
            left = deadline - time.monotonic()
            if left <= 0.01:
                upper, exact = max(upper, trivial), False
                continue
            if self.search_nodes > 0:  # the branch and bound first: exact in most rounds, in milliseconds
                m_k, finished, sols, nodes = price_rank_class(pi[ok], T.load[ok].astype(float), ubs, cnts, caps,
                                                              max(upper, 1.0), _BNB_TOL, self.search_nodes)
                self.nodes += nodes
                if finished:
                    upper = max(upper, m_k)
                    filler = np.flatnonzero(T.rank <= K)
                    filler = filler[np.argsort(-T.load[filler], kind="stable")]
                    for val, j, cnt in sols:
                        if val > 1.0 + _RC_EPS:
                            cols.append(self._fill(cs[j], {int(ok[t]): n for t, n in cnt.items()}, filler))
                    continue
                self.fallbacks += 1
            start = self._start(pi, ok, caps, cnts)
            value, dual, x, optimal = _knapsack_milp(pi[ok], T.load[ok].astype(float), ubs, caps, cnts,
                                                     min(left, PRICING_MILP_S), start)
            if optimal and x is not None:
                ub_k = value * (1 + _PRICING_GAP) if dual is None else max(dual, value)
            elif dual is not None:
                ub_k, exact = min(dual, trivial), False
            else:
                ub_k, exact = trivial, False
            upper = max(upper, ub_k)
            if x is not None and value > 1.0 + _RC_EPS:
                x = np.round(x).astype(np.int64)
                c = cs[int(np.argmax(x[nt:]))] if x[nt:].any() else cs[-1]
                counts = {int(ok[j]): int(x[j]) for j in range(nt) if x[j] > 0}
                cf = self.configs[c]
                if (sum(counts.values()) <= int(cf["max_count"])
                        and sum(int(T.load[t]) * n for t, n in counts.items()) <= int(cf["capacity"])):
                    filler = np.flatnonzero(T.rank <= K)
                    cols.append(self._fill(c, counts, filler[np.argsort(-T.load[filler], kind="stable")]))
        return upper, cols, exact


def _highs():
    """A quiet HiGHS instance: scipy's own build (``scipy.optimize._highspy``), which, unlike the highspy
    package, can share a process with ortools."""
    from scipy.optimize._highspy import _core

    h = _core._Highs()
    h.setOptionValue("output_flag", False)
    return h, _core


class _Lp:
    """min sum lambda, A lambda >= d, lambda >= 0, grown a column at a time and re-solved warm."""

    def __init__(self, demand: np.ndarray):
        self.h, self.core = _highs()
        n = len(demand)
        inf = self.h.getInfinity()
        self.inf = inf
        self.h.setOptionValue("presolve", "off")
        self.h.setOptionValue("simplex_strategy", 4)
        self.h.addRows(n, demand, np.full(n, inf), 0, np.zeros(n, dtype=np.int32), np.zeros(0, dtype=np.int32),
                       np.zeros(0))

    def add_exchange(self, i: int, j: int) -> None:
        """A free variable covering type i by type j's place (+1 row i, -1 row j): the dual gets pi_i <= pi_j."""
        self.h.addCol(0.0, 0.0, self.inf, 2, np.array([i, j], dtype=np.int32), np.array([1.0, -1.0]))

    def add_column(self, v: np.ndarray) -> None:
        nz = np.flatnonzero(v).astype(np.int32)
        self.h.addCol(1.0, 0.0, self.inf, len(nz), nz, v[nz].astype(float))

    def solve(self) -> tuple[float, np.ndarray]:
        self.h.run()
        if self.h.getModelStatus() != self.core.HighsModelStatus.kOptimal:
            raise RuntimeError(f"restricted master LP: {self.h.modelStatusToString(self.h.getModelStatus())}")
        sol = self.h.getSolution()
        return float(self.h.getInfo().objective_function_value), np.maximum(np.asarray(sol.row_dual), 0.0)


@contextlib.contextmanager
def _stdout_to_stderr():
    """Point fd 1 at stderr while HiGHS's MIP runs: scipy's build prints a debug line now and then
    (``transformNewIntegerFeasibleSolution``) that would corrupt a JSON answer on stdout."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError):  # no usable fd 1 (an embedding host): nothing to protect
        yield
        return
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _knapsack_milp(value: np.ndarray, load: np.ndarray, ub: np.ndarray, caps: np.ndarray, counts: np.ndarray,
                   time_limit: float, start: np.ndarray | None = None) -> tuple[float, float | None, np.ndarray | None, bool]:
    """max value.a, a integer in [0, ub], one config k (binary z_k) with load.a <= sum caps z and
    sum a <= sum counts z: (incumbent value, dual bound or None, incumbent a or None, proven optimal)."""
    h, core = _highs()
    nt, nc = len(value), len(caps)
    n = nt + nc
    h.addCols(n, np.concatenate([value, np.zeros(nc)]), np.zeros(n), np.concatenate([ub, np.ones(nc)]), 0,
              np.zeros(n, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0))
    h.changeColsIntegrality(n, np.arange(n, dtype=np.int32),
                            np.array([core.HighsVarType.kInteger] * n))
    cols = np.arange(n, dtype=np.int32)
    rows_idx = np.concatenate([cols, cols, cols[nt:]])
    rows_val = np.concatenate([load, -caps, np.ones(nt), -counts, np.ones(nc)])
    inf = h.getInfinity()
    h.addRows(3, np.full(3, -inf), np.array([0.0, 0.0, 1.0]), len(rows_idx), np.array([0, n, 2 * n], dtype=np.int32),
              rows_idx.astype(np.int32), rows_val)
    h.changeObjectiveSense(core.ObjSense.kMaximize)
    h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    h.setOptionValue("mip_rel_gap", _PRICING_GAP)
    h.setOptionValue("mip_abs_gap", 1e-9)
    if start is not None:
        sol = core.HighsSolution()
        sol.col_value = [float(v) for v in start]
        sol.value_valid = True
        h.setSolution(sol)
    with _stdout_to_stderr():
        h.run()
    status = h.getModelStatus()
    info = h.getInfo()
    dual = float(info.mip_dual_bound)
    dual = dual if math.isfinite(dual) and abs(dual) < 1e20 else None
    has_x = int(info.primal_solution_status) == 2  # kSolutionStatusFeasible
    x = np.asarray(h.getSolution().col_value) if has_x else None
    val = float(info.objective_function_value) if has_x else 0.0
    return val, dual, x, status == core.HighsModelStatus.kOptimal


def _proven(value: float) -> int:
    """A proven fractional bound on a number of GPUs, rounded up after the floating-point margin."""
    if not math.isfinite(value) or value <= 0:
        return 0
    return int(math.ceil(value * (1 - _SAFE_REL) - _SAFE_ABS))


def _start_columns(m: _Master, problem: dict, start: list[tuple[list[int], int]] | None) -> None:
    """The incumbent's GPUs (bins of item indices, config index), then one column per type alone."""
    T = m.types
    type_of = np.empty(len(problem["items"]), dtype=np.int64)
    for t, its in enumerate(T.items):
        type_of[list(its)] = t
    for members, c in start or ():
        m.add(m.column_of(c, [int(type_of[i]) for i in members]))
    for t in range(len(T.demand)):  # the smallest-rank config that holds the type alone: feasibility
        for K, cs in m.by_rank.items():
            if K < T.rank[t]:
                continue
            c = next((c for c in cs if int(m.configs[c]["capacity"]) >= T.load[t]), None)
            if c is not None:
                k = min(int(T.ub[t]), int(m.configs[c]["max_count"]), int(m.configs[c]["capacity"]) // max(int(T.load[t]), 1))
                m.add(Column(c, ((t, max(k, 1)),)))
                break


def column_generation(problem: dict, deadline: float, incumbent: int | None = None,
                      start: list[tuple[list[int], int]] | None = None) -> ColgenBound:
    """The column-generation bound of ``problem`` (the exact backends' JSON form, objective min_gpus),
    computed until ``deadline`` (``time.monotonic()``), pricing proves the LP optimum, the bound can no
    longer rise (it equals the rounded-up master value) or it meets ``incumbent``. ``start``: the
    incumbent's GPUs as (item indices, config index), the first columns."""
    t0 = time.monotonic()
    T = _item_types(problem)
    if len(T.demand) == 0:
        return ColgenBound(0, 0.0, 0.0, True, 0, 0, 0.0, "no items", (), T)
    m = _Master(problem, T)
    _start_columns(m, problem, start)
    d = T.demand.astype(float)
    best, z, converged, it, n_exact, note = 0.0, math.inf, False, 0, 0, "time limit"
    # The stability centre (the duals of the best bound so far) starts at loads over the largest capacity
    # or one over the largest count, whichever proves more: no column reaches 1 at either, so
    # d.centre is a bound (the L1 bound) without pricing.
    cap_max = max(int(c["capacity"]) for c in problem["configs"])
    n_max = max(int(c["max_count"]) for c in problem["configs"])
    by_load, by_count = T.load / cap_max, np.full(len(d), 1.0 / n_max)
    center = by_load if d @ by_load >= d @ by_count else by_count
    best = float(d @ center) / (1 + _SAFE_REL)
    since_exact = 0
    reserve = 0.3 * max(deadline - time.monotonic(), 0.0)

    def improving(cols: list[Column], pi: np.ndarray) -> bool:
        """Add the columns that improve the master at ``pi``; whether any was new."""
        return any([m.add(c) for c in cols if m.value(c, pi) > 1.0 + _RC_EPS])

    while time.monotonic() < deadline:
        it += 1
        z, pi = m.solve_lp()
        # Wentges smoothing: price at a point between the centre and the master's duals (mispricing
        # falls back on the duals themselves); it damps the duals' oscillation, the cause of tailing off.
        sep = SMOOTHING * center + (1 - SMOOTHING) * pi
        if time.monotonic() >= deadline:
            break
        if time.monotonic() >= deadline - reserve and since_exact:  # the last stretch: price exactly, for a bound
            since_exact = EXACT_EVERY
        if since_exact < EXACT_EVERY and (improving(m.heuristic_pricing(sep), pi)
                                          or improving(m.heuristic_pricing(pi), pi)):
            since_exact += 1
            continue
        since_exact, added, stop = 0, False, False
        for duals in (sep, pi):
            if time.monotonic() >= deadline:
                stop = True
                break
            n_exact += 1
            upper, cols, exact = m.exact_pricing(duals, deadline)
            if upper > 0:
                lb = float(d @ duals) / (upper * (1 + _SAFE_REL) + _SAFE_REL)
                if lb > best:
                    best, center = lb, duals.copy()
            if duals is pi and exact and upper <= 1.0 + _PRICING_GAP:
                converged, note, stop = True, "LP optimum proven (within the pricing gap)", True
                break
            if incumbent is not None and _proven(best) >= incumbent:
                note, stop = "bound meets the incumbent", True
                break
            if _proven(best) >= math.ceil(z - 1e-9):
                note, stop = "bound equals the rounded-up master value", True
                break
            if improving(cols, pi):
                added = True
                break
            if duals is pi and not exact:
                note, stop = "pricing out of time", True
        if stop:
            break
        if not added:
            note = "stalled: pricing's columns are in the master already (tolerances)"
            break
    return ColgenBound(_proven(best), best, z, converged, it, n_exact, time.monotonic() - t0,
                       f"{note}; {len(m.cols)} columns, {it} LPs, {n_exact} exact pricings", tuple(m.cols), T)


def integer_master(problem: dict, cg: ColgenBound, deadline: float, lower: int,
                   below: int) -> tuple[list[int], list[int]] | None:
    """A placement with fewer than ``below`` GPUs (and at least ``lower``) made of the generated columns,
    as (bin per item, config index per bin), found by a MILP over the columns before ``deadline``; None
    when there is none among them or no time."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csc_matrix

    T = cg.types
    left = deadline - time.monotonic()
    if T is None or not cg.columns or left < 0.05 or below - 1 < lower:
        return None
    cols = list(cg.columns)
    A = np.zeros((len(T.demand), len(cols)))
    for j, col in enumerate(cols):
        for t, n in col.counts:
            A[t, j] = n
    A = csc_matrix(A)
    cons = [LinearConstraint(A, T.demand.astype(float), np.inf),
            LinearConstraint(csc_matrix(np.ones((1, len(cols)))), float(lower), float(below - 1))]
    res = milp(np.ones(len(cols)), constraints=cons, integrality=np.ones(len(cols)),
               bounds=Bounds(0, np.inf), options={"time_limit": left, "mip_rel_gap": 0.0})
    if res.x is None:
        return None
    lam = np.round(res.x).astype(np.int64)
    pools = [list(its) for its in T.items]
    bins = [-1] * len(problem["items"])
    configs: list[int] = []
    for j in np.flatnonzero(lam).tolist():
        for _ in range(int(lam[j])):
            members = []
            for t, n in cols[j].counts:
                take = min(n, len(pools[t]))
                members += [pools[t].pop() for _ in range(take)]
            if members:
                for i in members:
                    bins[i] = len(configs)
                configs.append(cols[j].config)
    if any(b < 0 for b in bins) or len(configs) >= below:
        return None
    return bins, configs


def best_bound(candidates: list[tuple[str, float | None]]) -> tuple[int, str]:
    """The largest of the (method, bound) candidates, rounded up, and the first method that proves it."""
    vals = [(m, int(math.ceil(b - 1e-9))) for m, b in candidates if b is not None and math.isfinite(b)]
    top = max((v for _, v in vals), default=0)
    return top, next((m for m, v in vals if v == top), BOUND_METHODS[0])


class ColgenSolver(Solver):
    """Column generation on the configuration model, greedy as the incumbent, a MILP over the columns."""

    name = "colgen"

    def __init__(self, bound_share: float = 0.85):
        self.bound_share = bound_share  # of the time limit for column generation; the rest for the integer master

    def solve(self, problem: PlacementProblem) -> Assignment:
        from ..errors import InputError
        from .bounds import lower_bounds
        from .greedy import GreedySolver

        if problem.objective is not Objective.MIN_GPUS:
            raise InputError("objective", f"colgen minimises GPUs; objective {problem.objective.value!r} needs "
                             "greedy, cpsat or milp")
        t0, started = time.perf_counter(), time.monotonic()
        deadline = started + problem.time_limit_s
        warm = GreedySolver().solve(problem)
        if warm.status is SolveStatus.INFEASIBLE:
            return warm
        plain = problem.to_plain()
        comb = lower_bounds(plain)
        details = {"backend": "colgen", "bounds": dict(comb)}
        t_warm = time.monotonic()
        phases = {"warm_start": t_warm - started}
        if warm.num_gpus <= comb["best"]:
            details.update(bound_method="combinatorial", phases=phases, wall_seconds=time.perf_counter() - t0)
            return Assignment(warm.bins, warm.configs, SolveStatus.OPTIMAL, lower_bound=float(comb["best"]),
                              objective_value=float(warm.num_gpus), message="greedy meets the combinatorial bound",
                              details=details)
        index = {c: k for k, c in enumerate(problem.configs)}
        start = [(list(b), index[c]) for b, c in zip(warm.bins, warm.configs)]
        cg = column_generation(plain, started + self.bound_share * problem.time_limit_s, warm.num_gpus, start)
        phases["column_generation"] = time.monotonic() - t_warm
        lb, method = best_bound([("combinatorial", comb["best"]), ("column_generation", cg.bound)])
        details["bounds"]["column_generation"] = cg.bound
        details["colgen"] = cg.summary()
        bins, configs, msg = warm.bins, warm.configs, f"colgen: {cg.message}"
        if lb < warm.num_gpus:
            t_ip = time.monotonic()
            found = integer_master(plain, cg, deadline, lb, warm.num_gpus)
            phases["integer_master"] = time.monotonic() - t_ip
            if found is not None:
                members: list[list[int]] = [[] for _ in found[1]]
                for i, g in enumerate(found[0]):
                    members[g].append(i)
                bins = tuple(tuple(ms) for ms in members)
                configs = tuple(bin_config(problem, ms) or problem.configs[c] for ms, c in zip(members, found[1]))
                msg += f"; the column MILP found {len(bins)} GPUs (greedy {warm.num_gpus})"
            else:
                msg += f"; no cover of the columns beats greedy's {warm.num_gpus} GPUs"
        status = SolveStatus.OPTIMAL if len(bins) <= lb else (
            SolveStatus.TIME_LIMIT if time.monotonic() >= deadline - 0.05 or not cg.converged else SolveStatus.FEASIBLE)
        details.update(bound_method=method, phases=phases, wall_seconds=time.perf_counter() - t0)
        return Assignment(bins, configs, status, lower_bound=float(lb), objective_value=float(len(bins)),
                          message=msg, details=details)


SOLVERS.register("colgen", ColgenSolver, summary="column generation (configuration LP bound) + MILP over the columns",
                 requires=("scipy",))
