"""The Digital Twin: a calibrated step-level simulator of one vLLM server serving many LoRA adapters.

- ``engine``: the Python API (``simulate``, ``Twin``), memory check and result summary.
- ``state``: the engine state in one object (the kernel's arrays).
- ``kernel``: the numba step loop (scheduler policy, KV blocks, LoRA slots, step cost).
- ``online``: the same engine fed by requests as they arrive (``packer serve-twin``).
- ``workload_gen``: the requests drawn from a workload, from ``arrivals`` (Poisson, bursty),
  ``traces`` (trace replay) and ``lengths`` (the request-length model).
- ``result``: ``SimulationResult`` and ``AdapterStats``.
- ``fingerprint``: the twin's fingerprint, which keys every artefact made from its output.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use: the engine loads numba
    "Twin": ".engine", "simulate": ".engine", "SimulationResult": ".result", "AdapterStats": ".result"})

__all__ = ["Twin", "simulate", "SimulationResult", "AdapterStats"]
