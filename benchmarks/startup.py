"""Start-up time: `packer --help`, `packer profiles` and `import packer` against `import click`.

    python benchmarks/startup.py [--runs 10] [--root DIR]

Each command runs ``--runs`` times as a fresh subprocess of this interpreter (after one untimed run
that writes the bytecode caches) in ``DIR`` (default: this checkout), which is first on the path; prints
the median wall time of each and its ratio to ``python -c "import click"``. Issue 13's target: the
two commands within 3x of the click import. ``packer`` is run as the console script runs it
(``from packer.cli import main; main()``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKER = "import sys; from packer.cli import main; sys.argv[0] = 'packer'; main()"
COMMANDS = {  # name -> arguments of the interpreter
    'python -c "import click"': ["-c", "import click"],
    "packer --help": ["-c", PACKER, "--help"],
    "packer profiles": ["-c", PACKER, "profiles"],
    'python -c "import packer"': ["-c", "import packer"],
}
REFERENCE = 'python -c "import click"'
TARGET_RATIO = 3.0


def wall_seconds(args: list[str], root: Path, env: dict[str, str]) -> float:
    """One run's wall time in ``root``; a failing command stops the benchmark (its time would mean nothing)."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{args} failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10, help="timed runs per command (the median is shown)")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose packer is measured")
    a = ap.parse_args()
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    root = a.root.resolve()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    medians = {}
    for name, args in COMMANDS.items():
        wall_seconds(args, root, env)  # untimed: bytecode caches
        medians[name] = statistics.median(wall_seconds(args, root, env) for _ in range(a.runs))
    ref = medians[REFERENCE]
    print(f"packer at {root}; {sys.executable}; median of {a.runs} runs each")
    print(f"{'command':<30} {'median s':>9} {'x click':>8}")
    for name, m in medians.items():
        print(f"{name:<30} {m:>9.3f} {m / ref:>8.2f}")
    worst = max(medians["packer --help"], medians["packer profiles"]) / ref
    print(f"target: --help and profiles within {TARGET_RATIO:g}x of the click import: "
          f"{'met' if worst <= TARGET_RATIO else 'NOT met'} ({worst:.2f}x)")


if __name__ == "__main__":
    main()
