"""packer: plan GPU fleets for serving many LoRA adapters on vLLM.

The public API:
- ``simulate(scenario)``: run the Digital Twin on one server config and workload.
- ``Scenario``, ``ServerConfig``, ``Workload``, ``Adapter``, ``LengthSpec`` and the arrival specs:
  the validated domain model.
- ``Profile``, ``load_profile``, ``list_profiles``: calibrated performance profiles (model x GPU).
- ``SimulationResult``, ``AdapterStats``: what a simulation reports.
- ``InputError``: raised for bad input, naming the field and the fix.
"""

from .errors import InputError, PackerError
from .model import (Adapter, BurstyArrivals, LengthSpec, PoissonArrivals, Scenario, ServerConfig,
                    TraceArrivals, Workload)
from .profile import Profile, list_profiles, load_profile
from .twin import AdapterStats, SimulationResult, Twin, simulate

__all__ = [
    "simulate",
    "Twin",
    "Scenario",
    "ServerConfig",
    "Workload",
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
    "InputError",
    "PackerError",
]

__version__ = "0.1.0"
