"""The capacity model every solver shares: what one GPU can sustain, as the predictor says.

``packer.capacity``: table (``table.py``), its measurement (``search.py``, run by ``build.py``), its on-disk cache
(``cache.py``) and the check of a trained predictor's tables against the twin's (``training.py``).

A solver cannot call a simulator inside its constraints, so the predictor is turned into a table.
For each *rank class* R (a vLLM ``--max-lora-rank`` value) and each *adapter count* n on a grid, the
model holds the largest token load (prompt + output tokens/s) that a GPU serving n adapters of rank
R, with equal rates, keeps up with, and the ``max_loras`` that achieves it:

- "keeps up" means the predictor says the GPU starts, is not starved, and serves at least
  ``KEEP_UP_RATIO`` (95 %) of the offered tokens in its window. That is stricter than the 90 %
  starvation line, so a placement packed to the table's capacity passes verification with margin.
- for each (R, n) the load is found by a bracketed bisection (relative tolerance ``tolerance``),
  starting from the neighbouring count's answer; ``max_loras`` is searched downward from
  ``min(n, memory limit)`` while fewer slots sustain more load (fewer slots: more KV cache and less
  per-slot LoRA cost, but adapters contend for slots).
- the table is made non-increasing in n (a running minimum), so a GPU with n adapters may use the
  entry of any grid count >= n: the step function is conservative between grid points.
- equal rates are the hard case for a given count and load (the most adapters active at once); a
  skewed set of the same count and load has fewer distinct adapters per step. Verification with
  the twin on the real rates catches the rest.

Tables are cached on disk (``$PACKER_CACHE_DIR``, default ``~/.cache/packer``) under a key made of
everything that changes them: the twin's fingerprint (its code, its data files and the profile's
numbers, ``packer.twin.fingerprint``), the search's code, lengths, arrivals, base server settings and
the predictor's settings; no version number to bump. packer ships tables for the default settings
of both profiles (``packer/data/capacity``, made by ``calibrate/ship_capacity.py``), found under the
same keys.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use (pydantic, numpy, the predictors)
    "CapacityModel": ".table", "GpuConfig": ".table", "count_grid": ".table", "build_capacity_model": ".build"})

__all__ = ["CapacityModel", "GpuConfig", "count_grid", "build_capacity_model"]
