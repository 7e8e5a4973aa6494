"""``greedy-split``: solver-chosen uneven replica splits of hot adapters (``packer.solvers.split``).

On small hot-adapter workloads with the real capacity model (and, once, the real twin): each adapter's
shares carry its whole rate, every share is at least the minimum, the routing weights are the shares,
the twin verifies each share at its own rate, and the uneven split never needs more GPUs than equal
replicas."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import packer
from conftest import packer_cli as cli
from packer.deploy.export import routing
from packer.errors import InputError
from packer.planner import build_problem, parse_workload
from packer.predictors import TwinPredictor
from packer.solvers import Objective, get_solver
from packer.solvers.base import capacity_units, load_units
from packer.solvers.split import GreedySplitSolver, share_units, split_lower_bound

PROFILE = "llama-3.1-8b-instruct@h100-64gb"
SINGLE_RATE = 41.05  # req/s one GPU sustains for one rank-16 adapter alone on PROFILE's default capacity model


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PACKER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "packer-cache"))


def fast_twin() -> TwinPredictor:
    return TwinPredictor(duration_s=300.0)


def hot_workload(seed: int, n: int = 6, hot: int = 2) -> dict:
    """``n`` Zipf adapters and ``hot`` adapters at 1.1-3.6x one GPU (as ``benchmarks/split.py``)."""
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n + 1) ** 1.1
    rates = list(w / w.sum() * rng.uniform(0.5, 3.0) * SINGLE_RATE) + list(rng.uniform(1.1, 3.6, hot) * SINGLE_RATE)
    return {"profile": PROFILE, "lengths": {"input_mean": 222.7, "output_mean": 196.1},
            "adapters": [{"id": f"a{i}", "rank": int(rng.choice([8, 16])), "rate": float(r)}
                         for i, r in enumerate(rates)]}


def problem(wl: dict):
    return build_problem(parse_workload(wl), fast_twin(), objective=Objective.MIN_GPUS, gpus=None, time_limit_s=20,
                         seed=0, workers=1)


def check_shares(p, a, min_share: float) -> None:
    """Shares sum to each adapter's rate and load; every split share is at least the minimum."""
    items = a.items if a.items is not None else p.items
    by: dict[str, list] = {}
    for it in items:
        by.setdefault(it.adapter_id, []).append(it)
    want = {it.adapter_id: 0.0 for it in p.items}
    for it in p.items:
        want[it.adapter_id] += it.rate
    assert set(by) == set(want)
    for aid, its in by.items():
        assert sum(it.rate for it in its) == pytest.approx(want[aid], rel=1e-9)
        assert sum(it.share for it in its) == pytest.approx(1.0, rel=1e-9)
        if len(its) > 1:
            single = capacity_units(p.capacity.max_single_load(its[0].rank))
            assert all(it.units >= math.ceil(min_share * single - 1e-9) for it in its), (aid, [it.units for it in its])
            assert all(it.units <= single for it in its)
    for b in a.bins:  # one share of an adapter per GPU
        ids = [items[i].adapter_id for i in b]
        assert len(ids) == len(set(ids))


