"""Numbers that several layers and the CLI's options share, in a module that imports nothing.

They live here, not next to the code that uses them, so that ``packer --help`` can show them
without importing numpy, numba, pydantic or the solvers (the command line starts fast).
"""

__all__ = ["DEFAULT_DURATION_S", "DEFAULT_WARMUP_S", "GRACE_S"]

# A twin run that stands for a GPU in steady state: 300 simulated seconds of warm-up, then a measured
# 600 s window. Without the warm-up a short window loses the requests still in flight at its end and
# sees a queue that has not settled; on the real runs that costs 5 points of throughput error and 14
# of starvation agreement (issue 4 notes). The twin predictor, the sweeps and the capacity tables use it.
DEFAULT_DURATION_S = 600.0
DEFAULT_WARMUP_S = 300.0

GRACE_S = 0.5  # the exact solvers' margin: a call returns within time_limit_s + GRACE_S (solvers/exact/runner.py)
