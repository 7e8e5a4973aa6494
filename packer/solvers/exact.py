"""Exact placement on the capacity model, each backend in its own child process.

The capacity model is plain, JSON-serialisable data::

    {"items": [{"load": int, "rank_class": int}, ...],
     "configs": [{"rank_class": int, "max_count": int, "capacity": int}, ...],
     "objective": "min_gpus" | "min_latency",
     "max_bins": int,          # bins the model may use (min_gpus)
     "gpus": int | None,       # the budget G (required for min_latency)
     "warm_start": {"bins": [bin per item], "configs": [config per bin]} | None,
     "time_limit_s": float, "workers": int, "seed": int}

A bin takes one config and holds items of rank class <= the config's, at most ``max_count`` of them and
at most ``capacity`` load. ``min_gpus`` minimises the bins; ``min_latency`` minimises, on at most G bins,
the max per-mille utilisation T = ceil(1000 load / capacity) over the used bins.

ortools 9.15 and highspy 1.15 bundle different HiGHS libraries under one soname, so they cannot be loaded
in one process: this module imports neither (nor pyomo) and runs ``packer.solvers._exact_worker`` in a
child process per solve, problem JSON on stdin, answer JSON on stdout. Every answer is checked here before
it is returned; a placement that breaks a rule is never passed on as feasible.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from packer.errors import InputError
from packer.solvers.bounds import PERMILLE, latency_lower_bound, lower_bounds, unplaceable_items

__all__ = ["BACKENDS", "GRACE_S", "DEFAULT_TIME_LIMIT_S", "solve_exact", "backend_available", "check_placement",
           "placement_objective"]

BACKENDS = ("cpsat", "milp")
GRACE_S = 10.0  # on top of time_limit_s before the child is killed: start-up, presolve and answer overrun
DEFAULT_TIME_LIMIT_S = 60.0
_MODULES = {"cpsat": ("ortools",), "milp": ("pyomo", "highspy")}
_OBJECTIVES = ("min_gpus", "min_latency")
_ROOT = Path(__file__).resolve().parents[2]  # the directory holding the ``packer`` package


def backend_available(backend: str) -> bool:
    """Whether the backend's libraries are installed (looked up, not imported)."""
    return backend in _MODULES and all(importlib.util.find_spec(mod) is not None for mod in _MODULES[backend])


def check_placement(problem: dict, bins: list[int], configs: list[int]) -> str | None:
    """None when ``bins`` (bin per item) and ``configs`` (config per bin) are a valid placement with bins
    numbered 0..m-1, each used; otherwise a message naming the first broken rule."""
    items, cfgs = problem["items"], problem["configs"]
    if not isinstance(bins, list) or not isinstance(configs, list):
        return "bins and configs must be lists"
    if len(bins) != len(items):
        return f"{len(bins)} bin entries for {len(items)} items"
    m = len(configs)
    if any(not isinstance(c, int) or not 0 <= c < len(cfgs) for c in configs):
        return "a bin's config index is out of range"
    if any(not isinstance(b, int) or not 0 <= b < m for b in bins):
        return "an item's bin index is out of range"
    if problem["objective"] == "min_latency" and m > int(problem["gpus"]):
        return f"{m} bins used with a budget of {problem['gpus']}"
    load, count, rank = [0] * m, [0] * m, [-1] * m
    for it, b in zip(items, bins):
        load[b] += int(it["load"])
        count[b] += 1
        rank[b] = max(rank[b], int(it["rank_class"]))
    for g, c in enumerate(configs):
        cf = cfgs[c]
        if count[g] == 0:
            return f"bin {g} is empty (bins must be numbered 0..m-1, each used)"
        if count[g] > int(cf["max_count"]):
            return f"bin {g} holds {count[g]} items, config {c} allows {cf['max_count']}"
        if load[g] > int(cf["capacity"]):
            return f"bin {g} carries load {load[g]}, config {c} has capacity {cf['capacity']}"
        if rank[g] > int(cf["rank_class"]):
            return f"bin {g} holds rank class {rank[g]}, config {c} allows {cf['rank_class']}"
    return None