def test_uneven_split_saves_a_gpu_and_the_twin_verifies_each_share():
    wl = hot_workload(3)
    eq = packer.solve(wl, solver="greedy", predictor=fast_twin(), workers=1, verify=False)
    r = packer.solve(wl, solver="greedy-split", predictor=fast_twin(), workers=1)
    assert r.num_gpus < eq.num_gpus  # 6 against 7 on this instance
    assert r.verified and all(g.verified for g in r.gpus) and r.repaired_items == 0
    assert r.solver == "greedy-split" and r.solver_stats["split"]["candidate"] in ("full", "fill")
    assert r.bound_method == "split_combinatorial" and r.lower_bound <= r.num_gpus
    rates = {a["id"]: a["rate"] for a in wl["adapters"]}
    place = r.placement()
    uneven = [aid for aid, where in place.items() if len(where) > 1 and len({round(s, 9) for _, s in where}) > 1]
    assert uneven, "no adapter was split unevenly"
    route = routing(r)["adapters"]
    for aid, where in place.items():
        served = sum(a.rate for g in r.gpus for a in g.adapters if a.id == aid)
        assert served == pytest.approx(rates[aid], rel=1e-9)
        assert sum(s for _, s in where) == pytest.approx(1.0)
        # routing weight = share = the GPU's rate / the adapter's rate
        for (g, s), w in zip(where, route[aid]):
            rate_here = next(a.rate for a in r.gpus[g].adapters if a.id == aid)
            assert w["weight"] == pytest.approx(s, abs=1e-6) == pytest.approx(rate_here / rates[aid], abs=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_never_more_gpus_than_equal_splits(seed):
    p = problem(hot_workload(seed, n=6 + seed % 7, hot=1 + seed % 3))
    eq = get_solver("greedy").solve(p)
    a = get_solver("greedy-split").solve(p)
    assert a.num_gpus <= eq.num_gpus
    assert split_lower_bound(p) <= a.num_gpus
    check_shares(p, a, 0.05)
    placed = a.placed_problem(p)
    assert sorted(i for b in a.bins for i in b) == list(range(len(placed.items)))


@pytest.mark.parametrize("min_share", [0.05, 0.2, 0.5])
def test_min_share_is_kept(min_share):
    for seed in (1, 3, 4):
        p = problem(hot_workload(seed))
        a = GreedySplitSolver(min_share=min_share).solve(p)
        check_shares(p, a, min_share)
        assert a.details["split"]["min_share"] == min_share


def test_share_units_completes_with_a_remainder_at_least_the_minimum():
    assert share_units(250, [100, 100], 10) == [100, 100, 50]
    assert share_units(200, [100, 100], 10) == [100, 100]
    assert share_units(203, [100, 100], 10) == [100, 93, 10]  # a remainder of 3 takes 7 from its neighbour
    assert share_units(25, [14], 12) == [13, 12]
    assert share_units(20, [14], 12) is None  # the neighbour would fall below the minimum
    assert share_units(10, [20], 1) is None


def test_bound_holds_for_every_split():
    p = problem(hot_workload(3))
    total = sum(it.load_tps for it in p.items)
    cap = max(p.config_units(c) for c in p.configs)
    assert split_lower_bound(p) >= math.ceil(math.floor(total / 0.1 + 1e-9) / cap)
    assert split_lower_bound(p) <= get_solver("greedy-split").solve(p).num_gpus
    assert load_units(total) >= split_lower_bound(p)


@pytest.mark.parametrize("bad", [0, -0.1, 0.6, True, "five"])
def test_bad_min_share_names_the_field(bad):
    with pytest.raises(InputError) as e:
        get_solver("greedy-split", min_share=bad)
    assert e.value.field == "min_share" and "0.5" in str(e.value)


def test_without_hot_adapters_it_is_greedy():
    wl = hot_workload(0, n=8, hot=0)
    p = problem(wl)
    a, g = get_solver("greedy-split").solve(p), get_solver("greedy").solve(p)
    assert a.bins == g.bins and a.items is None


def test_contract_kit_checks_the_solvers_own_splits():
    from packer.testing import KnownProblem, check_solver

    p = problem(hot_workload(3))
    a = get_solver("greedy-split").solve(p)
    assert a.items is not None  # the kit then checks each adapter's shares against the problem's
    check_solver(get_solver("greedy-split"), [KnownProblem("hot", p, split_lower_bound(p))])


def test_cli_min_share_reaches_the_solver(env, tmp_path):
    path = tmp_path / "hot.json"
    path.write_text(json.dumps(hot_workload(3)))
    out = cli(env, "solve", str(path), "--solver", "greedy-split", "--min-share", "0.3", "--no-verify", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["solver"] == "greedy-split" and r["solver_stats"]["split"]["min_share"] == 0.3
    assert r["bound_method"] == "split_combinatorial" and r["lower_bound"] <= r["num_gpus"]
    shares = [a["share"] for g in r["gpus"] for a in g["adapters"] if a["share"] < 1.0]
    assert shares, "no adapter was split"


@pytest.mark.parametrize("args, needle", [
    (["--solver", "greedy-split", "--min-share", "0.7"], "--min-share: expected a fraction"),
    (["--solver", "greedy", "--min-share", "0.1"], "--min-share goes with --solver greedy-split"),
])
def test_cli_bad_min_share_is_one_line(env, tmp_path, args, needle):
    path = tmp_path / "hot.json"
    path.write_text(json.dumps(hot_workload(3)))
    out = cli(env, "solve", str(path), *args)
    assert out.returncode == 2 and out.stdout == "" and len(out.stderr.strip().splitlines()) == 1
    assert needle in out.stderr


def test_replanning_an_uneven_split_plan_keeps_its_shares(tmp_path):
    wl = hot_workload(3)
    old = packer.solve(wl, solver="greedy-split", predictor=fast_twin(), workers=1, verify=False)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(old.to_dict()))
    same = packer.solve(wl, predictor=fast_twin(), workers=1, verify=False, current=str(path))
    assert same.replan.moves == () and same.num_gpus == old.num_gpus
    assert same.placement() == old.placement()  # the uneven shares are kept, not re-cut into equal replicas
    grown = {**wl, "adapters": [{**a, "rate": a["rate"] * 1.05} for a in wl["adapters"]]}
    r = packer.solve(grown, predictor=fast_twin(), workers=1, verify=False, current=str(path))
    rates = {a["id"]: a["rate"] for a in grown["adapters"]}
    for aid, where in r.placement().items():
        assert sum(s for _, s in where) == pytest.approx(1.0)
        served = sum(a.rate for g in r.gpus for a in g.adapters if a.id == aid)
        assert served == pytest.approx(rates[aid], rel=1e-9)
    assert len(r.replan.moves) < len(wl["adapters"])
