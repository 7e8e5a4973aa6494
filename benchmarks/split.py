"""Equal vs solver-chosen (uneven) replica splits on hot-adapter workloads: GPUs on the capacity model.

Each instance: ``n`` Zipf adapters plus ``hot`` adapters at 1.1-3.6x what one GPU sustains for one adapter;
``greedy`` (equal replicas from ``make_items``) against ``greedy-split`` (``packer.solvers.split``), and the
bound that holds for every split. No twin verification here (``tests/test_split.py`` verifies).

    PYTHONPATH=. python benchmarks/split.py [--instances 10] [--profile NAME] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from packer.planner import build_problem, parse_workload
from packer.predictors import TwinPredictor
from packer.solvers import Objective, get_solver
from packer.solvers.split import split_lower_bound

PROFILE = "llama-3.1-8b-instruct@h100-64gb"


def instance(seed: int, n: int, hot: int, profile: str, single_rate: float) -> dict:
    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, n + 1) ** 1.1
    rates = list(w / w.sum() * rng.uniform(0.5, 3.0) * single_rate)
    rates += list(rng.uniform(1.1, 3.6, hot) * single_rate)
    return {"profile": profile, "lengths": {"input_mean": 222.7, "output_mean": 196.1},
            "adapters": [{"id": f"a{i}", "rank": int(rng.choice([8, 16])), "rate": float(r)} for i, r in enumerate(rates)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--profile", default=PROFILE)
    ap.add_argument("--json")
    args = ap.parse_args()
    twin = TwinPredictor(duration_s=300.0)
    probe = build_problem(parse_workload(instance(0, 4, 0, args.profile, 1.0)), twin, objective=Objective.MIN_GPUS,
                          gpus=None, time_limit_s=20, seed=0, workers=1)
    single = probe.capacity.max_single_load(16) / probe.capacity.tokens_per_request
    rows = []
    for size, hot in ((12, 1), (24, 2), (48, 4), (96, 6)):
        for s in range(args.instances):
            p = build_problem(parse_workload(instance(1000 * size + s, size, hot, args.profile, single)), twin,
                              objective=Objective.MIN_GPUS, gpus=None, time_limit_s=20, seed=0, workers=1)
            t = time.perf_counter()
            eq = get_solver("greedy").solve(p)
            t_eq = time.perf_counter() - t
            t = time.perf_counter()
            un = get_solver("greedy-split").solve(p)
            t_un = time.perf_counter() - t
            rows.append({"adapters": size + hot, "hot": hot, "seed": s, "equal": eq.num_gpus, "uneven": un.num_gpus,
                         "bound": split_lower_bound(p), "candidate": un.details["split"]["candidate"],
                         "equal_s": t_eq, "uneven_s": t_un})
    print(f"{'adapters':>8} {'hot':>3} {'inst':>4} {'GPUs equal':>10} {'GPUs uneven':>11} {'saved':>5} "
          f"{'fewer on':>8} {'bound':>5} {'uneven ms':>9}")
    for size in sorted({r["adapters"] for r in rows}):
        rs = [r for r in rows if r["adapters"] == size]
        eq, un = sum(r["equal"] for r in rs), sum(r["uneven"] for r in rs)
        print(f"{size:>8} {rs[0]['hot']:>3} {len(rs):>4} {eq:>10} {un:>11} {eq - un:>5} "
              f"{sum(r['uneven'] < r['equal'] for r in rs):>8} {sum(r['bound'] for r in rs):>5} "
              f"{1000 * max(r['uneven_s'] for r in rs):>9.2f}")
    assert all(r["uneven"] <= r["equal"] for r in rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "single_rate": single, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
