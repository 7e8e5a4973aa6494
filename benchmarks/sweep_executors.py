"""The same twin sweep on the local process pool and on Ray: samples per second each, and whether the rows
are identical (they must be: every sample is seeded by its index).

    python benchmarks/sweep_executors.py [--samples 2000] [--workers 2] [--ray-address ADDRESS]

Needs the packer[ray] extra for the Ray run (without --ray-address a local Ray is started for it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from packer.predictors.training import SweepSpec, generate, load_dataset

COLUMNS = ("throughput_tps", "twin_offered_tps", "mean_itl_ms", "starved", "memory_error", "features")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="llama-3.1-8b-instruct@h100-64gb")
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-address", default=None)
    a = ap.parse_args()
    spec = SweepSpec(profile=a.profile, n_samples=a.samples, seed=11)
    rows, rates = {}, {}
    with tempfile.TemporaryDirectory() as d:
        for executor in ("process", "ray"):
            t0 = time.perf_counter()
            generate(spec, Path(d) / executor, workers=a.workers, chunk_size=64, executor=executor, progress=False,
                     ray_address=a.ray_address)
            wall = time.perf_counter() - t0
            rows[executor] = load_dataset(Path(d) / executor)
            rates[executor] = a.samples / wall
            print(f"{executor:8s} {a.samples} samples in {wall:6.1f} s: {rates[executor]:6.1f} samples/s "
                  f"({a.workers} workers)", flush=True)
    same = all(np.array_equal(rows["process"][c], rows["ray"][c], equal_nan=True) for c in COLUMNS)
    print(f"ray / process: {rates['ray'] / rates['process']:.2f}x; rows identical: {same}")


if __name__ == "__main__":
    main()
