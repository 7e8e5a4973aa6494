"""Twin vs real vLLM: replay every run of shared/data/agullo-h100/real_runs.csv and compare.

    python benchmarks/twin_fidelity.py [--data PATH] [--workers N] [--executor process|serial|ray] [--ray-address A] [--split all|fit|holdout]
                                       [--model NAME] [--profile-file PROFILE.json ...] [--out CSV]

Prints, per model, the twin's mean absolute relative error on throughput, mean ITL and mean TTFT,
starvation agreement and start-up memory-failure detection, next to the upstream twin's errors on
the same runs (authors_dt_vs_real.csv). Per-run rows go to benchmarks/out/twin_fidelity_runs.csv.
``--profile-file`` replays the runs of that profile's model with the file instead of the shipped
profile (e.g. one derived by ``packer profile derive``); ``--model`` keeps only that model's runs.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

from packer.executor import open_executor
from packer.profile import load_profile
from packer.replay import PROFILE_FOR_MODEL, read_runs
from packer.validation import holdout_split, replay, summarise

ROOT = Path(__file__).resolve().parents[1]

DATA = ROOT.parent / "shared" / "data" / "agullo-h100"
TARGETS = {"throughput_mare_pct": 5.0, "itl_mare_pct": 10.0, "starvation_agreement_pct": 95.0}


def upstream_errors(path: Path) -> dict[str, dict[str, float]]:
    """The upstream twin's mean absolute relative errors (%) per model, from authors_dt_vs_real.csv."""
    acc: dict[str, dict[str, list[float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            m = acc.setdefault(row["model"], {"tps": [], "itl": [], "ttft": []})
            for k, col in (("tps", "err_tps_rel_pct"), ("itl", "err_itl_rel_pct"), ("ttft", "err_ttft_rel_pct")):
                try:
                    m[k].append(abs(float(row[col])))
                except ValueError:
                    pass
    return {model: {k: sum(v) / len(v) for k, v in d.items() if v} for model, d in acc.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--executor", choices=("process", "serial", "ray"), default="process")
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--split", choices=["all", "fit", "holdout"], default="all")
    ap.add_argument("--model", choices=sorted(PROFILE_FOR_MODEL), default=None, help="only this model's runs")
    ap.add_argument("--profile-file", action="append", default=[], metavar="PROFILE.json",
                    help="replay its model's runs with this profile (repeatable, one per model)")
    ap.add_argument("--out", type=Path, default=None, help="per-run CSV (default benchmarks/out/twin_fidelity_runs.csv)")
    args = ap.parse_args()
    overrides = {}
    for path in args.profile_file:
        prof = load_profile(path)
        if prof.model not in PROFILE_FOR_MODEL:
            print(f"error: --profile-file {path}: model {prof.model!r} has no measured runs; valid: "
                  f"{', '.join(PROFILE_FOR_MODEL)}", file=sys.stderr)
            return 2
        overrides[PROFILE_FOR_MODEL[prof.model]] = prof
        print(f"{prof.model}: replayed with {path} ({prof.name}, provenance: {prof.provenance})")
    if not (args.data / "real_runs.csv").is_file():
        print(f"error: {args.data / 'real_runs.csv'} not found; pass --data", file=sys.stderr)
        return 2

    runs = [r for r in read_runs(args.data / "real_runs.csv") if r.ok or r.memory_failure]
    runs = holdout_split(runs, args.split)
    if args.model:
        runs = [r for r in runs if r.model == args.model]
    t0 = time.perf_counter()
    with open_executor(args.executor, args.workers, args.ray_address) as ex:
        rows = replay(runs, overrides, workers=args.workers, executor=ex)
    wall = time.perf_counter() - t0
    summary = summarise(rows)
    upstream = upstream_errors(args.data / "authors_dt_vs_real.csv")

    out = ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    csv_path = args.out or out / "twin_fidelity_runs.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["key", "status", "sim_memory_error", "real_tps", "sim_tps", "err_tps_pct", "real_itl_ms",
                    "sim_itl_ms", "err_itl_pct", "real_ttft_ms", "sim_ttft_ms", "real_starved", "sim_starved",
                    "real_mean_waiting", "sim_mean_waiting", "real_mean_running", "sim_mean_running",
                    "real_preemptions", "sim_preemptions", "sim_wall_s"])
        for r in rows:
            s = r.sim
            w.writerow([r.key, r.status, r.memory_error or "", r.measured["total_throughput_tps"], s.get("throughput_tps"),
                        _pct(r.rel_err("throughput_tps", "total_throughput_tps")), r.measured["mean_itl_ms"],
                        s.get("mean_itl_ms"), _pct(r.rel_err("mean_itl_ms", "mean_itl_ms")), r.measured["mean_ttft_ms"],
                        s.get("mean_ttft_ms"), r.measured["starved"], s.get("starved"), r.measured["mean_waiting"],
                        s.get("mean_waiting"), r.measured["mean_running"], s.get("mean_running"),
                        r.measured["preemptions"], s.get("preemptions"), s.get("wall_seconds")])

    print(f"Twin fidelity on {len(rows)} measured runs (split={args.split}); {wall:.1f} s wall\n")
    hdr = f"{'model':24} {'metric':28} {'packer twin':>12} {'upstream':>10} {'target':>8}"
    print(hdr)
    print("-" * len(hdr))
    for model, s in summary.items():
        up = upstream.get(model, {})
        lines = [
            ("throughput MARE %", s["throughput_mare_pct"], up.get("tps"), "<= 5"),
            ("mean ITL MARE %", s["itl_mare_pct"], up.get("itl"), "<= 10"),
            ("mean TTFT MARE %", s["ttft_mare_pct"], up.get("ttft"), ""),
            ("starvation agreement %", s["starvation_agreement_pct"], None, ">= 95"),
            ("OOM start failures caught", f"{s['oom_predicted']}/{s['oom_runs']}", None, "all"),
            ("false memory errors (ok runs)", s["false_memory_errors"], None, "0"),
        ]
        for name, v, u, tgt in lines:
            vs = f"{v:12.1f}" if isinstance(v, float) else f"{v!s:>12}"
            us = f"{u:10.1f}" if isinstance(u, float) else f"{'':>10}"
            print(f"{model:24} {name:28} {vs} {us} {tgt:>8}")
    walls = sorted(r.sim.get("wall_seconds") or 0.0 for r in rows if r.memory_error is None)
    if walls:
        print(f"\nper-run twin wall time: median {walls[len(walls) // 2]:.3f} s, max {walls[-1]:.3f} s "
              f"(one simulated hour each)")
    print(f"per-run rows: {csv_path}")
    return 0


def _pct(x: float) -> str:
    return "" if not math.isfinite(x) else f"{100 * x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
