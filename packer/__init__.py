"""packer: plan GPU fleets for serving many LoRA adapters on vLLM.

The public API:
- ``solve(workload, solver=..., predictor=...)``: GPUs, adapter placement and vLLM flags per GPU.
- ``simulate(scenario)``: run the Digital Twin on one server config and workload.
- ``Scenario``, ``ServerConfig``, ``Workload``, ``Adapter``, ``LengthSpec`` and the arrival specs:
  the validated domain model.
- ``Profile``, ``load_profile``, ``list_profiles``: calibrated performance profiles (model x GPU).
- ``SimulationResult``, ``AdapterStats``: what a simulation reports.
- ``SolveResult``, ``GpuPlan``, ``SolveStatus``: what a placement reports.
- ``get_solver``, ``get_predictor``, ``GpuQuery``, ``Prediction``: the solver and predictor registries.
- ``InputError``: raised for bad input, naming the field and the fix.
"""

from .errors import InputError, PackerError
from .model import (Adapter, BurstyArrivals, LengthSpec, PlacementWorkload, PoissonArrivals, Scenario,
                    ServerConfig, TraceArrivals, Workload)
from .planner import solve
from .predictors import GpuQuery, Prediction, get_predictor
from .solvers import GpuPlan, SolveResult, SolveStatus, get_solver
from .profile import Profile, list_profiles, load_profile
from .twin import AdapterStats, SimulationResult, Twin, simulate

__all__ = [
    "solve",
    "simulate",
    "Twin",
    "Scenario",
    "ServerConfig",
    "Workload",
    "PlacementWorkload",
    "Adapter",
    "LengthSpec",
    "PoissonArrivals",
    "BurstyArrivals",
    "TraceArrivals",
    "Profile",
    "load_profile",
    "list_profiles",
    "SimulationResult",
    "AdapterStats",
    "SolveResult",
    "GpuPlan",
    "SolveStatus",
    "get_solver",
    "get_predictor",
    "GpuQuery",
    "Prediction",
    "InputError",
    "PackerError",
]

__version__ = "0.1.0"
