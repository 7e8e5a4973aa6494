"""Re-planning with few moves vs a fresh solve, on drift scenarios of a ~100-adapter Zipf workload.

    python benchmarks/replan.py [--adapters 100] [--seed 0] [--executor process|serial] [--no-verify]
                                [--exact cpsat|milp|none] [--time-limit 60]

The base workload is benchmarks/gap.py's Zipf instance (ranks 8/16/32, 1 req/s per adapter on
average) on the Llama profile; its greedy plan is the deployed plan. Each scenario drifts the workload
(10% of adapters' rates x1.5; 20 new adapters; the hottest adapter x5; every rate x0.7) and is solved
three times: ``solve(current=plan)``, the same with ``max_moves=0``, and afresh; then with the exact
solver (``--exact``: fewest GPUs first, then fewest moves, proven or not as its status says). "moves" are the re-plan's own (replicas that left their GPU);
"new placements" counts, for adapters of the deployed plan, placements on a GPU that did not hold that
adapter (moves plus extra replicas): for a fresh plan its GPUs are first matched to the deployed plan's
to keep the most placements (the fewest any renumbering of it would need). Every GPU is verified with the twin unless ``--no-verify``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from packer.planner import solve

import gap  # the instance generator (this script's folder is on sys.path)


def scenarios(base: dict, seed: int) -> dict[str, dict]:
    rng = np.random.default_rng(seed + 1)
    ads = base["adapters"]
    n = len(ads)
    some = {ads[i]["id"] for i in rng.choice(n, max(1, n // 10), replace=False)}
    hot = max(ads, key=lambda a: a["rate"])["id"]
    new = gap.instance(base["profile"], "zipf", 20, seed + 2)["adapters"]
    return {
        "unchanged": base,
        "10% of rates x1.5": {**base, "adapters": [{**a, "rate": a["rate"] * (1.5 if a["id"] in some else 1.0)}
                                                   for a in ads]},
        "20 new adapters": {**base, "adapters": ads + [{**a, "id": f"new{i}"} for i, a in enumerate(new)]},
        "hottest adapter x5": {**base, "adapters": [{**a, "rate": a["rate"] * (5.0 if a["id"] == hot else 1.0)}
                                                    for a in ads]},
        "30% load drop": {**base, "adapters": [{**a, "rate": a["rate"] * 0.7} for a in ads]},
    }


def sets(result) -> list[set[str]]:
    return [{a.id for a in g.adapters} for g in result.gpus]


def moved(current: list[set[str]], plan: list[set[str]], origin: list[int | None] | None = None) -> int:
    """Placements of the current plan's adapters on GPUs that did not hold them (``origin``: the plan's
    GPUs' current indices; None: the best matching)."""
    live = set().union(*current) if current else set()
    if origin is None:
        keep = np.array([[len(p & c) for c in current] for p in plan]) if plan and current else np.zeros((0, 0))
        rows, cols = linear_sum_assignment(-keep) if keep.size else ([], [])
        origin = [None] * len(plan)
        for r, c in zip(rows, cols):
            origin[r] = c
    return sum(1 for g, p in enumerate(plan) for a in p
               if a in live and (origin[g] is None or a not in current[origin[g]]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", default="process")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--exact", default="cpsat", choices=["cpsat", "milp", "none"])
    ap.add_argument("--time-limit", type=float, default=60.0)
    args = ap.parse_args()
    verify = not args.no_verify
    base = gap.instance(gap.PROFILES["llama"], "zipf", args.adapters, args.seed)
    plan = solve(base, verify=verify, executor=args.executor, seed=args.seed)
    cur = sets(plan)
    print(f"deployed plan: {len(base['adapters'])} adapters (Zipf), {plan.num_gpus} GPUs, verified {plan.verified}")
    print("| scenario | re-plan GPUs | re-plan moves | re-plan new placements | servers added / removed | verified "
          "| --max-moves 0: GPUs / moves / splits | fresh GPUs | fresh new placements | re-plan s | fresh s |"
          + (f" {args.exact}: GPUs / moves / status | {args.exact} moves bound | {args.exact} s |" if args.exact != "none"
             else ""))
    print("|" + "---|" * (11 + 3 * (args.exact != "none")))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/plan.json"
        with open(path, "w") as f:
            json.dump(plan.to_dict(), f)
        for name, wl in scenarios(base, args.seed).items():
            t0 = time.perf_counter()
            r = solve(wl, verify=verify, executor=args.executor, seed=args.seed, current=path)
            t1 = time.perf_counter()
            fresh = solve(wl, verify=verify, executor=args.executor, seed=args.seed)
            t2 = time.perf_counter()
            k0 = solve(wl, verify=verify, executor=args.executor, seed=args.seed, current=path, max_moves=0)
            s = r.replan
            print(f"| {name} | {r.num_gpus} | {len(s.moves)} | {moved(cur, sets(r), list(s.gpu_origin))} | "
                  f"{len(s.servers_added)} / {len(s.servers_removed)} | "
                  f"{'yes' if r.verified else 'NO'} | {k0.num_gpus} / {len(k0.replan.moves)} / {len(k0.replan.split)} | "
                  f"{fresh.num_gpus} | {moved(cur, sets(fresh))} | "
                  f"{t1 - t0:.1f} | {t2 - t1:.1f} |", end="", flush=True)
            if args.exact != "none":
                t3 = time.perf_counter()
                x = solve(wl, verify=verify, executor=args.executor, seed=args.seed, current=path, solver=args.exact,
                          time_limit=args.time_limit)
                print(f" {x.num_gpus} / {len(x.replan.moves)} / {x.status.value}{'' if x.verified or not verify else ' UNVERIFIED'}"
                      f" | {x.replan.moves_lower_bound} | {time.perf_counter() - t3:.1f} |", end="")
            print(flush=True)


if __name__ == "__main__":
    main()
