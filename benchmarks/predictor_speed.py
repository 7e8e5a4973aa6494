"""How fast each predictor answers, in one process: the tree, the forest (full model) and the twin.

    python benchmarks/predictor_speed.py [--profile NAME] [--queries N] [--twin-queries N] [--repeats R]

Queries are drawn like the training sweep (``SweepSpec``, another seed: 1..512 adapters, skewed
rates, mixed ranks, Poisson and bursty), plus fixed sets of 8, 64 and 512 adapters. Printed, in
microseconds per prediction (medians over ``--repeats`` timed passes):

- ``kernel batched``: the numba tree kernel alone on precomputed feature rows (target <= 1 us;
  median of at least 51 passes, each about a millisecond);
- ``batched end to end``: ``predict_many`` on the whole list (features, memory check, kernel,
  ``Prediction`` objects);
- ``single call``: ``predict(query)`` from Python, one query at a time (target <= 20 us), by
  adapter count;
- the twin (its default steady state: 300 s warm-up then a 600 s window; one process) on
  ``--twin-queries`` of the same queries, and its time as a multiple of the tree's;
- a machine reference: a fixed pure-Python loop timed before and after, so that runs on a machine
  whose speed drifts (shared cores) can be compared: the single call is also printed in units of it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from packer.model import ServerConfig
from packer.predictors import GpuQuery, get_predictor
from packer.predictors.training import SweepSpec, sample_query
from packer.predictors.features import features_many
from packer.predictors.kernels import predict_nodes


def _median_us(fn, per: int, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` passes, in microseconds per item (``per`` items)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times) / per


def _single_us(pred, queries, repeats: int) -> float:
    """Median over queries of the median single-call time."""
    per_query = []
    for q in queries:
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            pred.predict(q)
            ts.append(time.perf_counter() - t0)
        per_query.append(statistics.median(ts))
    return 1e6 * statistics.median(per_query)


def _reference_ms(passes: int = 50) -> float:
    """Median time of a fixed pure-Python loop (20,000 iterations), in ms: the machine's speed now."""
    times = []
    for _ in range(passes):
        t0 = time.perf_counter()
        s = 0
        for i in range(20000):
            s += i * i % 7
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _fixed(profile: str, n: int, k: int) -> list[GpuQuery]:
    """k queries of n adapters (Zipf-like rates, ranks 8/16), max_loras min(n, 32)."""
    out = []
    for j in range(k):
        rates = tuple(2.0 / (i + 1 + j) for i in range(n))
        ranks = tuple(8 if (i + j) % 3 else 16 for i in range(n))
        out.append(GpuQuery(profile, ServerConfig(max_loras=min(n, 32), max_cpu_loras=max(n, 32), max_lora_rank=16),
                            ranks, rates))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="llama-3.1-8b-instruct@h100-64gb")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--twin-queries", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    spec = SweepSpec(profile=args.profile, n_samples=args.queries, seed=2024)
    queries = [sample_query(spec, i) for i in range(args.queries)]
    groups = {f"{n} adapters": _fixed(args.profile, n, 50) for n in (8, 64, 512)}
    X = features_many(queries)
    print(f"{args.profile}: {len(queries)} sweep-like queries (median {statistics.median(q.num_adapters for q in queries):.0f}"
          f" adapters), medians of {args.repeats} passes, microseconds per prediction\n")

    ref_before = _reference_ms()
    rows: dict[str, dict[str, float]] = {}
    for name in ("tree", "forest"):
        p = get_predictor(name)
        p.predict_many(queries[:4])  # load the model, compile
        for g in groups.values():
            p.predict(g[0])
        m = p.model_for(args.profile)
        # the kernel pass takes about a millisecond: many passes, so that a burst of load elsewhere on
        # the machine does not decide the median
        r = {"kernel batched": _median_us(lambda: predict_nodes(X, *m.arrays), len(X), max(51, args.repeats)),
             "batched end to end": _median_us(lambda: p.predict_many(queries), len(queries), args.repeats),
             "single call (sweep mix)": _single_us(p, queries[:300], args.repeats)}
        for label, g in groups.items():
            r[f"single call, {label}"] = _single_us(p, g, args.repeats)
        r["leaves per head"] = float(max(s["leaves"] for s in m.sizes().values()))
        r["trees per head"] = float(max(s["trees"] for s in m.sizes().values()))
        rows[name] = r

    twin = get_predictor("twin", cache_size=0)
    tq = queries[: args.twin_queries]
    twin.predict(GpuQuery(args.profile, ServerConfig(max_loras=1, max_cpu_loras=1, max_lora_rank=8), (8,), (0.1,)))
    t0 = time.perf_counter()
    for q in tq:
        twin.predict(q)
    twin_us = 1e6 * (time.perf_counter() - t0) / len(tq)

    ref_after = _reference_ms()
    metrics = list(rows["tree"])
    print(f"{'':34}{'tree':>12}{'forest':>12}{'target':>10}")
    targets = {"kernel batched": "<= 1", "single call (sweep mix)": "<= 20"}
    for k in metrics:
        fmt = "{:12,.0f}" if k.endswith("head") else "{:12,.2f}"
        print(f"{k:34}" + "".join(fmt.format(rows[n][k]) for n in ("tree", "forest")) + f"{targets.get(k, ''):>10}")
    print(f"\ntwin (300 s warm-up + 600 s window, one process): {twin_us:,.0f} us per query "
          f"on {len(tq)} of the same queries")
    for n in ("tree", "forest"):
        print(f"  twin / {n}: {twin_us / rows[n]['single call (sweep mix)']:,.0f}x the single call, "
              f"{twin_us / rows[n]['batched end to end']:,.0f}x batched end to end")
    ref = (ref_before + ref_after) / 2
    print(f"\nmachine reference (a fixed pure-Python loop): {ref_before:.2f} ms before, {ref_after:.2f} ms after; "
          f"the tree's single call is {rows['tree']['single call (sweep mix)'] / (1e3 * ref):.4f} of it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
