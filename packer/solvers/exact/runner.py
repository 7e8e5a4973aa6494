"""Runs an exact backend on a capacity-model problem (the JSON form of ``packer.solvers.exact``) in a child
process, within the time limit, and checks its answer.

ortools 9.15 and highspy 1.15 bundle different HiGHS libraries under one soname, so they cannot be loaded
in one process: this module imports neither (nor pyomo) and starts ``python -P -m
packer.solvers.exact.worker BACKEND`` per solve (the packer it runs is this one: its root leads the child's
``PYTHONPATH``), problem JSON on stdin, answer JSON on stdout. Every answer is checked here before it is
returned; a placement that breaks a rule is never passed on as feasible.

``time_limit_s`` bounds the whole call, not only the search: the child's start-up, imports (about 1 s
for ortools or pyomo), model build and answer come out of it, and a call returns within
``time_limit_s + GRACE_S`` (the stated margin): a child still running then is killed and the warm start
is the answer (status "time_limit").
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

from ...defaults import GRACE_S  # the stated margin (see solve_exact)
from ...errors import InputError
from ..bounds import PERMILLE, latency_lower_bound, lower_bounds, unplaceable_items
from .moves import check_origin, count_moves, current_of, weight
from .phases import WORKER_PHASES, read_marks

__all__ = ["BACKENDS", "DEFAULT_TIME_LIMIT_S", "solve_exact", "backend_available", "check_placement",
           "placement_objective"]

BACKENDS = ("cpsat", "milp")
_KILL_RESERVE_S = 0.2  # the child is killed this long before time_limit_s + GRACE_S: reaping it, the answer
DEFAULT_TIME_LIMIT_S = 60.0
_MODULES = {"cpsat": ("ortools",), "milp": ("pyomo", "highspy")}
_OBJECTIVES = ("min_gpus", "min_latency")
_WORKER = "packer.solvers.exact.worker"
_ROOT = Path(__file__).resolve().parents[3]  # the folder holding this packer: the child imports the same one


def backend_available(backend: str) -> bool:
    """Whether the backend's libraries are installed (looked up, not imported)."""
    return backend in _MODULES and all(importlib.util.find_spec(mod) is not None for mod in _MODULES[backend])


def check_placement(problem: dict, bins: list[int], configs: list[int], origin: list | None = None) -> str | None:
    """None when ``bins`` (bin per item) and ``configs`` (config per bin) are a valid placement with bins
    numbered 0..m-1, each used (and, re-planning, ``origin`` per bin: see ``moves``); otherwise a message
    naming the first broken rule."""
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
    seen: set[tuple[int, int]] = set()
    for it, b in zip(items, bins):
        if it.get("group") is not None:
            if (int(it["group"]), b) in seen:
                return f"bin {b} holds two items of group {it['group']}"
            seen.add((int(it["group"]), b))
    return check_origin(problem, bins, m, origin)


