"""The live harness on this machine: how much load the benchmark client sustains against `packer serve-twin`
before it falls behind its schedule, and how `packer bench` against serve-twin agrees with `packer
simulate` on ten scenarios from light load to overload.

    python benchmarks/live_harness.py [--quick] [--capacity-only | --agreement-only]

Both parts launch serve-twin through the same launch template as real vLLM and play the twin's own
workloads. Client capacity: a scenario the simulated server can serve, played at growing time scales,
so the wall-clock request and token rates grow while the server keeps up; the client "sustains" a
rate when the 99th percentile of its send delays stays under 5 ms and serve-twin's engine keeps real
time. Agreement: each scenario at a time scale that keeps the wall-clock rate near 40 req/s, the
twin's window (30 s warm-up, 120 s measured; --quick: 10 s and 40 s).
"""

from __future__ import annotations

import argparse
import sys

from packer.live.session import launch_and_bench
from packer.model import parse_scenario
from packer.profile import load_profile
from packer.twin import simulate

PROFILE = "llama-3.1-8b-instruct@h100-64gb"
TEMPLATE = (f"{sys.executable} -m packer.cli serve-twin --profile {{profile}} --max-loras {{max_loras}} "
            "--max-cpu-loras {max_cpu_loras} --max-lora-rank {max_lora_rank} --max-num-seqs {max_num_seqs} "
            "--max-num-batched-tokens {max_num_batched_tokens} --gpu-memory-utilization {gpu_memory_utilization} "
            "--port {port} --time-scale {time_scale} --lora-modules {lora_modules}")
WALL_RATE = 40.0  # req/s the agreement runs aim at (well within the client's capacity)


def scenario(n: int, rate: float, slots: int, duration: float, warmup: float, arrivals="poisson",
             lengths: dict | None = None, seqs: int = 2048) -> dict:
    return {"profile": PROFILE,
            "server": {"max_loras": slots, "max_lora_rank": 32, "max_num_seqs": seqs, "max_num_batched_tokens": 2048},
            "adapters": [{"id": f"a{i}", "rank": (8, 16, 32)[i % 3], "rate": rate} for i in range(n)],
            "lengths": lengths or {}, "arrivals": arrivals, "duration_s": duration, "warmup_s": warmup, "seed": 0}


AGREEMENT = [  # name, adapters, rate per adapter (req/s), slots, arrivals
    ("light: 8 adapters", 8, 0.1, 8, "poisson"),
    ("light: 32 adapters", 32, 0.05, 32, "poisson"),
    ("moderate: 64 on 32 slots", 64, 0.1, 32, "poisson"),
    ("moderate: bursty", 64, 0.1, 32, {"kind": "bursty"}),
    ("busy: 16 adapters", 16, 1.0, 16, "poisson"),
    ("many adapters, 8 slots", 128, 0.05, 8, "poisson"),
    ("near capacity: 32 adapters", 32, 1.2, 32, "poisson"),
    ("LoRA-starved: 1 slot", 8, 0.5, 1, "poisson"),
    ("overload: 2x capacity", 32, 2.5, 32, "poisson"),
    ("overload: 4x, few slots", 64, 2.0, 8, "poisson"),
]


