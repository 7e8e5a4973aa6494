"""Fitting a performance profile from measurements: the code behind ``calibrate/fit_profiles.py``, one
module per stage, each a plain function of measurement tables (column name -> numpy array) that
returns the fitted coefficients and a report of the fit's error, so that live measurements can be fed
to the same code.

- ``fitting``: tables, least squares (plain and non-negative), grouped means, fit statistics.
- ``io``: measurement tables from CSV files or records; the end-to-end parameters file; writing profiles.
- ``memory``: KV-cache memory (non-KV GiB, MiB per LoRA slot) from KV-capacity starts.
- ``scheduler``: scheduler CPU ms per step.
- ``step``: the decode table with its KV-context term, and the prefill cost per token.
- ``lora``: the extra cost per distinct adapter in a step.
- ``loading``: adapter activation (CPU -> GPU) and disk read times per rank.
- ``e2e``: the end-to-end parameters (fitted elsewhere) and their defaults.
- ``assemble``: every stage for every model, assembled into profile dicts.
- ``report``: the fit report, printed.
- ``live_plan``: ``packer calibrate``: the measurement plan, its resumable run through the live harness
  (``packer.live``), the records fitted with the stages above; the closed-loop check against a profile.

A layer of its own between the twin and the predictors: it imports ``packer.profile``, ``packer.files``
and numpy (scipy on first use), and none of predictors, capacity, solvers, planner or cli.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use: the stages load numpy
    "read_measurements": ".io", "read_table": ".io", "table_from_records": ".io", "load_e2e_params": ".io",
    "write_profiles": ".io", "fit_micro_benchmarks": ".assemble", "build_profiles": ".assemble",
    "MODELS": ".assemble", "print_profile": ".report"})

__all__ = ["read_measurements", "read_table", "table_from_records", "load_e2e_params", "write_profiles",
           "fit_micro_benchmarks", "build_profiles", "MODELS", "print_profile"]
