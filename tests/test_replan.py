"""Re-planning with few moves (issue 16, section 3): ``solve(NEW, current=PLAN, max_moves=K)`` and
``packer solve NEW.json --current PLAN.json [--max-moves K]`` on small workloads, real capacity models
and the twin."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import packer_cli as cli
from packer.errors import InputError
from packer.planner import solve
from packer.solvers.result import read_plan

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
LENGTHS = {"input_mean": 222.7, "output_mean": 196.1}
BASE = {"profile": LLAMA, "lengths": LENGTHS,
        "adapters": [{"id": f"a{i}", "rank": 8 if i % 3 else 16, "rate": 0.5 + (i % 4)} for i in range(20)]}
FULL = {"profile": LLAMA, "lengths": LENGTHS,  # equal adapters: every GPU but the last packed full
        "adapters": [{"id": f"u{i}", "rank": 8, "rate": 3.0} for i in range(30)]}


def scaled(wl: dict, factor: float, ids=None) -> dict:
    return {**wl, "adapters": [{**a, "rate": a["rate"] * (factor if ids is None or a["id"] in ids else 1.0)}
                               for a in wl["adapters"]]}


def _plan_file(tmp_path_factory, wl: dict, name: str):
    r = solve(wl, verify=False, executor="serial")
    p = tmp_path_factory.mktemp(name) / "plan.json"
    p.write_text(json.dumps(r.to_dict()))
    return r, p


@pytest.fixture(scope="module")
def base_plan(cache_env, tmp_path_factory):
    return _plan_file(tmp_path_factory, BASE, "base")


@pytest.fixture(scope="module")
def full_plan(cache_env, tmp_path_factory):
    return _plan_file(tmp_path_factory, FULL, "full")


def _where(result) -> dict[str, set[int]]:
    return {aid: {g for g, _ in gs} for aid, gs in result.placement().items()}


def _kept_in_place(old, new) -> set[str]:
    """Adapters still on every GPU they were on (a new GPU mapped to its origin in the current plan)."""
    origin = new.replan.gpu_origin
    now = {aid: {origin[g] for g in gs} for aid, gs in _where(new).items()}
    return {aid for aid, gs in _where(old).items() if gs <= now.get(aid, set())}


def test_unchanged_workload_moves_nothing(base_plan):
    old, path = base_plan
    r = solve(BASE, executor="serial", current=path)
    assert r.replan.moves == () and r.replan.servers_added == () and r.replan.servers_removed == ()
    assert r.num_gpus == old.num_gpus and _where(r) == _where(old)
    assert r.verified and r.solver == "replan"
    d = r.to_dict()["replan"]
    assert d["moves"] == [] and d["gpu_origin"] == list(range(old.num_gpus))


def test_load_drop_moves_nothing_and_keeps_nonempty_servers(base_plan):
    old, path = base_plan
    r = solve(scaled(BASE, 0.7), executor="serial", current=path)
    assert r.replan.moves == () and r.replan.servers_removed == () and r.num_gpus == old.num_gpus
    assert _where(r) == _where(old) and r.verified
    assert sum(g.offered_tps for g in r.gpus) == pytest.approx(0.7 * sum(g.offered_tps for g in old.gpus))


def test_hot_adapter_moves_few_and_fits(base_plan):
    old, path = base_plan
    r = solve(scaled(BASE, 5.0, {"a3"}), executor="serial", current=path)
    assert len(r.replan.moves) <= 2 and r.verified
    assert all(g.utilisation <= 1.0 + 1e-9 for g in r.gpus)
    assert len(_kept_in_place(old, r)) >= len(BASE["adapters"]) - 2
    assert sum(s for _, s in r.placement()["a3"]) == pytest.approx(1.0)


def test_new_adapters_join_without_moving_and_removed_ones_disappear(base_plan):
    old, path = base_plan
    wl = {**BASE, "adapters": [a for a in BASE["adapters"] if a["id"] not in ("a0", "a5")]
          + [{"id": f"new{i}", "rank": 8, "rate": 0.5} for i in range(3)]}
    r = solve(wl, executor="serial", current=path)
    assert r.replan.moves == () and r.replan.servers_added == ()  # the plan's last GPU has room
    assert r.replan.adapters_added == ("new0", "new1", "new2") and r.replan.adapters_removed == ("a0", "a5")
    where = _where(r)
    assert "a0" not in where and "a5" not in where and {"new0", "new1", "new2"} <= set(where)
    assert _kept_in_place(old, r) == set(_where(old)) - {"a0", "a5"}
    assert r.verified


def test_drifted_rates_move_only_what_overflows(full_plan):
    old, path = full_plan
    r = solve(scaled(FULL, 1.25), verify=False, executor="serial", current=path)
    assert r.replan.moves and all(g.utilisation <= 1.0 + 1e-9 for g in r.gpus)
    moved = {m.adapter for m in r.replan.moves}
    assert _kept_in_place(old, r) == set(_where(old)) - moved
    assert len(moved) < len(FULL["adapters"]) // 2


def test_max_moves_zero_adds_servers_instead(full_plan):
    old, path = full_plan
    free = solve(scaled(FULL, 1.5), verify=False, executor="serial", current=path)
    r = solve(scaled(FULL, 1.5), verify=False, executor="serial", current=path, max_moves=0)
    assert free.replan.moves and r.replan.moves == ()
    assert r.replan.split and r.replan.servers_added and "max-moves 0 reached" in r.message
    assert r.num_gpus >= free.num_gpus
    assert _kept_in_place(old, r) == set(_where(old))  # every adapter still on its GPU(s)
    assert all(g.utilisation <= 1.0 + 1e-9 for g in r.gpus)
    for aid in r.replan.split:
        assert sum(s for _, s in r.placement()[aid]) == pytest.approx(1.0)
        assert len(_where(r)[aid]) == len(r.placement()[aid])  # its parts on distinct GPUs
    # max_moves 1: at most one move on the capacity model
    one = solve(scaled(FULL, 1.5), verify=False, executor="serial", current=path, max_moves=1)
    assert len(one.replan.moves) <= 1


EXACT = ("cpsat", "milp")


@pytest.mark.parametrize("solver", EXACT)
def test_exact_replan_consolidates_a_load_drop_with_fewest_moves(base_plan, solver):
    old, path = base_plan
    wl = scaled(BASE, 0.7)
    greedy = solve(wl, verify=False, executor="serial", current=path)
    x = solve(wl, verify=False, executor="serial", current=path, solver=solver, time_limit=30)
    fresh = solve(wl, verify=False, executor="serial", solver=solver, time_limit=30)
    assert x.solver == solver and x.status.value == "optimal" and x.replan is not None
    assert x.num_gpus == fresh.num_gpus <= greedy.num_gpus  # moves are free to find the fewest GPUs
    assert x.replan.moves_lower_bound == len(x.replan.moves)  # and the fewest moves at that count, proven
    if x.num_gpus == greedy.num_gpus:
        assert len(x.replan.moves) <= len(greedy.replan.moves)
    moved = {m.adapter for m in x.replan.moves}
    assert _kept_in_place(old, x) == set(_where(old)) - moved
    assert all(g.utilisation <= 1.0 + 1e-9 for g in x.gpus)
    # with no move allowed the exact re-plan keeps every adapter where it is
    k0 = solve(wl, verify=False, executor="serial", current=path, solver=solver, max_moves=0, time_limit=30)
    assert k0.replan.moves == () and _kept_in_place(old, k0) == set(_where(old))


@pytest.mark.parametrize("solver", EXACT)
def test_exact_replan_within_max_moves_or_the_greedy_split_plan(full_plan, solver):
    old, path = full_plan
    wl = scaled(FULL, 1.5)
    free = solve(wl, verify=False, executor="serial", current=path, solver=solver, time_limit=30)
    greedy = solve(wl, verify=False, executor="serial", current=path)
    assert free.num_gpus <= greedy.num_gpus
    if free.num_gpus == greedy.num_gpus:
        assert len(free.replan.moves) <= len(greedy.replan.moves)
    k = max(1, len(free.replan.moves) // 2)
    tight = solve(wl, verify=False, executor="serial", current=path, solver=solver, max_moves=k, time_limit=30)
    assert len(tight.replan.moves) <= k and tight.num_gpus >= free.num_gpus
    # no move at all: whole adapters cannot stay (every GPU is full), so the exact solver proves it and
    # keeps the greedy re-plan, which splits adapters onto added servers
    k0 = solve(wl, verify=False, executor="serial", current=path, solver=solver, max_moves=0, time_limit=30)
    assert k0.replan.moves == () and k0.replan.split and "proven" in k0.message
    assert _kept_in_place(old, k0) == set(_where(old))


def test_exact_moves_are_counted_as_the_summary_counts_them(base_plan):
    """The exact model's move count (``exact.moves``) and the result's moves agree, replicas included."""
    from packer.solvers.exact.moves import count_moves

    _, path = base_plan
    hot = scaled(BASE, 12.0, {"a3", "a7"})  # replicated adapters
    x = solve(hot, verify=False, executor="serial", current=path, solver="cpsat", time_limit=30)
    assert any(len(w) > 1 for w in x.placement().values())
    plan = read_plan(path)
    where = {aid: [g for g, _ in gs] for aid, gs in plan.placement().items()}
    items, home, taken = [], [], {}
    for n, (aid, gs) in enumerate(sorted(x.placement().items())):
        for g, share in gs:
            k = taken.get(aid, 0)
            home.append(where[aid][k] if k < len(where.get(aid, [])) else None)
            taken[aid] = k + 1
            items.append({"load": 1, "rank_class": 0, **({"group": n} if len(gs) > 1 else {}),
                          "gpu": g})
    problem = {"items": items, "current": {"home": home, "n_current": len(plan.gpus), "max_moves": None}}
    bins = [it["gpu"] for it in items]
    origin = list(x.replan.gpu_origin)
    assert count_moves(problem, bins, origin) == len(x.replan.moves)


def test_bad_inputs_name_the_field(base_plan, tmp_path):
    _, path = base_plan
    with pytest.raises(InputError, match="max_moves"):
        solve(BASE, executor="serial", current=path, max_moves=-1)
    with pytest.raises(InputError, match="max_moves"):
        solve(BASE, executor="serial", max_moves=2)
    with pytest.raises(InputError, match="objective"):
        solve(BASE, executor="serial", current=path, objective="min_latency", gpus=2)
    data = json.loads(path.read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**data, "profile": "qwen-2.5-7b-instruct@h100-64gb"}))
    with pytest.raises(InputError, match="profile") as e:
        solve(BASE, executor="serial", current=other)
    assert e.value.field == "current"
    rank = tmp_path / "rank.json"
    data["gpus"][0]["adapters"][0]["rank"] = 64
    rank.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"gpus\[0\]\.adapters\[0\]\.rank"):
        solve(BASE, executor="serial", current=rank)


def test_cli_round_trip(cache_env, tmp_path):
    env = {**cache_env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    (tmp_path / "w.json").write_text(json.dumps(BASE))
    (tmp_path / "w2.json").write_text(json.dumps(scaled(BASE, 5.0, {"a3"})))
    first = cli(env, "solve", "w.json", "--json", "--executor", "serial", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    (tmp_path / "plan.json").write_text(first.stdout)
    assert read_plan(tmp_path / "plan.json").gpus
    second = cli(env, "solve", "w2.json", "--current", "plan.json", "--json", "--executor", "serial", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["replan"]["current_plan"].endswith("plan.json") and out["solver"] == "replan"
    assert all(set(m) == {"adapter", "from_gpu", "to_gpu"} for m in out["replan"]["moves"])
    table = cli(env, "solve", "w2.json", "--current", "plan.json", "--executor", "serial", "--max-moves", "0",
                cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "moves (" in table.stdout and "servers:" in table.stdout
    for args, needle in ((["--max-moves", "-1"], "--max-moves"), (["--max-moves", "x"], "max-moves"),
                         ([], "--current: missing.json")):
        bad = cli(env, "solve", "w2.json", "--current", "plan.json" if args else "missing.json", *args, cwd=tmp_path)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    nocur = cli(env, "solve", "w2.json", "--max-moves", "2", cwd=tmp_path)
    assert nocur.returncode == 2 and "--current" in nocur.stderr


def test_servers_left_empty_are_dropped_and_later_gpus_renumbered(base_plan):
    old, path = base_plan
    gone = {a.id for a in old.gpus[0].adapters}
    wl = {**BASE, "adapters": [a for a in BASE["adapters"] if a["id"] not in gone]}
    r = solve(wl, verify=False, executor="serial", current=path)
    assert r.replan.servers_removed == (0,) and r.replan.moves == () and r.replan.servers_added == ()
    assert r.replan.gpu_origin == tuple(range(1, old.num_gpus))
    assert [{a.id for a in g.adapters} for g in r.gpus] == [{a.id for a in g.adapters} for g in old.gpus[1:]]
    assert set(r.replan.adapters_removed) == gone
