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
from .lazy import lazy_exports

# Where each public name lives; it is imported on first use, so ``import packer`` (and the CLI's
# start-up) loads no numpy, numba or pydantic until a name that needs them is used.
_WHERE = {
    "solve": ".planner",
    "simulate": ".twin", "Twin": ".twin", "SimulationResult": ".twin", "AdapterStats": ".twin",
    **dict.fromkeys(["Scenario", "ServerConfig", "Workload", "PlacementWorkload", "Adapter", "LengthSpec",
                     "PoissonArrivals", "BurstyArrivals", "TraceArrivals"], ".model"),
    "Profile": ".profile", "load_profile": ".profile", "list_profiles": ".profile",
    "SolveResult": ".solvers", "GpuPlan": ".solvers", "SolveStatus": ".solvers", "get_solver": ".solvers",
    "get_predictor": ".predictors", "GpuQuery": ".predictors", "Prediction": ".predictors",
}
__getattr__, __dir__ = lazy_exports(__name__, _WHERE)

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