def placement_objective(problem: dict, bins: list[int], configs: list[int], origin: list | None = None) -> int:
    """The objective of a valid placement: its bin count (re-planning: ``weight`` x bins + moves), or its
    max per-mille utilisation."""
    if problem["objective"] == "min_gpus":
        if current_of(problem) is not None:
            return weight(problem) * len(configs) + count_moves(problem, bins, origin)
        return len(configs)
    load = [0] * len(configs)
    for it, b in zip(problem["items"], bins):
        load[b] += int(it["load"])
    return max((-(-PERMILLE * ld // int(problem["configs"][c]["capacity"])) for ld, c in zip(load, configs)),
               default=0)


def _normalised_warm_start(problem: dict) -> tuple[list[int], list[int], list | None] | None:
    """The warm start (bins, configs, origin) with bins relabelled 0..m-1 in order of first use, or None
    if absent or invalid."""
    warm = problem.get("warm_start")
    if not warm:
        return None
    try:
        relabel: dict[int, int] = {}
        bins = [relabel.setdefault(int(b), len(relabel)) for b in warm["bins"]]
        configs = [0] * len(relabel)
        origin = None if warm.get("origin") is None else [None] * len(relabel)
        for old, new in relabel.items():
            configs[new] = int(warm["configs"][old])
            if origin is not None:
                origin[new] = warm["origin"][old]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return (bins, configs, origin) if check_placement(problem, bins, configs, origin) is None else None


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


def _result(status: str, placement: tuple[list[int], list[int], list | None] | None, objective: float | None,
            bound: float | None, t0: float, message: str) -> dict:
    return {"status": status, "bins": placement[0] if placement else None,
            "configs": placement[1] if placement else None, "origin": placement[2] if placement and len(placement) > 2 else None,
            "objective": objective, "bound": bound, "wall_seconds": time.monotonic() - t0, "message": message}


def solve_exact(problem: dict, backend: str, started: float | None = None) -> dict:
    """Solve the capacity-model ``problem`` with ``backend`` ("cpsat" or "milp") in a child process.

    Returns {"status", "bins", "configs", "objective", "bound", "wall_seconds", "message", "phases",
    "lower_bounds"}; status is "optimal", "feasible", "time_limit" (incumbent not proven optimal),
    "infeasible" (proven) or "error". On time-out or a failed/invalid answer the valid warm start (if any)
    is returned as the incumbent.

    ``time_limit_s`` counts from ``started`` (``time.monotonic()``; default: now) and bounds the whole
    call: the child gets what is left of it and is killed just before ``time_limit_s + GRACE_S``. ``phases`` says
    where the time went, in seconds: ``bounds`` (checks and lower bounds here), then the child's
    ``worker_start`` (its imports), ``prepare``, ``import`` (the backend), ``model_build``, ``search`` and
    ``answer``, ``process`` (interpreter start and exit, pipes) and ``check`` (the answer checked here).
    A killed child's unreported time goes to the phase it was in (``killed_in``).
    """
    t0 = time.monotonic() if started is None else started
    phases: dict[str, float] = {}
    out = _solve_exact(problem, backend, t0, phases)
    out["phases"] = phases
    return out


def _solve_exact(problem: dict, backend: str, t0: float, phases: dict[str, float]) -> dict:
    t_call = time.monotonic()
    _validate(problem, backend)
    items = problem.get("items", [])
    warm = _normalised_warm_start(problem)
    warm_obj = placement_objective(problem, *warm) if warm else None
    note = "" if warm or not problem.get("warm_start") else "; the warm start was invalid and is ignored"

    def result(*args) -> dict:
        phases.setdefault("bounds", time.monotonic() - t_call)
        return _result(*args)

    bad = unplaceable_items(problem)
    if bad:
        return result("infeasible", None, None, None, t0, f"item {bad[0]} fits no config" + note)
    bounds = lower_bounds(problem)
    lb = bounds["best"]
    known = problem.get("known_lower_bound")  # proven elsewhere (the column-generation bound)
    if problem["objective"] == "min_gpus" and isinstance(known, int) and current_of(problem) is None:
        lb = max(lb, known)
    if problem["objective"] == "min_gpus":
        bound = lb * weight(problem)  # re-planning: lb GPUs and no move
        if warm and warm_obj == bound:
            return dict(result("optimal", warm, warm_obj, bound, t0, "warm start meets the lower bound; no solver run"),
                        lower_bounds=bounds)
        if lb > int(problem["max_bins"]):
            return dict(result("infeasible", None, None, lb, t0,
                               f"at least {lb} bins are needed, max_bins is {problem['max_bins']}" + note),
                        lower_bounds=bounds)
    else:
        t_lb = latency_lower_bound(problem)
        if t_lb is None:
            return result("infeasible", None, None, None, t0,
                          f"no placement on {problem['gpus']} GPUs (at least {lb} bins are needed)" + note)
        bound = t_lb
        if warm and warm_obj == t_lb:
            return result("optimal", warm, warm_obj, t_lb, t0, "warm start meets the lower bound; no solver run")
    if not items:
        return result("optimal", ([], [], [] if current_of(problem) else None), 0, 0, t0, "no items")

    time_limit = float(problem.get("time_limit_s") or DEFAULT_TIME_LIMIT_S)
    deadline = t0 + time_limit
    phases["bounds"] = time.monotonic() - t_call
    spawned = time.monotonic()
    if spawned >= deadline:
        return dict(_result("time_limit", warm, warm_obj, bound, t0, f"{backend}: the time limit was spent before "
                            "the solver could start; returning the warm start" + note), lower_bounds=bounds)
    payload = dict(problem, warm_start={"bins": warm[0], "configs": warm[1], "origin": warm[2]} if warm else None,
                   lower_bound=lb,
                   time_limit_s=deadline - spawned, deadline=deadline)
    payload.setdefault("workers", os.cpu_count() or 1)
    # -P: the working directory must not shadow other modules; the child finds this packer at _ROOT.
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=str(_ROOT) + (os.pathsep + path if path else ""))
    proc = subprocess.Popen([sys.executable, "-P", "-m", _WORKER, backend], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = False
    try:
        stdout, stderr = proc.communicate(json.dumps(payload),
                                          timeout=max(0.0, deadline + GRACE_S - _KILL_RESERVE_S - spawned))
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        killed = True
    worker_wall = time.monotonic() - spawned
    marks, stderr = read_marks(stderr)
    phases.update(marks)
    reported = [k for k, name in enumerate(WORKER_PHASES) if name in marks]
    in_progress = (WORKER_PHASES + ("process",))[max(reported) + 1 if reported else 0]
    rest = max(0.0, worker_wall - sum(marks.values()))
    t_check = time.monotonic()
    if killed:
        phases[in_progress] = phases.get(in_progress, 0.0) + rest
        out = _result("time_limit", warm, warm_obj, bound, t0, f"{backend} worker killed during {in_progress} near "
                      f"the time limit + {GRACE_S:g}s ({time.monotonic() - t0:.2f}s); returning the warm start" + note)
        return dict(out, killed_in=in_progress, lower_bounds=bounds)
    phases["process"] = rest
    try:
        if proc.returncode != 0:
            raise ValueError(f"exit code {proc.returncode}")
        answer = json.loads(stdout)
    except ValueError as exc:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "(no stderr)"
        out = _result("error", warm, warm_obj, bound, t0, f"{backend} worker failed ({exc}): {tail}" + note)
    else:
        out = _checked(problem, backend, answer, warm, warm_obj, bound, t0, note)
    phases["check"] = time.monotonic() - t_check
    out["wall_seconds"] = time.monotonic() - t0
    return dict(out, lower_bounds=bounds)


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
        placement = (answer["bins"], answer["configs"], answer.get("origin"))
        issue = check_placement(problem, *placement)
        if issue:
            return _result("error", warm, warm_obj, bound if warm is None else min(bound, warm_obj), t0,
                           f"{msg}; rejected an invalid placement: {issue}")
    objective = placement_objective(problem, *placement) if placement else None
    if warm and (objective is None or warm_obj < objective):
        msg += ("; no incumbent, returning the warm start" if objective is None
                else "; the warm start is better than the solver's incumbent")
        placement, objective = warm, warm_obj
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