def placement_objective(problem: dict, bins: list[int], configs: list[int]) -> int:
    """The objective of a valid placement: its bin count, or its max per-mille utilisation."""
    if problem["objective"] == "min_gpus":
        return len(configs)
    load = [0] * len(configs)
    for it, b in zip(problem["items"], bins):
        load[b] += int(it["load"])
    return max((-(-PERMILLE * ld // int(problem["configs"][c]["capacity"])) for ld, c in zip(load, configs)),
               default=0)


def _normalised_warm_start(problem: dict) -> tuple[list[int], list[int]] | None:
    """The warm start with bins relabelled 0..m-1 in order of first use, or None if absent or invalid."""
    warm = problem.get("warm_start")
    if not warm:
        return None
    try:
        relabel: dict[int, int] = {}
        bins = [relabel.setdefault(int(b), len(relabel)) for b in warm["bins"]]
        configs = [0] * len(relabel)
        for old, new in relabel.items():
            configs[new] = int(warm["configs"][old])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (bins, configs) if check_placement(problem, bins, configs) is None else None


def _validate(problem: dict, backend: str) -> None:
    if backend not in BACKENDS:
        raise InputError("backend", f"{backend!r} is not one of {', '.join(BACKENDS)}")
    if problem.get("objective") not in _OBJECTIVES:
        raise InputError("objective", f"{problem.get('objective')!r} is not one of {', '.join(_OBJECTIVES)}")
    if problem["objective"] == "min_latency" and not isinstance(problem.get("gpus"), int):
        raise InputError("gpus", "min_latency needs the GPU budget as an integer")
    if problem["objective"] == "min_gpus" and not isinstance(problem.get("max_bins"), int):
        raise InputError("max_bins", "min_gpus needs an integer upper bound on the bins")
    for it in problem.get("items", []):
        if int(it["load"]) < 0 or int(it["rank_class"]) < 0:
            raise InputError("items", f"loads and rank classes must be >= 0, got {it}")
    for c in problem.get("configs", []):
        if int(c["max_count"]) < 1 or int(c["capacity"]) < 1:
            raise InputError("configs", f"max_count and capacity must be >= 1, got {c}")


def _result(status: str, placement: tuple[list[int], list[int]] | None, objective: float | None,
            bound: float | None, t0: float, message: str) -> dict:
    return {"status": status, "bins": placement[0] if placement else None,
            "configs": placement[1] if placement else None, "objective": objective, "bound": bound,
            "wall_seconds": time.monotonic() - t0, "message": message}


def solve_exact(problem: dict, backend: str) -> dict:
    """Solve the capacity-model ``problem`` with ``backend`` ("cpsat" or "milp") in a child process.

    Returns {"status", "bins", "configs", "objective", "bound", "wall_seconds", "message"}; status is
    "optimal", "feasible", "time_limit" (incumbent not proven optimal), "infeasible" (proven) or "error".
    On time-out or a failed/invalid answer the valid warm start (if any) is returned as the incumbent.
    """
    t0 = time.monotonic()
    _validate(problem, backend)
    items = problem.get("items", [])
    warm = _normalised_warm_start(problem)
    warm_obj = placement_objective(problem, *warm) if warm else None
    note = "" if warm or not problem.get("warm_start") else "; the warm start was invalid and is ignored"

    bad = unplaceable_items(problem)
    if bad:
        return _result("infeasible", None, None, None, t0, f"item {bad[0]} fits no config" + note)
    lb = lower_bounds(problem)["best"]
    if problem["objective"] == "min_gpus":
        bound = lb
        if warm and warm_obj == lb:
            return _result("optimal", warm, warm_obj, lb, t0, "warm start meets the lower bound; no solver run")
        if lb > int(problem["max_bins"]):
            return _result("infeasible", None, None, lb, t0,
                           f"at least {lb} bins are needed, max_bins is {problem['max_bins']}" + note)
    else:
        t_lb = latency_lower_bound(problem)
        if t_lb is None:
            return _result("infeasible", None, None, None, t0,
                           f"no placement on {problem['gpus']} GPUs (at least {lb} bins are needed)" + note)
        bound = t_lb
        if warm and warm_obj == t_lb:
            return _result("optimal", warm, warm_obj, t_lb, t0, "warm start meets the lower bound; no solver run")
    if not items:
        return _result("optimal", ([], []), 0, 0, t0, "no items")

    payload = dict(problem, warm_start={"bins": warm[0], "configs": warm[1]} if warm else None, lower_bound=lb)
    payload.setdefault("workers", os.cpu_count() or 1)
    time_limit = float(problem.get("time_limit_s") or DEFAULT_TIME_LIMIT_S)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])))
    try:
        proc = subprocess.run([sys.executable, "-m", "packer.solvers._exact_worker", backend],
                              input=json.dumps(payload), capture_output=True, text=True, env=env,
                              timeout=time_limit + GRACE_S)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child before raising
        return _result("time_limit", warm, warm_obj, bound, t0,
                       f"{backend} worker killed after {time_limit + GRACE_S:.0f}s; returning the warm start" + note)
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit code {proc.returncode}")
        answer = json.loads(proc.stdout)
    except ValueError as exc:
        tail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "(no stderr)"
        return _result("error", warm, warm_obj, bound, t0, f"{backend} worker failed ({exc}): {tail}" + note)
    return _checked(problem, backend, answer, warm, warm_obj, bound, t0, note)


def _checked(problem: dict, backend: str, answer: dict, warm: tuple[list[int], list[int]] | None,
             warm_obj: int | None, bound: int, t0: float, note: str) -> dict:
    """Turn the worker's answer into the result: verify the placement, recompute its objective, combine
    the bounds and fall back on the warm start where it is better or the answer is unusable."""
    status, msg = answer.get("status"), f"{backend}: {answer.get('message', '')}" + note
    if status == "infeasible":
        if warm:
            return _result("error", warm, warm_obj, bound, t0, f"{msg}; solver claims infeasible but the warm "
                           "start is a valid placement")
        return _result("infeasible", None, None, None, t0, msg)
    if status == "error":
        return _result("error", warm, warm_obj, bound, t0, msg)
    solver_bound = answer.get("bound")
    if isinstance(solver_bound, (int, float)) and math.isfinite(solver_bound):
        bound = max(bound, math.ceil(solver_bound - 1e-6))
    placement = None
    if answer.get("bins") is not None:
        placement = (answer["bins"], answer["configs"])
        issue = check_placement(problem, *placement)
        if issue:
            return _result("error", warm, warm_obj, bound if warm is None else min(bound, warm_obj), t0,
                           f"{msg}; rejected an invalid placement: {issue}")
    objective = placement_objective(problem, *placement) if placement else None
    if warm and (objective is None or warm_obj < objective):
        placement, objective = warm, warm_obj
        msg += "; the warm start is better than the solver's incumbent"
    if objective is None:
        return _result("time_limit" if status == "time_limit" else "error", None, None, bound, t0,
                       msg + "; no incumbent")
    if status == "optimal":
        bound = objective  # proven optimal; the recomputed objective can only match or beat the solver's
    elif bound > objective:
        msg += f"; bound {bound} above the verified objective {objective}, clamped"
        bound = objective
    if bound == objective:
        status = "optimal"
    return _result(status, placement, objective, bound, t0, msg)
