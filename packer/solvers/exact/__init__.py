"""Exact placement on the capacity model: CP-SAT (OR-Tools) and a MILP (Pyomo + HiGHS), each backend in its
own child process.

- ``solvers``: the registered ``cpsat`` and ``milp`` solvers (greedy warm start, answers as ``Assignment``);
- ``runner``: ``solve_exact`` starts the child, keeps the time limit and checks every answer;
- ``worker``: the child's entry point (problem JSON on stdin, answer JSON on stdout), one backend a process;
- ``prepare``: the model both backends build, the problem prepared for it and the answer mapped back;
- ``cpsat_model``, ``milp_model``: the model built and searched by each backend;
- ``phases``: the child's phase reports, read back by the runner.

The capacity model is plain, JSON-serialisable data::

    {"items": [{"load": int, "rank_class": int, "group": int (optional)}, ...],
     "configs": [{"rank_class": int, "max_count": int, "capacity": int}, ...],
     "objective": "min_gpus" | "min_latency",
     "max_bins": int,          # bins the model may use (min_gpus)
     "gpus": int | None,       # the budget G (required for min_latency)
     "warm_start": {"bins": [bin per item], "configs": [config per bin]} | None,
     "time_limit_s": float, "workers": int, "seed": int,
     "known_lower_bound": int (optional)}  # a bound on the bins proven elsewhere (column generation)

(``solve_exact`` adds ``lower_bound`` and the child's ``deadline`` when it hands the problem on.)

A bin takes one config and holds items of rank class <= the config's, at most ``max_count`` of them and
at most ``capacity`` load, and at most one item of each ``group`` (the replicas of one adapter).
``min_gpus`` minimises the bins; ``min_latency`` minimises, on at most G bins, the max per-mille
utilisation T = ceil(1000 load / capacity) over the used bins.
"""

from ...lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {  # imported on first use: the child imports this package too
    **dict.fromkeys(["BACKENDS", "DEFAULT_TIME_LIMIT_S", "solve_exact", "backend_available", "check_placement",
                     "placement_objective"], ".runner")})

__all__ = ["BACKENDS", "DEFAULT_TIME_LIMIT_S", "solve_exact", "backend_available", "check_placement",
           "placement_objective"]
