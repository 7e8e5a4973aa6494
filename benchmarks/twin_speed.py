"""Twin speed: simulated seconds per wall second for one simulated hour, light load to heavy overload.

    python benchmarks/twin_speed.py [--profile NAME] [--repeats N]

Runs on one core (one process, numba's single-threaded kernel). Wall time is the simulation
itself (drawing requests, the step loop, the summary), excluding process start-up and JIT
compilation; each scenario is the median of N repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from packer.twin import Twin
from packer.twin.engine import warm_up

RATES = (0.1, 0.05, 0.025)
HEAVY = (1.6, 0.8, 0.4)


def scenario(profile: str, n_adapters: int, rates: tuple[float, ...], max_loras: int, max_rank: int = 16,
             arrivals: str = "poisson") -> dict:
    ranks = (8, 16) if max_rank == 16 else (8, 16, 32)
    return {
        "profile": profile,
        "server": {"max_loras": max_loras, "max_cpu_loras": n_adapters, "max_lora_rank": max_rank,
                   "max_num_seqs": 2048, "max_num_batched_tokens": 2048},
        "adapters": [{"id": f"a{i}", "rank": ranks[i % len(ranks)], "rate": rates[i % len(rates)]}
                     for i in range(n_adapters)],
        "lengths": {"input_mean": 222.7, "output_mean": 196.1},
        "arrivals": arrivals if arrivals == "poisson" else {"kind": arrivals},
        "duration_s": 3600, "seed": 0,
    }


CASES = [
    ("light: 8 adapters, 0.5 req/s", dict(n_adapters=8, rates=RATES, max_loras=8)),
    ("moderate: 64 adapters, 3.8 req/s", dict(n_adapters=64, rates=RATES, max_loras=32)),
    ("busy: 128 adapters, 7.5 req/s, slots=adapters", dict(n_adapters=128, rates=RATES, max_loras=128)),
    ("near capacity: 32 adapters, 30 req/s", dict(n_adapters=32, rates=HEAVY, max_loras=32)),
    ("LoRA-starved: 384 adapters, 22 req/s, 8 slots", dict(n_adapters=384, rates=RATES, max_loras=8)),
    ("bursty: 256 adapters, 15 req/s, 32 slots", dict(n_adapters=256, rates=RATES, max_loras=32, arrivals="bursty")),
    ("trace replay: 192 adapters, 11 req/s", dict(n_adapters=192, rates=RATES, max_loras=64, arrivals="trace")),
    ("overload: 64 adapters, 60 req/s, queue ~25k", dict(n_adapters=64, rates=HEAVY, max_loras=16)),
    ("heavy overload: 384 adapters, 358 req/s", dict(n_adapters=384, rates=HEAVY, max_loras=32)),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="llama-3.1-8b-instruct@h100-64gb")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warm_up()
    print(f"Twin speed, one simulated hour per scenario, profile {args.profile}, median of {args.repeats}\n")
    print(f"{'scenario':48} {'wall s':>8} {'x real time':>12} {'steps':>9} {'arrived':>9} {'max queue':>9}")
    speedups = []
    for name, kw in CASES:
        twin = Twin.from_scenario(scenario(args.profile, **kw))
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = twin.run()
            walls.append(time.perf_counter() - t0)
        wall = statistics.median(walls)
        speedups.append(r.sim_seconds / wall)
        print(f"{name:48} {wall:8.3f} {speedups[-1]:12,.0f} {r.steps:9,} {r.arrived:9,} {r.max_waiting:9,}")
    print(f"\nmedian {statistics.median(speedups):,.0f}x real time, slowest {min(speedups):,.0f}x "
          f"(targets: median >= 20,000x, none below 5,000x; upstream ~86x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
