"""GPUs against latency SLOs: the same workload planned with no SLO and with tighter and tighter targets.

    python benchmarks/slo.py [--family zipf] [--adapters 100] [--profile llama] [--executor process|serial]

The workload is benchmarks/gap.py's instance (ranks 8/16/32). Each row is one ``packer.solve`` with that
``slo``, every GPU verified by the twin against it; "worst" columns are the worst GPU's twin
prediction (for a per-adapter SLO, the worst adapter's p99 TTFT). The last rows compare
``min_latency`` on a fixed budget by the capacity model's utilisation and by the twin's p99 TTFT.
"""

from __future__ import annotations

import argparse
import time

from packer.planner import solve

import gap  # the instance generator (this script's folder is on sys.path)

SLOS = [None, {"ttft_p99_ms": 2000}, {"ttft_p99_ms": 500}, {"ttft_p99_ms": 500, "per_adapter": True},
        {"itl_mean_ms": 30}, {"itl_mean_ms": 20}, {"ttft_p99_ms": 300, "itl_mean_ms": 25}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="zipf")
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--profile", default="llama", choices=sorted(gap.PROFILES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", default="process")
    args = ap.parse_args()
    wl = gap.instance(gap.PROFILES[args.profile], args.family, args.adapters, args.seed)
    print(f"{args.family} {args.adapters} adapters, {args.profile}, {sum(a['rate'] for a in wl['adapters']):.1f} req/s")
    print("| SLO | GPUs | verified | worst p99 TTFT ms | worst adapter p99 TTFT ms | worst mean ITL ms | min SLO margin | s |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for slo in SLOS:
        t0 = time.perf_counter()
        r = solve({**wl, **({"slo": slo} if slo else {})}, executor=args.executor, seed=args.seed)
        base = base or r
        margins = [c.margin for g in r.gpus for c in g.slo if c.margin is not None]
        spec = "none" if slo is None else ", ".join(f"{k}={v}" for k, v in slo.items())
        worst_adapter = [c.predicted_ms for g in r.gpus for c in g.slo
                         if slo and slo.get("per_adapter") and c.metric == "ttft_p99_ms" and c.predicted_ms is not None]
        cells = [spec, str(r.num_gpus), "yes" if r.verified else "NO",
                 f"{max(g.predicted_ttft_p99_ms or 0 for g in r.gpus):,.0f}",
                 f"{max(worst_adapter):,.0f}" if worst_adapter else "-",
                 f"{max(g.predicted_itl_ms or 0 for g in r.gpus):.1f}",
                 f"{min(margins):+.1%}" if margins else "-", f"{time.perf_counter() - t0:.1f}"]
        print("| " + " | ".join(cells) + " |", flush=True)
    budget = base.num_gpus + 1
    print(f"\nmin_latency on {budget} GPUs:")
    print("| latency_metric | worst p99 TTFT ms | worst mean ITL ms | max utilisation | search moves | s |")
    print("|---|---|---|---|---|---|")
    for metric in ("utilisation", "ttft_p99_ms", "itl_mean_ms"):
        t0 = time.perf_counter()
        r = solve({**wl, "objective": "min_latency", "gpus": budget, "latency_metric": metric},
                  executor=args.executor, seed=args.seed)
        print(f"| {metric} | {max(g.predicted_ttft_p99_ms or 0 for g in r.gpus):,.0f} | "
              f"{max(g.predicted_itl_ms or 0 for g in r.gpus):.1f} | {max(g.utilisation for g in r.gpus):.0%} | "
              f"{r.solver_stats.get('latency_search_moves', '-')} | {time.perf_counter() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
