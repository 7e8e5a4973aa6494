"""The peers' methods (``loraserve``, ``dlora``; background §7) beyond the contract suite: largest-remainder
apportionment, max_loras = adapters on the GPU, uniform routing over replicas, twin-verified placements at
their own GPU counts, and greedy against both on a small Zipf instance."""

from __future__ import annotations

import pytest

from packer.solvers.peers import largest_remainder

from test_solvers_contract import run, workload, check_placement


def test_largest_remainder_sums_to_the_count_and_follows_the_remainders():
    assert largest_remainder({8: 2.6, 16: 1.3, 32: 1.1}, 5) == {8: 3, 16: 1, 32: 1}
    assert largest_remainder({8: 1.45, 16: 1.55}, 3) == {8: 1, 16: 2}
    for total in range(1, 12):
        seats = largest_remainder({8: 0.7, 16: 3.2, 32: 0.1}, total)
        assert sum(seats.values()) == total
        if total >= 3:
            assert min(seats.values()) >= 1, "a rank with demand got no GPU"


def test_loraserve_apportions_the_gpus_to_ranks():
    from packer.planner import build_problem, parse_workload
    from packer.solvers import Objective
    from packer.solvers.peers import LoraServeSolver
    from test_solvers_contract import fast_twin
    problem = build_problem(parse_workload(workload(n=24, total_rate=40.0, ranks=(8, 16, 32))), fast_twin(),
                            objective=Objective.MIN_GPUS, gpus=None, time_limit_s=20.0, seed=0, workers=1)
    s = LoraServeSolver()
    op = s.operating_points(problem)
    assert set(op) == {it.rank_class for it in problem.items} and all(v > 0 for v in op.values())
    for G in range(3, 9):
        assert sum(s.apportion(problem, G).values()) == G
    a = s.solve(problem)
    for members in a.bins:
        assert len({problem.items[i].rank_class for i in members}) == 1, "a loraserve GPU serves one rank class"
    counts: dict[int, int] = {}
    for members in a.bins:
        R = problem.items[members[0]].rank_class
        counts[R] = counts.get(R, 0) + 1
    assert counts == {R: n for R, n in s.apportion(problem, a.num_gpus).items() if n}
    assert all(c.max_loras == len(m) for m, c in zip(a.bins, a.configs))


@pytest.mark.parametrize("solver", ["loraserve", "dlora"])
def test_peer_placements_verify_with_max_loras_the_adapter_count(solver):
    wl = workload(n=16, total_rate=30.0, seed=4, ranks=(8, 16, 32))
    r = run(wl, solver)
    check_placement(wl, r)
    assert r.verified and all(g.verified for g in r.gpus)
    for g in r.gpus:
        assert g.max_loras == len(g.adapters)


def test_dlora_routes_uniformly_over_replicas():
    wl = workload(n=6, total_rate=10.0)
    wl["adapters"][0]["rate"] = 60.0
    r = run(wl, "dlora")
    hot = r.placement()["ad0"]
    assert len(hot) >= 2
    assert {round(s, 9) for _, s in hot} == {round(1.0 / len(hot), 9)}


def test_greedy_needs_no_more_gpus_than_the_peers_on_zipf():
    wl = workload(n=40, total_rate=80.0, seed=2, ranks=(8, 16, 32))
    g = run(wl, "greedy").num_gpus
    assert g <= run(wl, "loraserve").num_gpus
    assert g <= run(wl, "dlora").num_gpus
