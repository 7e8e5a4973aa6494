"""The exact backends (CP-SAT and Pyomo + HiGHS) on the plain capacity model, with the real solvers.

Both backends run in this one pytest process: each solve is a child process (ortools and highspy cannot be
loaded together), so this also checks that design. Solves are batched on a small thread pool to keep the
module fast (each child pays ~1-2 s of imports).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from packer.solvers.bounds import PERMILLE, latency_lower_bound, lower_bounds, trivially_optimal
from packer.defaults import GRACE_S
from packer.solvers.exact.runner import (_checked, backend_available, check_placement, placement_objective,
                                         solve_exact)

BACKENDS = [pytest.param(b, marks=pytest.mark.skipif(not backend_available(b), reason=f"{b} not installed"))
            for b in ("cpsat", "milp")]


def problem(loads, ranks, configs, objective="min_gpus", gpus=None, warm=None, time_limit=20.0, seed=0) -> dict:
    return {"items": [{"load": int(w), "rank_class": int(r)} for w, r in zip(loads, ranks)],
            "configs": [{"rank_class": k, "max_count": n, "capacity": c} for k, n, c in configs],
            "objective": objective, "max_bins": gpus if objective == "min_latency" else len(loads),
            "gpus": gpus, "warm_start": warm, "time_limit_s": time_limit, "workers": 1, "seed": seed}


def solve_all(problems: list[dict], backend: str) -> list[dict]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda p: solve_exact(p, backend), problems))


def assert_valid(p: dict, ans: dict) -> None:
    """The answer's placement obeys every rule and its objective and bound are consistent."""
    assert ans["bins"] is not None, ans
    assert check_placement(p, ans["bins"], ans["configs"]) is None
    # recheck independently of check_placement: every item once, every bin within its config
    assert len(ans["bins"]) == len(p["items"]) and sorted(set(ans["bins"])) == list(range(len(ans["configs"])))
    for g, c in enumerate(ans["configs"]):
        cf = p["configs"][c]
        members = [it for it, b in zip(p["items"], ans["bins"]) if b == g]
        assert len(members) <= cf["max_count"]
        assert sum(it["load"] for it in members) <= cf["capacity"]
        assert max(it["rank_class"] for it in members) <= cf["rank_class"]
    assert ans["objective"] == placement_objective(p, ans["bins"], ans["configs"])
    assert ans["bound"] is None or ans["bound"] <= ans["objective"]
    if ans["status"] == "optimal":
        assert ans["bound"] == ans["objective"]


# -- brute force ------------------------------------------------------------------------------------------

def partitions(n: int):
    """All set partitions of range(n), as lists of blocks."""
    if n == 0:
        yield []
        return
    for part in partitions(n - 1):
        for k in range(len(part)):
            yield part[:k] + [part[k] + [n - 1]] + part[k + 1:]
        yield part + [[n - 1]]


def block_cost(p: dict, block: list[int]) -> int | None:
    """min_gpus: 0 if some config holds the block (else None); min_latency: its best per-mille
    utilisation."""
    load = sum(p["items"][i]["load"] for i in block)
    rank = max(p["items"][i]["rank_class"] for i in block)
    costs = [math.ceil(PERMILLE * load / c["capacity"]) for c in p["configs"]
             if c["rank_class"] >= rank and c["max_count"] >= len(block) and c["capacity"] >= load]
    if not costs:
        return None
    return 0 if p["objective"] == "min_gpus" else min(costs)


def brute_force(p: dict) -> int | None:
    """The optimal objective by enumeration (<= 7 items), None if infeasible."""
    best = None
    limit = p["gpus"] if p["objective"] == "min_latency" else p["max_bins"]
    for part in partitions(len(p["items"])):
        if len(part) > limit:
            continue
        costs = [block_cost(p, b) for b in part]
        if any(c is None for c in costs):
            continue
        value = len(part) if p["objective"] == "min_gpus" else max(costs, default=0)
        best = value if best is None else min(best, value)
    return best


