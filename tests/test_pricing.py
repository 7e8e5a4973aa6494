"""The column-generation pricing (``packer.solvers.pricing``): the branch and bound's value equals
enumeration and the pricing MILP on random small instances, its solutions are columns, its bound M
holds, and the master's dual-optimal inequalities leave the bound valid."""

from __future__ import annotations

import time

import numpy as np
import pytest

from packer.solvers.colgen import _exchange_pairs, _item_types, _knapsack_milp, column_generation
from packer.solvers.pricing import brute_force_pricing, price_rank_class


def random_subproblem(rng: np.random.Generator):
    nt = int(rng.integers(1, 8))
    values = rng.uniform(0, 1, nt) * (rng.random(nt) < 0.9)
    loads = rng.integers(1, 50, nt).astype(float)
    ubs = rng.integers(1, 4, nt)
    nc = int(rng.integers(1, 4))
    counts = np.sort(rng.choice(np.arange(1, 10), nc, replace=False))
    caps = np.sort(rng.integers(10, 120, nc))[::-1].astype(float)
    return values, loads, ubs, counts, caps


def test_branch_and_bound_equals_enumeration_and_returns_columns():
    rng = np.random.default_rng(17)
    for _ in range(200):
        values, loads, ubs, counts, caps = random_subproblem(rng)
        M, finished, sols, _ = price_rank_class(values, loads, ubs, counts, caps, 0.0, 1e-9)
        exact = brute_force_pricing(values, loads, ubs, counts, caps)
        assert finished and exact - 1e-9 <= M <= exact + 1e-6
        assert (sols[0][0] if sols else 0.0) == pytest.approx(exact, abs=1e-9)
        for value, c, cnt in sols:  # every solution is a column of its config, at its value
            assert sum(cnt.values()) <= counts[c] and sum(loads[t] * n for t, n in cnt.items()) <= caps[c]
            assert all(n <= ubs[t] for t, n in cnt.items())
            assert value == pytest.approx(sum(values[t] * n for t, n in cnt.items()))


def test_branch_and_bound_equals_the_pricing_milp():
    rng = np.random.default_rng(4)
    for _ in range(40):
        nt = int(rng.integers(5, 25))
        values = rng.uniform(0.01, 0.3, nt)
        loads = rng.integers(500, 30000, nt).astype(float)
        ubs = rng.integers(1, 3, nt)
        counts = np.array([2, 4, 8, 16])
        caps = np.array([60000.0, 55000.0, 50000.0, 40000.0])
        M, finished, sols, _ = price_rank_class(values, loads, ubs, counts, caps, 0.0, 1e-9)
        value, dual, x, optimal = _knapsack_milp(values, loads, ubs.astype(float), caps, counts.astype(float), 10.0)
        assert finished and optimal
        assert M == pytest.approx(value, rel=2e-4, abs=1e-7) and sols[0][0] == pytest.approx(value, rel=2e-4)


def test_a_search_out_of_nodes_says_so():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.99, 1.01, 60) / 20
    loads = np.round(values * 1e5)
    M, finished, _, nodes = price_rank_class(values, loads, np.ones(60, dtype=int), np.array([30]), np.array([1e5]),
                                             0.0, 1e-12, max_nodes=50)
    assert not finished and nodes > 50


def test_exchange_pairs_only_go_up_in_load_and_rank_and_skip_replicas():
    problem = {"items": [{"load": 5, "rank_class": 0}, {"load": 7, "rank_class": 0}, {"load": 6, "rank_class": 1},
                         {"load": 4, "rank_class": 0, "group": 0}, {"load": 4, "rank_class": 0, "group": 0}],
               "configs": [{"rank_class": 1, "max_count": 3, "capacity": 20}]}
    T = _item_types(problem)
    pairs = _exchange_pairs(T)
    assert pairs
    for i, j in pairs:
        assert T.load[j] >= T.load[i] and T.rank[j] >= T.rank[i] and not T.group[i]


def test_the_bound_with_and_without_exchanges_agree_on_small_instances():
    """The dual-optimal inequalities do not change the LP: converged runs prove the same bound."""
    from packer.solvers import colgen

    rng = np.random.default_rng(3)
    compared = 0
    for _ in range(10):
        n = int(rng.integers(4, 14))
        problem = {"items": [{"load": int(x), "rank_class": int(r)} for x, r in
                             zip(rng.integers(1000, 9000, n), rng.integers(0, 2, n))],
                   "configs": [{"rank_class": 0, "max_count": 3, "capacity": 12000},
                               {"rank_class": 1, "max_count": 2, "capacity": 11000},
                               {"rank_class": 1, "max_count": 4, "capacity": 9000}]}
        got = []
        for flag in (True, False):
            colgen.EXCHANGES = flag
            try:
                cg = column_generation(problem, time.monotonic() + 20.0)
            finally:
                colgen.EXCHANGES = True
            got.append(cg)
        # converged, or stopped with the bound at the rounded-up master value: either way ceil(LP)
        if all(c.converged or "rounded-up" in c.message for c in got):
            assert got[0].bound == got[1].bound
            compared += 1
        if all(c.converged for c in got):
            assert got[0].lp_value == pytest.approx(got[1].lp_value, abs=1e-6)
    assert compared >= 8
