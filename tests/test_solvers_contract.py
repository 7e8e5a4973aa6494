"""The contract every registered solver (``packer.solvers.SOLVERS``) meets: the public kit's checks
(``packer.testing.check_solver``: small capacity tables with a known optimum, no twin), then, end to end
through ``packer.solve`` with the real twin, what the kit does not cover: the twin's verification and
each GPU's vLLM flags, replicas of a hot adapter on distinct GPUs, the same answer for the same seed
through the whole pipeline, the time limit, and min_latency spreading the load over the budget. Every
check runs on every registered solver, so a new backend cannot skip them.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest

import packer
from packer.errors import InputError
from packer.predictors import TwinPredictor
from packer.profile import load_profile
from packer.solvers import SOLVERS, SolveStatus, get_solver
from packer.testing import check_solver

PROFILE = "llama-3.1-8b-instruct@h100-64gb"
REGISTERED = [pytest.param(name, marks=pytest.mark.skipif(not SOLVERS.available(name),
                                                          reason=f"{name}'s libraries are not installed"))
              for name in SOLVERS.names()]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # One capacity cache per test session: tables are measured once and shared by the tests.
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "packer-cache"))


def fast_twin() -> TwinPredictor:
    """The real twin on a shorter window (300 s, not 600 s), to keep the suite quick."""
    return TwinPredictor(duration_s=300.0)


def workload(n: int = 24, total_rate: float = 40.0, seed: int = 0, ranks=(8, 16), **extra) -> dict:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n + 1) ** 1.1
    w = w / w.sum()
    return {"profile": PROFILE,
            "adapters": [{"id": f"ad{i}", "rank": int(rng.choice(ranks)), "rate": float(total_rate * w[i])}
                         for i in range(n)],
            "lengths": {"input_mean": 222.7, "output_mean": 196.1}, **extra}


def run(wl: dict, solver: str, **kw):
    return packer.solve(wl, solver=solver, predictor=fast_twin(), workers=1, time_limit=kw.pop("time_limit", 20), **kw)


@pytest.mark.parametrize("solver", REGISTERED)
def test_meets_the_contract_kit(solver):
    check_solver(get_solver(solver))


def check_placement(wl: dict, r) -> None:
    """Every adapter placed once, or replicas whose shares sum to one; flags that start."""
    rates = {a["id"]: a["rate"] for a in wl["adapters"]}
    shares: dict[str, float] = {}
    served: dict[str, float] = {}
    mem = load_profile(wl["profile"]).memory
    for g in r.gpus:
        ids = [a.id for a in g.adapters]
        assert len(ids) == len(set(ids)), "an adapter appears twice on one GPU"
        assert g.max_cpu_loras >= g.max_loras >= 1
        assert g.max_cpu_loras >= len(g.adapters)
        assert g.max_lora_rank >= max(a.rank for a in g.adapters)
        assert mem.startup_error(g.max_loras, g.max_lora_rank, 0.9, True) is None
        for a in g.adapters:
            shares[a.id] = shares.get(a.id, 0.0) + a.share
            served[a.id] = served.get(a.id, 0.0) + a.rate
    assert set(shares) == set(rates)
    for k, s in shares.items():
        assert s == pytest.approx(1.0)
        assert served[k] == pytest.approx(rates[k])
    assert r.num_gpus == len(r.gpus)


@pytest.mark.parametrize("solver", REGISTERED)
def test_places_every_adapter_and_verifies(solver):
    wl = workload()
    before = copy.deepcopy(wl)
    r = run(wl, solver)
    assert wl == before, "the workload was mutated"
    check_placement(wl, r)
    assert r.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE, SolveStatus.TIME_LIMIT)
    assert r.verified and all(g.verified for g in r.gpus)
    assert r.lower_bound is not None and r.lower_bound <= r.num_gpus
    assert r.solver == solver and r.predictor == "twin"
    d = r.to_dict()
    for key in ("status", "num_gpus", "lower_bound", "gap", "verified", "wall_seconds", "gpus"):
        assert key in d
    assert {"adapters", "max_loras", "max_cpu_loras", "max_lora_rank"} <= set(d["gpus"][0])


@pytest.mark.parametrize("solver", REGISTERED)
def test_same_seed_same_answer(solver):
    wl = workload(n=16, seed=3)
    a, b = run(wl, solver, seed=5), run(wl, solver, seed=5)
    assert [[(x.id, x.share) for x in g.adapters] for g in a.gpus] == \
           [[(x.id, x.share) for x in g.adapters] for g in b.gpus]
    assert [(g.max_loras, g.max_lora_rank) for g in a.gpus] == [(g.max_loras, g.max_lora_rank) for g in b.gpus]


@pytest.mark.parametrize("solver", REGISTERED)
def test_hot_adapter_is_replicated(solver):
    wl = workload(n=6, total_rate=10.0)
    wl["adapters"][0]["rate"] = 60.0  # about twice what one GPU sustains
    r = run(wl, solver)
    check_placement(wl, r)
    hot = r.placement()["ad0"]
    assert len(hot) >= 2 and sum(s for _, s in hot) == pytest.approx(1.0)
    assert len({g for g, _ in hot}) == len(hot), "replicas of one adapter share a GPU"


@pytest.mark.realtime
@pytest.mark.parametrize("solver", REGISTERED)
def test_time_limit_is_honoured(solver):
    wl = workload(n=60, total_rate=120.0, seed=1, ranks=(8, 16, 32))
    run(wl, "greedy")  # measure the capacity model first: the limit bounds the search, not the measuring
    t0 = time.perf_counter()
    r = run(wl, solver, time_limit=2.0, verify=False)
    wall = time.perf_counter() - t0
    assert wall < 2.0 + 15.0, f"{solver} took {wall:.1f} s with a 2 s limit"
    check_placement(wl, r)
    if r.status is SolveStatus.TIME_LIMIT:
        assert r.lower_bound <= r.num_gpus and r.gap >= 0


@pytest.mark.parametrize("solver", REGISTERED)
def test_min_latency_spreads_load_over_the_budget(solver):
    wl = workload(n=20, total_rate=30.0)
    fewest = run(wl, "greedy")
    budget = fewest.num_gpus + 1
    try:
        r = run(wl, solver, objective="min_latency", gpus=budget)
    except InputError as e:  # the contract lets a solver refuse min_latency, saying so (ladder does)
        if e.field != "objective":
            raise
        pytest.skip(f"{solver} refuses min_latency")
    check_placement(wl, r)
    assert r.num_gpus <= budget
    assert max(g.utilisation for g in r.gpus) <= max(g.utilisation for g in fewest.gpus) + 1e-9
    assert r.objective == "min_latency"


@pytest.mark.parametrize("solver", REGISTERED)
def test_answer_is_at_least_the_column_generation_bound(solver):
    """Every result carries the best bound known and what proved it, and no answer beats the
    column-generation bound (computed here on its own)."""
    import time as _time

    from packer.planner import build_problem, parse_workload
    from packer.solvers.colgen import BOUND_METHODS, column_generation
    from packer.solvers import Objective

    wl = workload(n=30, total_rate=70.0, seed=4, ranks=(8, 16, 32))
    r = run(wl, solver, verify=False)
    p = build_problem(parse_workload(wl), fast_twin(), objective=Objective.MIN_GPUS, gpus=None, time_limit_s=20,
                      seed=0, workers=1)
    cg = column_generation(p.to_plain(), _time.monotonic() + 20.0)
    assert r.num_gpus >= cg.bound
    assert r.lower_bound >= cg.bound and r.lower_bound <= r.num_gpus
    assert r.bound_method in BOUND_METHODS + ("cpsat", "milp")
    assert r.to_dict()["bound_method"] == r.bound_method


def test_ladder_rejects_min_latency():
    with pytest.raises(InputError, match="objective"):
        run(workload(n=8), "ladder", objective="min_latency", gpus=2)


def test_budget_shortfall_is_reported():
    wl = workload(n=30, total_rate=90.0)
    need = run(wl, "greedy").num_gpus
    r = run(wl, "greedy", gpus=1)
    assert r.status is SolveStatus.INFEASIBLE
    assert r.short_by == need - 1 and str(need) in r.message


def test_greedy_is_never_worse_than_ladder_here():
    wl = workload(n=40, total_rate=80.0, seed=2, ranks=(8, 16, 32))
    assert run(wl, "greedy").num_gpus <= run(wl, "ladder").num_gpus


@pytest.mark.parametrize("bad, field", [
    ({"adapters": []}, "adapters"),
    ({"adapters": [{"id": "x", "rank": 8, "rate": -1.0}]}, "adapters[0].rate"),
    ({"gpus": 0}, "gpus"),
    ({"objective": "cheapest"}, "objective"),
    ({"profile": "gpt-9@tpu"}, "profile"),
    ({"colour": "blue"}, "colour"),
])
def test_bad_workloads_name_the_field(bad, field):
    wl = {**workload(n=4), **bad}
    with pytest.raises(InputError) as e:
        run(wl, "greedy")
    assert e.value.field == field


def test_unknown_solver_and_predictor_list_the_valid_ones():
    with pytest.raises(InputError, match="valid: colgen, cpsat, dlora, greedy, greedy-split, ladder, loraserve, milp"):
        packer.solve(workload(n=4), solver="simplex")
    with pytest.raises(InputError, match="valid: forest, tree, twin"):
        packer.solve(workload(n=4), predictor="oracle")