def agreement(quick: bool) -> None:
    duration, warmup = (40.0, 10.0) if quick else (120.0, 30.0)
    prof = load_profile(PROFILE)
    print("\n## bench against serve-twin vs simulate (same scenario, same seed)\n")
    print("| scenario | req/s | time scale | throughput sim / bench (tok/s) | err | starved sim / bench | "
          "mean ITL sim / bench (ms) | err | p50 TTFT sim / bench (ms) | client p99 delay (ms wall) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst_thr = worst_itl = 0.0
    same = 0
    for name, n, rate, slots, arrivals in AGREEMENT:
        sc = parse_scenario(scenario(n, rate, slots, duration, warmup, arrivals))
        total = sc.workload.total_rate
        scale = max(1.0, min(10.0, WALL_RATE / total))
        t = simulate(sc)
        b = launch_and_bench(sc, prof, TEMPLATE, time_scale=scale, health_timeout_s=120)
        r = b.result
        e_thr = abs(r.throughput_tps - t.throughput_tps) / t.throughput_tps
        e_itl = abs(r.mean_itl_ms - t.mean_itl_ms) / t.mean_itl_ms
        worst_thr, worst_itl = max(worst_thr, e_thr), max(worst_itl, e_itl)
        same += r.starved == t.starved
        print(f"| {name} | {total:.1f} | {scale:g} | {t.throughput_tps:,.0f} / {r.throughput_tps:,.0f} | {e_thr:.1%} | "
              f"{t.starved} / {r.starved} | {t.mean_itl_ms:.1f} / {r.mean_itl_ms:.1f} | {e_itl:.1%} | "
              f"{t.p50_ttft_ms:.0f} / {r.p50_ttft_ms:.0f} | {b.client['send_lag_p99_s'] / scale * 1e3:.1f} |",
              flush=True)
    print(f"\nworst throughput error {worst_thr:.1%}, worst mean-ITL error {worst_itl:.1%}, "
          f"starved verdict the same on {same} of {len(AGREEMENT)}")


def capacity(quick: bool) -> None:
    # A load the simulated server serves with room (32 adapters, 12 req/s, 300 output tokens): played at
    # time scale x, the client sends 12x requests and receives 3,600x streamed tokens per wall second.
    prof = load_profile(PROFILE)
    duration, warmup = (20.0, 5.0) if quick else (40.0, 10.0)
    lengths = {"input_mean": 120, "output_mean": 300, "distribution": "fixed"}
    print("\n## client capacity against serve-twin (this machine, client and server on the same cores)\n")
    print("| time scale | req/s sent (wall) | streamed tok/s (wall) | total tok/s (wall) | client p99 delay (ms) | "
          "server lag (s) | throughput vs simulate | keeps schedule |")
    print("|---|---|---|---|---|---|---|---|")
    best = None
    for scale in (2.0, 3.0, 4.0, 5.0, 6.0, 8.0):
        sc = parse_scenario(scenario(32, 12.0 / 32, 32, duration, warmup, lengths=lengths))
        t = simulate(sc)
        b = launch_and_bench(sc, prof, TEMPLATE, time_scale=scale, health_timeout_s=120)
        r = b.result
        lag = max((row.get("server_lag_s", 0.0) for row in b.series), default=0.0)
        sent_rps = b.client["sent"] / ((duration + warmup) / scale)
        streamed = r.output_tps * scale
        total = r.throughput_tps * scale
        p99 = b.client["send_lag_p99_s"] / scale * 1e3
        ok = not b.client["behind_schedule"] and lag < 0.25 and abs(r.throughput_tps / t.throughput_tps - 1) < 0.05
        if ok:
            best = (sent_rps, streamed, total)
        print(f"| {scale:g} | {sent_rps:.0f} | {streamed:,.0f} | {total:,.0f} | {p99:.1f} | {lag:.2f} | "
              f"{r.throughput_tps / t.throughput_tps:.3f} | {'yes' if ok else 'NO'} |", flush=True)
        if not ok:
            break
    if best:
        print(f"\nthe client sustains {best[0]:.0f} req/s and {best[1]:,.0f} streamed tokens/s "
              f"({best[2]:,.0f} prompt + output tokens/s) against serve-twin on this machine")
    else:
        print("\nthe client fell behind at the lowest rate tried")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows")
    ap.add_argument("--capacity-only", action="store_true")
    ap.add_argument("--agreement-only", action="store_true")
    args = ap.parse_args()
    if not args.agreement_only:
        capacity(args.quick)
    if not args.capacity_only:
        agreement(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