def random_problem(rng: np.random.Generator, objective: str) -> dict:
    n = int(rng.integers(3, 8))
    configs = [(int(rng.integers(0, 3)), int(rng.integers(1, 5)), int(rng.integers(8, 30)))
               for _ in range(int(rng.integers(1, 5)))]
    configs.append((2, 1, 30))  # every item fits alone: the instance is feasible for min_gpus
    gpus = int(rng.integers(2, n + 1)) if objective == "min_latency" else None
    return problem(rng.integers(0, 25, n), rng.integers(0, 3, n), configs, objective, gpus=gpus,
                   seed=int(rng.integers(100)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_brute_force(backend):
    rng = np.random.default_rng(7)
    problems = [random_problem(rng, obj) for obj in ("min_gpus", "min_latency") for _ in range(3)]
    for p, ans in zip(problems, solve_all(problems, backend)):
        expected = brute_force(p)
        if expected is None:
            assert ans["status"] == "infeasible", ans
            continue
        assert ans["status"] == "optimal", ans
        assert_valid(p, ans)
        assert ans["objective"] == expected, (p, ans)


# -- classical bin packing (one config) -------------------------------------------------------------------

def perfect_packing(bins: int, cap: int, seed: int) -> list[int]:
    """Items that fill ``bins`` bins of capacity ``cap`` exactly (optimum = bins)."""
    rng = np.random.default_rng(seed)
    loads = []
    for _ in range(bins):
        cuts = np.sort(rng.choice(np.arange(1, cap), size=3, replace=False))
        loads += np.diff(np.concatenate(([0], cuts, [cap]))).tolist()
    return loads


@pytest.mark.parametrize("backend", BACKENDS)
def test_classical_bin_packing(backend):
    cases = [([35] * 7, 4),  # two per bin: optimum 4 while L1 = L2 = 3, so the solver must prove it
             (perfect_packing(4, 100, seed=3), 4)]
    problems = [problem(loads, [0] * len(loads), [(0, 100, 100)]) for loads, _ in cases]
    for p, ans, (_, optimum) in zip(problems, solve_all(problems, backend), cases):
        assert ans["status"] == "optimal", ans
        assert_valid(p, ans)
        assert ans["objective"] == optimum


# -- infeasibility -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_item_fitting_no_config_is_infeasible(backend):
    too_big = problem([5, 50], [0, 0], [(1, 4, 40)])
    too_high_rank = problem([5, 5], [0, 2], [(1, 4, 40)])
    for p in (too_big, too_high_rank):
        ans = solve_exact(p, backend)
        assert ans["status"] == "infeasible" and ans["bins"] is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_min_latency_with_too_few_gpus_is_infeasible(backend):
    by_bounds = problem([30, 30, 30], [0, 0, 0], [(0, 3, 50)], "min_latency", gpus=1)  # load 90 > 50
    # The bounds miss this one (one bin of 2 items and capacity 10 suffices for them), the solver proves
    # it: the rank-1 item needs the 1-item config, so the other item needs a second GPU.
    by_solver = problem([1, 1], [1, 0], [(1, 1, 10), (0, 2, 10)], "min_latency", gpus=1)
    assert lower_bounds(by_solver)["best"] == 1 and latency_lower_bound(by_solver) is not None
    for p in (by_bounds, by_solver):
        ans = solve_exact(p, backend)
        assert ans["status"] == "infeasible", ans
    assert brute_force(by_solver) is None


# -- time limit, warm start, post-check, determinism -------------------------------------------------------

def big_problem(n: int = 150) -> dict:
    rng = np.random.default_rng(0)
    counts = [1, 2, 4, 8, 16, 32, 64, 128]
    configs = [(k, m, int(10000 - 6000 * math.log2(m) / 7 - 200 * k)) for k in range(3) for m in counts]
    loads, ranks = rng.integers(1, 1001, n), rng.integers(0, 3, n)
    # warm start: items in index order, 4 per GPU on the top-rank 4-item config (valid, far from optimal)
    cfg = configs.index(next(c for c in configs if c[:2] == (2, 4)))
    bins = [i // 4 for i in range(n)]
    warm = {"bins": bins, "configs": [cfg] * (max(bins) + 1)}
    return problem(loads, ranks, configs, warm=warm, time_limit=2.0)


@pytest.mark.realtime
@pytest.mark.parametrize("backend", BACKENDS)
def test_time_limit_is_honoured(backend):
    p = big_problem()
    assert check_placement(p, p["warm_start"]["bins"], p["warm_start"]["configs"]) is None
    t = time.monotonic()
    ans = solve_exact(p, backend)
    wall = time.monotonic() - t
    assert wall < p["time_limit_s"] + GRACE_S, ans
    assert ans["status"] in ("time_limit", "optimal", "feasible"), ans
    assert_valid(p, ans)
    assert ans["objective"] <= len(p["warm_start"]["configs"])
    assert ans["bound"] is not None and lower_bounds(p)["best"] <= ans["bound"] <= ans["objective"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_warm_start_meeting_the_bound_short_circuits(backend):
    # warm-start labels need not be contiguous: bins 7 and 3 are used
    p = problem([5, 5, 4, 3], [0, 1, 0, 0], [(1, 2, 10)], warm={"bins": [7, 7, 3, 3], "configs": [0] * 8})
    ans = solve_exact(p, backend)
    assert ans["status"] == "optimal" and ans["objective"] == 2 and ans["bound"] == 2
    assert "no solver run" in ans["message"] and ans["wall_seconds"] < 0.5
    assert_valid(p, ans)
    assert trivially_optimal(p, 2)


def test_post_check_rejects_invalid_placements():
    p = problem([6, 5, 4], [0, 1, 0], [(1, 2, 10), (0, 3, 20)])
    assert check_placement(p, [0, 0, 1], [0, 1]) == "bin 0 carries load 11, config 0 has capacity 10"
    assert "holds 3 items" in check_placement(p, [0, 0, 0], [0])
    assert "rank class 1" in check_placement(p, [0, 0, 1], [1, 0])
    assert "empty" in check_placement(p, [0, 2, 2], [1, 0, 0])
    assert "out of range" in check_placement(p, [0, 1, 2], [0, 1])
    assert check_placement(p, [0, 1, 0], [1, 0]) is None


def test_invalid_solver_answer_becomes_error():
    """A real answer, then tampered with: the parent must not pass an infeasible placement on (the check
    is the same for both backends)."""
    backend = "cpsat" if backend_available("cpsat") else "milp"
    p = problem([6, 5, 4, 3], [0, 1, 0, 0], [(1, 2, 10)], warm={"bins": [0, 1, 2, 3], "configs": [0] * 4})
    ans = solve_exact(p, backend)
    assert ans["status"] == "optimal" and ans["objective"] == 2
    assert_valid(p, ans)
    bad = dict(ans, bins=[0] * 4, configs=[0])  # 4 items on one 2-item bin
    warm = (p["warm_start"]["bins"], p["warm_start"]["configs"])
    out = _checked(p, backend, bad, warm, 4, 2, time.monotonic(), "")
    assert out["status"] == "error" and "rejected an invalid placement" in out["message"]
    assert out["bins"] == warm[0] and out["objective"] == 4


def test_worker_crash_is_an_error_with_the_warm_start():
    p = problem([6, 5, 4, 3], [0, 1, 0, 0], [(1, 2, 10)], warm={"bins": [0, 1, 2, 3], "configs": [0] * 4})
    p["seed"] = "not a number"  # passes the parent's checks, breaks the worker
    ans = solve_exact(p, "cpsat")
    assert ans["status"] == "error" and "ValueError" in ans["message"]
    assert ans["bins"] == [0, 1, 2, 3] and ans["objective"] == 4


def test_child_is_killed_at_the_hard_limit(monkeypatch):
    """time_limit_s + GRACE_S is a hard wall-clock limit: here 0.3 s, less than the child's start-up."""
    import packer.solvers.exact.runner as exact

    monkeypatch.setattr(exact, "GRACE_S", 0.3 - 2.0)
    p = big_problem()
    t = time.monotonic()
    ans = exact.solve_exact(p, "cpsat")
    assert time.monotonic() - t < 1.5
    assert ans["status"] == "time_limit" and "killed" in ans["message"]
    assert ans["bins"] == p["warm_start"]["bins"] and ans["bound"] == lower_bounds(p)["best"]


def test_cpsat_is_deterministic_with_one_worker():
    if not backend_available("cpsat"):
        pytest.skip("ortools not installed")
    rng = np.random.default_rng(11)
    p = problem(rng.integers(1, 40, 14), rng.integers(0, 3, 14), [(0, 4, 60), (1, 3, 55), (2, 2, 50), (2, 5, 40)],
                seed=5)
    a, b = solve_all([p, dict(p)], "cpsat")
    assert a["status"] == "optimal" and (a["bins"], a["configs"]) == (b["bins"], b["configs"])
    assert_valid(p, a)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        solve_exact(problem([1], [0], [(0, 1, 1)]), "gurobi")
    assert not backend_available("gurobi")


# -- bounds ------------------------------------------------------------------------------------------------

tiny = st.fixed_dictionaries({
    "loads": st.lists(st.integers(0, 30), min_size=1, max_size=7),
    "ranks": st.lists(st.integers(0, 2), min_size=7, max_size=7),
    "configs": st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5), st.integers(1, 40)), min_size=1, max_size=4),
    "gpus": st.integers(1, 7),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tiny)
def test_bounds_are_valid(case):
    n = len(case["loads"])
    p = problem(case["loads"], case["ranks"][:n], case["configs"])
    bounds = lower_bounds(p)
    assert bounds["best"] == max(v for k, v in bounds.items() if k != "best")
    assert bounds["load_cardinality"] >= bounds["cardinality"]
    optimum = brute_force(p)
    if optimum is not None:
        assert bounds["best"] <= optimum, (bounds, optimum)
    lat = dict(p, objective="min_latency", gpus=case["gpus"], max_bins=case["gpus"])
    t_opt, t_lb = brute_force(lat), latency_lower_bound(lat)
    if t_opt is None:
        return
    assert t_lb is not None and t_lb <= t_opt, (t_lb, t_opt)


def test_bounds_are_fast_and_use_counts():
    rng = np.random.default_rng(0)
    n = 2000
    counts = [1, 2, 4, 8, 16, 32, 64, 128]
    configs = [(k, m, int(10000 - 6000 * math.log2(m) / 7)) for k in range(3) for m in counts]
    p = problem(rng.integers(1, 1001, n), rng.integers(0, 3, n), configs)
    t = time.monotonic()
    b = lower_bounds(p)
    assert time.monotonic() - t < 1.0
    assert b["cardinality"] > b["l1"]  # capacities shrink with the count: the count-aware bound is stronger
    assert b["load_cardinality"] > b["cardinality"]  # few-item bins cannot use their large capacity
    # hand-checked: 4 items of 6, capacity 10 for 1 item or 8 for 2: 2 bins hold at most 8 + 8 < 24
    # (or 10 + 8 with counts 1 and 3 is not allowed), 3 bins 10 + 10 + 8 = 28 >= 24
    small = problem([6] * 4, [0] * 4, [(0, 1, 10), (0, 2, 8)])
    assert lower_bounds(small)["cardinality"] == 3 and brute_force(small) == 4
