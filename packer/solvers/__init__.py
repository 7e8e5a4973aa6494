"""Placement solvers on the shared capacity model, registered by name in ``SOLVERS``.

- ``greedy`` (default): first-fit / best-fit decreasing, fine-grained in the adapter count.
- ``ladder``: the published checkpoint greedy, as a reference.
- ``loraserve``, ``dlora``: the peers' methods as published (background §7), each at its own smallest
  GPU count that the predictor verifies (``peers.py``).
- ``cpsat``: OR-Tools CP-SAT, exact; ``milp``: Pyomo + HiGHS, exact (each in its own process; ``exact/``).
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use (numpy, the capacity model, the twin)
    **dict.fromkeys(["SOLVERS", "Assignment", "Item", "Objective", "PlacementProblem", "Solver", "SolveStatus",
                     "get_solver"], ".base"),
    "CpSatSolver": ".exact.solvers", "MilpSolver": ".exact.solvers", "GreedySolver": ".greedy",
    "LadderSolver": ".ladder",
    "LoraServeSolver": ".peers", "DLoraSolver": ".peers", **dict.fromkeys(["AdapterShare", "GpuPlan", "SolveResult"], ".result")})

__all__ = ["SOLVERS", "get_solver", "Solver", "SolveStatus", "Objective", "Item", "PlacementProblem", "Assignment",
           "GreedySolver", "LadderSolver", "LoraServeSolver", "DLoraSolver", "CpSatSolver", "MilpSolver", "AdapterShare", "GpuPlan", "SolveResult"]
