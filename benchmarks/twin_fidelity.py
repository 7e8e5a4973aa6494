"""Twin vs real vLLM: replay every run of shared/data/agullo-h100/real_runs.csv and compare.

    python benchmarks/twin_fidelity.py [--data PATH] [--workers N] [--executor process|serial|ray] [--ray-address A] [--split all|fit|holdout]
                                       [--model NAME] [--profile-file PROFILE.json ...] [--out CSV] [--breakdown]
                                       [--admission-delay]

Prints, per model, the twin's mean absolute relative error on throughput, mean ITL and mean TTFT,
starvation agreement and start-up memory-failure detection, next to the upstream twin's errors on
the same runs (authors_dt_vs_real.csv). Per-run rows go to benchmarks/out/twin_fidelity_runs.csv.
``--profile-file`` replays the runs of that profile's model with the file instead of the shipped
profile (e.g. one derived by ``packer profile derive``); ``--model`` keeps only that model's runs.
``--breakdown`` adds the latency errors per regime (many-adapter low-rate runs vs the rest: ITL, TTFT,
p99 TTFT) and, on runs without a queue, the twin's and the real TTFT-to-ITL ratio by adapters served
(see docs/latency_fidelity.md). ``--admission-delay`` replays with the fitted admission delay of
``calibrate/e2e_params.json`` (``admission_ms_per_adapter_sq_fitted``; the shipped profiles have 0).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

from packer.calibration.e2e import ADMISSION_FITTED
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
    ap.add_argument("--admission-delay", action="store_true",
                    help="replay with the fitted admission delay of calibrate/e2e_params.json (shipped profiles: 0)")
    ap.add_argument("--breakdown", action="store_true", help="latency errors per regime (docs/latency_fidelity.md)")
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
    if args.admission_delay:
        fitted = json.loads((ROOT / "calibrate" / "e2e_params.json").read_text())
        for model, name in PROFILE_FOR_MODEL.items():
            prof = overrides.get(name) or load_profile(name)
            c = fitted[model][ADMISSION_FITTED]
            overrides[name] = dataclasses.replace(prof, client=dataclasses.replace(prof.client,
                                                                                   admission_ms_per_adapter_sq=c))
            print(f"{model}: replayed with the fitted admission delay, {c:g} ms per squared adapter")
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
    if args.breakdown:
        print_breakdown(runs, rows)
    print(f"per-run rows: {csv_path}")
    return 0


LOW_RATE_RPS = 0.1   # per-adapter rate at or below which a run is "low-rate"
MANY_ADAPTERS = 30   # adapters served from which a run is "many-adapter"


def _median(xs: list[float]) -> float:
    v = sorted(x for x in xs if math.isfinite(x))
    if not v:
        return math.nan
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def _mare(xs: list[float]) -> float:
    v = [abs(x) for x in xs if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def print_breakdown(runs, rows) -> None:
    """Latency errors (%) per model and regime; TTFT-to-ITL ratios on runs without a queue."""
    by_key = {r.key: r for r in runs}
    groups: dict[tuple[str, str], list] = {}
    noqueue: dict[tuple[str, int], list] = {}
    for row in rows:
        if row.status != "ok" or row.memory_error is not None:
            continue
        ads = by_key[row.key].scenario["adapters"]
        low = max(a["rate"] for a in ads) <= LOW_RATE_RPS
        regime = "many-adapter low-rate" if low and len(ads) >= MANY_ADAPTERS else "rest"
        groups.setdefault((row.model, regime), []).append(row)
        groups.setdefault((row.model, "all"), []).append(row)
        if low and row.measured["mean_waiting"] < 0.5:
            noqueue.setdefault((row.model, len(ads)), []).append(row)
    print("\nLatency errors by regime (signed: twin - real; TTFT columns on runs not starved; 'all' = both regimes)")
    hdr = (f"{'model':24} {'regime':22} {'runs':>4} {'ITL MARE':>8} {'ITL med':>8} {'tput MARE':>9} "
           f"{'TTFT |med|':>10} {'TTFT med':>8} {'p99 |med|':>9} {'p99 med':>8}")
    print(hdr)
    print("-" * len(hdr))
    for (model, regime), rs in sorted(groups.items()):
        ns = [r for r in rs if not r.measured["starved"]]
        itl = [100 * r.rel_err("mean_itl_ms", "mean_itl_ms") for r in rs]
        tps = [100 * r.rel_err("throughput_tps", "total_throughput_tps") for r in rs]
        ttft = [100 * r.rel_err("mean_ttft_ms", "mean_ttft_ms") for r in ns]
        p99 = [100 * r.rel_err("p99_ttft_ms", "p99_ttft_ms") for r in ns]
        print(f"{model:24} {regime:22} {len(rs):4d} {_mare(itl):8.1f} {_median(itl):8.1f} {_mare(tps):9.1f} "
              f"{_median([abs(x) for x in ttft]):10.1f} {_median(ttft):8.1f} {_median([abs(x) for x in p99]):9.1f} "
              f"{_median(p99):8.1f}")
    print("\nLow-rate runs without a queue (real mean waiting < 0.5): medians")
    hdr = f"{'model':24} {'adapters':>8} {'runs':>4} {'real ITL-twin ms':>16} {'real TTFT-twin ms':>17} {'real TTFT/ITL':>13} {'twin TTFT/ITL':>13}"
    print(hdr)
    print("-" * len(hdr))
    for (model, n), rs in sorted(noqueue.items()):
        d_itl = [r.measured["mean_itl_ms"] - r.sim["mean_itl_ms"] for r in rs]
        d_ttft = [r.measured["mean_ttft_ms"] - r.sim["mean_ttft_ms"] for r in rs]
        q_real = [r.measured["mean_ttft_ms"] / r.measured["mean_itl_ms"] for r in rs]
        q_sim = [r.sim["mean_ttft_ms"] / r.sim["mean_itl_ms"] for r in rs]
        print(f"{model:24} {n:8d} {len(rs):4d} {_median(d_itl):16.1f} {_median(d_ttft):17.1f} {_median(q_real):13.2f} "
              f"{_median(q_sim):13.2f}")


def _pct(x: float) -> str:
    return "" if not math.isfinite(x) else f"{100 * x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
