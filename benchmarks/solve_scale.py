"""Large placements end to end: `packer solve --solver greedy --predictor tree` on thousands of adapters.

    python benchmarks/solve_scale.py [--sizes 2000] [--families zipf,uniform,azure] [--mean-rates 1.0,0.1]
                                     [--profile llama] [--executor process|serial|ray] [--ray-address A]

Each instance (the generator of benchmarks/gap.py: ranks 8/16/32, rates from the family scaled to
the mean rate in req/s per adapter) is written as a workload file and solved by the real CLI in a
fresh process, twin verification of every GPU included (on the command's ``--executor``, which
``packer.executor`` opens; with ``ray`` and no ``--ray-address`` each command starts a local Ray, inside
its wall clock). The timed wall clock covers the whole
command (interpreter start, imports, numba cache loads, capacity model, solver, verification). The
first run of each instance starts from an empty capacity cache (the tree measures the capacity
model); the second reuses it. Target (issue 4): <= 10 s for 2,000 adapters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from packer.executor import EXECUTORS

import gap  # the instance generator (this script's folder is on sys.path)


def run(workload: Path, cache_dir: Path, solver: str, predictor: str, executor: str = "process",
        ray_address: str | None = None) -> tuple[float, dict]:
    """``packer solve`` on ``workload`` in a fresh process: its wall clock and its JSON result."""
    env = {**os.environ, "PACKER_CACHE_DIR": str(cache_dir)}
    where = ["--executor", executor] + (["--ray-address", ray_address] if ray_address else [])
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "packer", "solve", str(workload), "--solver", solver,
                          "--predictor", predictor, *where, "--json"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"packer solve failed on {workload}: {out.stderr.strip()}")
    return wall, json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="2000")
    ap.add_argument("--families", default="zipf,uniform,azure")
    ap.add_argument("--mean-rates", default="1.0,0.1", help="mean req/s per adapter")
    ap.add_argument("--profile", choices=sorted(gap.PROFILES), default="llama")
    ap.add_argument("--solver", default="greedy")
    ap.add_argument("--predictor", default="tree")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--executor", choices=EXECUTORS, default="process",
                    help="where each command's capacity measurement and twin verification run")
    ap.add_argument("--ray-address", default=None, help="Ray cluster for --executor ray [default: a local Ray each]")
    args = ap.parse_args()

    print(f"packer solve --solver {args.solver} --predictor {args.predictor} (twin verification included), "
          f"profile {gap.PROFILES[args.profile]}\n")
    hdr = (f"{'adapters':>8} {'family':>8} {'req/s each':>10} {'GPUs':>5} {'bound':>5} {'verified':>8} "
           f"{'cold s':>7} {'warm s':>7} {'capacity':>8} {'solver':>7} {'verify':>7}")
    print(hdr)
    print("-" * len(hdr))
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            for mean in (float(x) for x in args.mean_rates.split(",")):
                for family in args.families.split(","):
                    gap.MEAN_RATE = mean
                    wl = gap.instance(gap.PROFILES[args.profile], family, n, args.seed)
                    path = Path(tmp) / f"{family}_{n}_{mean}.json"
                    path.write_text(json.dumps(wl))
                    cache = Path(tmp) / f"cache_{family}_{n}_{mean}"
                    cold, _ = run(path, cache, args.solver, args.predictor, args.executor, args.ray_address)
                    warm, r = run(path, cache, args.solver, args.predictor, args.executor, args.ray_address)
                    walls += [cold, warm]
                    print(f"{n:>8} {family:>8} {mean:>10g} {r['num_gpus']:>5} {r['lower_bound']:>5} "
                          f"{str(r['verified']):>8} {cold:>7.1f} {warm:>7.1f} {r['capacity_seconds']:>8.2f} "
                          f"{r['solver_seconds']:>7.2f} {r['verify_seconds']:>7.2f}")
    print(f"\nwhole command: median {statistics.median(walls):.1f} s, max {max(walls):.1f} s "
          f"(capacity / solver / verify columns: the warm run's own split, seconds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
