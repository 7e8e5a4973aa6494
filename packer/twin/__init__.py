"""The Digital Twin: a calibrated step-level simulator of one vLLM server serving many LoRA adapters.

- ``engine``: the Python API (``simulate``, ``Twin``), memory check and result summary.
- ``kernel``: the numba step loop (scheduler policy, KV blocks, LoRA slots, step cost).
- ``workload_gen``: arrivals and request lengths drawn from a workload.
- ``result``: ``SimulationResult`` and ``AdapterStats``.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use: the engine loads numba
    "Twin": ".engine", "simulate": ".engine", "SimulationResult": ".result", "AdapterStats": ".result"})

__all__ = ["Twin", "simulate", "SimulationResult", "AdapterStats"]
