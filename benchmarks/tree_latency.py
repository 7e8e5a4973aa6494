"""Is the tree predictor's latency accurate enough to check an SLO with? (issue 18 §2)

    python benchmarks/tree_latency.py [--profile NAME] [--samples 3000] [--queries 300] [--extra-rows 50000]
                                      [--workers N]

Trains a tree model with every latency head (``itl``, ``ttft_mean``, ``ttft_p99``, ``ttft_worst_p99``) on a
fresh twin sweep drawn like the shipped one (``SweepSpec`` defaults: 300 s warm-up, 600 s window), then
compares it on held-out queries (another sampling seed) with the twin. Each held-out query runs in the
twin with two workload seeds, A and B; on the queries neither run calls starved (the TTFT heads' domain):

- ``tree vs A``: the tree's MARE against run A, per latency;
- ``B vs A``: run B against run A, the twin's own run-to-run noise: a predictor given only the query
  cannot do much better than about this (a single run's p99 is a noisy label);
- SLO verdicts (every head, gate or not): for targets at the 25th/50th/75th percentile of run A's values, how often the tree's
  "meets it" agrees with run A's, against how often run B's does.

The sweep, the model and the held-out runs are written under benchmarks/out/tree_latency/<profile>/ (the
sweep resumes). Rough cost on 2 cores: 5 min of twin runs per 3,000 samples, a few minutes of training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from packer.executor import map_jobs, open_executor
from packer.predictors import get_predictor
from packer.predictors.base import GpuQuery
from packer.predictors.training import SweepSpec, generate, run_query, sample_query, train
from packer.predictors.tree import LATENCY_GATE
from packer.predictors.tree_model import LATENCY_HEADS

ROOT = Path(__file__).resolve().parents[1]
HELDOUT_SEED = 2026
SEEDS = (11, 12)


def _run(args: tuple) -> dict:
    spec, i, seed = args
    return run_query(sample_query(spec, i), spec.duration_s, seed, spec.warmup_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="llama-3.1-8b-instruct@h100-64gb")
    ap.add_argument("--samples", type=int, default=3000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--extra-rows", type=int, default=50000)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    out = ROOT / "benchmarks" / "out" / "tree_latency" / args.profile
    spec = SweepSpec(profile=args.profile, n_samples=args.samples, seed=0)
    s = generate(spec, out / "sweep", workers=args.workers, progress=False)
    print(f"sweep: {s['rows']} samples ({s['chunks_run']} chunks run, {s['chunks_skipped']} kept)", flush=True)
    rep = train(out / "sweep", args.profile, out / "model.json", extra_rows=args.extra_rows, n_jobs=2, log=None)
    t = rep["test"]["tree"]
    print("test split (one seeded run per query), tree: " + ", ".join(
        f"{h} MARE {t[f'{h}_mare']:.3f} ({'reported' if t[f'{h}_mare'] <= LATENCY_GATE else 'withheld'})"
        for h in LATENCY_HEADS if f"{h}_mare" in t) + f"; the predictor's latency_gate is {LATENCY_GATE:.0%}")

    held = SweepSpec(profile=args.profile, n_samples=args.queries, seed=HELDOUT_SEED)
    queries: list[GpuQuery] = [sample_query(held, i) for i in range(args.queries)]
    with open_executor("process", args.workers) as ex:
        rows = map_jobs(ex, _run, [((held, i, seed),) for seed in SEEDS for i in range(args.queries)])
    a, b = rows[:args.queries], rows[args.queries:]
    pred = get_predictor("tree", model=out / "model.json", latency_gate=1e9).predict_many(queries)  # every head
    keep = [i for i in range(args.queries) if not (a[i]["memory_error"] or b[i]["memory_error"]
                                                    or a[i]["starved"] or b[i]["starved"] or pred[i].starved)]
    print(f"\nheld-out queries: {args.queries}; not starved in either run nor by the tree: {len(keep)}")
    print(f"{'latency':28s} {'tree vs A':>10s} {'B vs A':>8s}   SLO verdicts agree (tree / B) at A's p25, p50, p75")
    for field in LATENCY_HEADS.values():
        va = np.array([a[i][field] for i in keep])
        vb = np.array([b[i][field] for i in keep])
        vt = np.array([getattr(pred[i], field) or np.nan for i in keep], dtype=float)
        ok = np.isfinite(va) & (va > 0) & np.isfinite(vb) & np.isfinite(vt)
        va, vb, vt = va[ok], vb[ok], vt[ok]
        if not len(va):
            continue
        agree = []
        for q in (25, 50, 75):
            slo = np.percentile(va, q)
            agree.append(f"{np.mean((vt <= slo) == (va <= slo)):.0%} / {np.mean((vb <= slo) == (va <= slo)):.0%}")
        print(f"{field:28s} {np.mean(np.abs(vt - va) / va):10.1%} {np.mean(np.abs(vb - va) / va):8.1%}   "
              + ", ".join(agree))
    return 0


if __name__ == "__main__":
    sys.exit(main())
