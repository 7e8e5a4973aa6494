"""Measure and ship the capacity tables for the default placement settings of every shipped profile.

    python calibrate/ship_capacity.py [--max-adapters 512] [--workers N]

Default settings: the twin predictor (300 s warm-up, then a 600 s window; seed 0), ShareGPT-shaped
lengths with the calibration runs' means (222.7 / 196.1), Poisson arrivals, max_num_seqs 2048, a
2048-token budget, gpu_memory_utilization 0.9, ranks 8-64. The files land in packer/data/capacity
under the same keys the user cache uses, so `packer solve` on default settings needs no measuring.
Rerun after changing a profile, the twin or the capacity search: the keys cover all three (the twin's
fingerprint and the search's code), so until then `packer solve` measures the tables again itself, and
tests/test_twin_fingerprint.py fails on the shipped files.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-adapters", type=int, default=512)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    os.environ["PACKER_CACHE_DIR"] = str(ROOT / "packer" / "data" / "_ship")
    from packer.model import LengthSpec, PoissonArrivals
    from packer.predictors import TwinPredictor
    from packer.profile import list_profiles
    from packer.capacity import build_capacity_model
    from packer.capacity.cache import cache_dir
    from packer.model import ServerDefaults

    out = ROOT / "packer" / "data" / "capacity"
    out.mkdir(parents=True, exist_ok=True)
    for name in list_profiles():
        t0 = time.perf_counter()
        cm = build_capacity_model(TwinPredictor(), name, LengthSpec(), PoissonArrivals(), ServerDefaults(),
                                  [8, 16, 32, 64], args.max_adapters, workers=args.workers, progress=print)
        for f in cache_dir().glob("*.json"):
            f.replace(out / f.name)
        print(f"{name}: {len(cm.configs)} entries in {time.perf_counter() - t0:.0f} s")
    (ROOT / "packer" / "data" / "_ship" / "capacity").rmdir()
    (ROOT / "packer" / "data" / "_ship").rmdir()


if __name__ == "__main__":
    main()
