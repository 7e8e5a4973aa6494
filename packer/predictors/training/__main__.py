"""``python -m packer.predictors.training``: generate (or resume) a twin sweep and print its summary as JSON."""

from __future__ import annotations

import argparse
from typing import Iterable

from ...files import dumps
from ..base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S
from .runs import generate
from .spec import SweepSpec

__all__ = ["main"]


def main(argv: Iterable[str] | None = None) -> None:
    """Parse the arguments, run the sweep, print its summary."""
    ap = argparse.ArgumentParser(prog="python -m packer.predictors.training", description="Generate a twin sweep.")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION_S)
    ap.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--executor", default="process")
    a = ap.parse_args(list(argv) if argv is not None else None)
    spec = SweepSpec(profile=a.profile, n_samples=a.samples, seed=a.seed, duration_s=a.duration, warmup_s=a.warmup)
    print(dumps(generate(spec, a.out, workers=a.workers, chunk_size=a.chunk_size, executor=a.executor)))


if __name__ == "__main__":
    main()
