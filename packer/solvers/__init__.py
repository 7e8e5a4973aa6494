"""Placement solvers on the shared capacity model, registered by name in ``SOLVERS``.

- ``greedy`` (default): first-fit / best-fit decreasing, fine-grained in the adapter count.
- ``ladder``: the published checkpoint greedy, as a reference.
- ``cpsat``: OR-Tools CP-SAT, exact; ``milp``: Pyomo + HiGHS, exact (each in its own process).
"""

from .base import (SOLVERS, Assignment, Item, Objective, PlacementProblem, Solver, SolveStatus, get_solver)
from .exact_solvers import CpSatSolver, MilpSolver
from .greedy import GreedySolver
from .ladder import LadderSolver
from .result import AdapterShare, GpuPlan, SolveResult

__all__ = ["SOLVERS", "get_solver", "Solver", "SolveStatus", "Objective", "Item", "PlacementProblem", "Assignment",
           "GreedySolver", "LadderSolver",
           "CpSatSolver", "MilpSolver", "AdapterShare", "GpuPlan", "SolveResult"]
