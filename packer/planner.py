"""``packer.solve``: how many GPUs, which adapters where, and which vLLM flags on each.

1. Validate the workload; split adapters too hot for one GPU into equal replicas.
2. Build (or load from the cache) the capacity model from the predictor (``packer.capacity``).
3. Run the solver on the capacity model.
4. Confirm every GPU with the predictor and, unless ``verify=False``, with the twin; a GPU that
   fails sheds its lightest adapters until it passes, and the shed adapters are re-placed (on GPUs
   with room, or on new ones). The result says how many items moved and whether all GPUs verified.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

from .errors import InputError
from .model import PlacementWorkload, check_placement_load, parse_model
from .predictors.base import GpuQuery, Prediction, Predictor, get_predictor
from .predictors.slo import SloPredictor, check_slo, missing_metrics, predicted_field
from .predictors.twin import TwinPredictor
from .profile import load_profile
from .solvers import bounds as _bounds
from .solvers import colgen as _colgen
from .solvers.base import (Assignment, Objective, PlacementProblem, SolveStatus, bin_config, get_solver,
                           make_items, utilisation)
from .capacity import build_capacity_model
from .model import rank_class
from .solvers.replan import items_with_plan_splits as _plan_items
from .solvers.replan import replan as _replan_bins
from .solvers.replan import replan_exact as _replan_exact
from .solvers.split import split_lower_bound
from .solvers.result import AdapterShare, GpuPlan, LoadedPlan, Move, ReplanSummary, SolveResult, read_plan

__all__ = ["solve", "parse_workload", "build_problem"]

MAX_REPAIR_ROUNDS = 8


def parse_workload(data: PlacementWorkload | Mapping[str, Any]) -> PlacementWorkload:
    """A validated ``PlacementWorkload`` (errors name the field); checks the profile exists."""
    wl = data if isinstance(data, PlacementWorkload) else parse_model(PlacementWorkload, data)
    check_placement_load(wl, load_profile(wl.profile))
    return wl


def build_problem(workload: PlacementWorkload, predictor: Predictor, *, objective: Objective, gpus: int | None,
                  time_limit_s: float, seed: int, workers: int | None = None, cache: bool = True,
                  progress: Callable[[str], None] | None = None, executor: Any = None,
                  ray_address: str | None = None) -> PlacementProblem:
    """The capacity model and items (hot adapters replicated) for a workload."""
    tokens = workload.lengths.input_mean + workload.lengths.output_mean
    loads = [a.rate * tokens for a in workload.adapters]
    positive = [x for x in loads if x > 0]
    base = workload.server
    capacity = build_capacity_model(predictor, workload.profile, workload.lengths, workload.arrivals, base,
                                    [a.rank for a in workload.adapters], len(workload.adapters),
                                    min_load_tps=min(positive) if len(positive) == len(loads) else 0.0,
                                    workers=workers, cache=cache, progress=progress, executor=executor,
                                    ray_address=ray_address)
    items = make_items(((a.id, a.rank, a.rate) for a in workload.adapters), capacity)
    return PlacementProblem(items, capacity, predictor, objective, gpus, time_limit_s, seed, workers)


def solve(workload: PlacementWorkload | Mapping[str, Any], *, solver: Any = "greedy", predictor: Any = "twin",
          objective: str | None = None, gpus: int | None = None, time_limit: float = 60.0, seed: int = 0,
          verify: bool = True, workers: int | None = None, cache: bool = True,
          progress: Callable[[str], None] | None = None, executor: Any = None,
          ray_address: str | None = None, verify_with: Any = "twin", current: Any = None,
          max_moves: int | None = None) -> SolveResult:
    """Place ``workload``'s adapters on GPUs; see ``SolveResult``.

    ``solver`` and ``predictor`` are registered names or objects; ``objective`` and ``gpus``
    override the workload's. ``time_limit`` (seconds) bounds the solver phase, start-up and model
    building included: the exact solvers return within ``time_limit`` + ``GRACE_S`` (0.5 s), with
    greedy's placement if they find nothing better; ladder stops before a predictor call that would
    end past it. Measuring the capacity model and verification are not part of it.

    ``executor`` (``"process"`` by default, ``"serial"``, ``"ray"`` at ``ray_address``, or any
    ``concurrent.futures.Executor``; see ``packer.executor``) runs the capacity measurement and the
    twin verification; ``workers`` bounds its processes. Every executor gives the same answer.

    ``verify_with`` is the predictor that verifies (and repairs) each GPU: ``"twin"`` by default, or
    ``"vllm"`` (a ``VllmPredictor``, or any predictor object) to check the plan on real GPUs.

    ``current`` (a ``LoadedPlan``, or the path of a plan ``read_plan`` reads) re-plans a deployed plan
    for this workload with few moves (``packer.solvers.replan``): adapters stay where their GPU still
    keeps up; the result's ``replan`` lists the moves and the servers added and removed. With
    ``max_moves``, no more than that many adapters move: overloaded GPUs split adapters onto new
    servers instead.
    """
    t0 = time.perf_counter()
    wl = parse_workload(workload)
    obj = _objective(objective if objective is not None else wl.objective)
    plan = _current_plan(current, max_moves, wl, obj, solver)
    budget = gpus if gpus is not None else wl.gpus
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool) or budget < 1):
        raise InputError("gpus", f"the GPU budget must be a positive integer (got {budget!r})")
    if not (isinstance(time_limit, (int, float)) and math.isfinite(time_limit) and time_limit > 0):
        raise InputError("time_limit", f"must be a positive number of seconds (got {time_limit!r})")
    slv = get_solver(solver)
    pred = get_predictor(predictor)
    # verification runs one twin per GPU, in parallel processes (workers=None: every core), or what the
    # user verifies with (live vLLM)
    if verify and not (verify_with == "twin" or isinstance(verify_with, TwinPredictor)):
        twin = get_predictor(verify_with)
    elif isinstance(pred, TwinPredictor):  # the predictor's own check is the twin's
        twin = pred
    elif verify:
        twin = verify_with if isinstance(verify_with, TwinPredictor) else TwinPredictor(
            seed=seed, workers=workers, executor=executor, ray_address=ray_address)
    else:
        twin = None
    metric = wl.latency_metric if obj is Objective.MIN_LATENCY else "utilisation"
    if metric != "utilisation" and twin is None:  # the metric is the twin's: measuring it verifies too
        twin = pred if isinstance(pred, TwinPredictor) else TwinPredictor(
            seed=seed, workers=workers, executor=executor, ray_address=ray_address)
    slo_note = None
    if wl.slo is not None:
        pred, twin, slo_note = _with_slo(wl, pred, twin, seed, workers, executor, ray_address)
        if slo_note and progress:
            progress(slo_note)

    problem = build_problem(wl, pred, objective=Objective.MIN_GPUS, gpus=None, time_limit_s=float(time_limit),
                            seed=seed, workers=workers, cache=cache, progress=progress, executor=executor,
                            ray_address=ray_address)
    t_cap = time.perf_counter()
    phases: dict[str, float] = {}
    if obj is Objective.MIN_LATENCY and budget is None:
        budget = get_solver("greedy").solve(problem).num_gpus  # the fewest GPUs greedy needs
        phases["gpu_budget"] = time.perf_counter() - t_cap
    problem = PlacementProblem(problem.items, problem.capacity, pred, obj, budget if obj is Objective.MIN_LATENCY
                               else None, float(time_limit), seed, workers)
    tags: list | None = None
    home: tuple[int | None, ...] | None = None
    split_bound: int | None = None
    if progress:
        progress(f"placing {len(problem.items)} items with the {slv.name if plan is None else 'replan'} solver")
    if plan is None:
        assignment = slv.solve(problem)
        if slv.chooses_splits and any(it.share < 1.0 for it in problem.items):
            split_bound = split_lower_bound(problem)
        problem = assignment.placed_problem(problem)  # the solver's own replica splits (greedy-split)
    else:
        problem, assignment, tags, home = _replan(problem, plan, max_moves, slv.name)
    t_solve = time.perf_counter()
    phases.update(assignment.details.get("phases", {}))

    if assignment.status is SolveStatus.INFEASIBLE:
        lb = _min_gpus_bound(problem)
        return SolveResult(status=SolveStatus.INFEASIBLE, objective=obj, num_gpus=0, objective_value=None,
                           lower_bound=assignment.lower_bound, gap=None, solver=slv.name, predictor=pred.name,
                           verified=False, gpus=(), wall_seconds=time.perf_counter() - t0,
                           capacity_seconds=t_cap - t0, solver_seconds=t_solve - t_cap, verify_seconds=0.0,
                           repaired_items=0, gpu_budget=budget, short_by=max(0, lb - budget) if budget else None,
                           message=assignment.message or f"needs at least {lb} GPUs on the capacity model",
                           phases=phases, seed=seed, solver_stats=_solver_stats(assignment), profile=wl.profile,
                           capacity_curve=_capacity_curve(problem))

    bins = [list(b) for b in assignment.bins]
    configs = {tuple(b): c for b, c in zip(assignment.bins, assignment.configs)}
    checkers = [pred] + ([twin] if twin is not None and twin is not pred else [])
    moved = 0
    final_preds: list[Prediction] = []
    for checker in checkers:
        if progress:
            progress(f"{'verifying' if checker is twin else 'checking'} {len(bins)} GPU{'s' if len(bins) > 1 else ''} "
                     f"with the {checker.name} predictor")
        bins, n_moved, final_preds = _confirm_and_repair(problem, bins, configs, checker, budget, obj, tags, home)
        moved += n_moved
    if metric != "utilisation" and bins:
        if progress:
            progress(f"lowering the worst GPU's {metric} by moving adapters, measured by the twin")
        t_search = time.perf_counter()
        bins, final_preds, rounds = _lower_worst_latency(problem, bins, configs, twin, metric, float(time_limit))
        phases["latency_search"] = time.perf_counter() - t_search
        assignment = dataclasses.replace(assignment, details={**assignment.details, "latency_search_moves": rounds})
    twin_preds = final_preds if twin is not None else None
    pred_preds = final_preds if twin is None or twin is pred else [pred.predict(_query(problem, b, configs)) for b in bins]
    t_verify = time.perf_counter()

    plans = tuple(_plan(problem, b, configs, p, tp) for b, p, tp in
                  zip(bins, pred_preds, twin_preds if twin_preds is not None else [None] * len(bins)))
    verified = twin_preds is not None and all(p.ok for p in twin_preds)
    result = _result(problem, assignment, obj, slv.name if plan is None or slv.name in ("cpsat", "milp") else "replan",
                     pred.name, plans, verified,
                     moved, budget, t0, t_cap, t_solve, t_verify, phases, split_bound)
    if metric != "utilisation":  # the value is the twin's latency; the capacity model's bound is not on it
        worst = max((_latency(p, metric) for p in twin_preds), default=0.0)
        result = dataclasses.replace(result, objective_value=worst, lower_bound=None, gap=None,
                                     status=SolveStatus.FEASIBLE if result.status is SolveStatus.OPTIMAL
                                     else result.status)
    result = dataclasses.replace(result, objective_metric="gpus" if obj is Objective.MIN_GPUS else metric)
    if plan is not None:
        summary = _replan_summary(problem, plan, wl, bins, tags, home, max_moves, assignment)
        result = dataclasses.replace(result, replan=summary, message=_replan_message(summary, result.message))
        lb_moves = summary.moves_lower_bound
        if result.status is SolveStatus.OPTIMAL and lb_moves is not None and len(summary.moves) > lb_moves:
            # fewest GPUs proven, fewest moves not: the exact re-plan's own status says which
            status = assignment.status if assignment.status is not SolveStatus.OPTIMAL else SolveStatus.FEASIBLE
            result = dataclasses.replace(result, status=status)
    return dataclasses.replace(result, verified_with=twin.name if twin is not None else None, slo=wl.slo,
                               warnings=result.warnings + _warnings(pred.name, pred_preds, twin_preds,
                                                                    twin.name if twin is not None else "twin")
                               + ((slo_note,) if slo_note else ()))


def _with_slo(wl: PlacementWorkload, pred: Predictor, twin: Predictor | None, seed: int, workers: int | None,
              executor: Any, ray_address: str | None) -> tuple[Predictor, Predictor | None, str | None]:
    """The planning predictor and the verifier, both checking the workload's SLO. A planning predictor
    that does not predict a metric the SLO sets is replaced by the twin (and the note says so)."""
    note = None
    if not isinstance(pred, TwinPredictor):
        a = min(wl.adapters, key=lambda a: a.rank)
        probe = GpuQuery(load_profile(wl.profile), wl.server.server(1, rank_class(a.rank)), (a.rank,),
                         (max(a.rate, 1e-3),), wl.lengths, wl.arrivals)
        missing = missing_metrics(wl.slo, pred.predict(probe))
        if missing:
            base = twin if isinstance(twin, TwinPredictor) else TwinPredictor(
                seed=seed, workers=workers, executor=executor, ray_address=ray_address)
            why = pred.withheld(wl.profile)
            reasons = "".join(f" ({m}: {why[predicted_field(wl.slo, m)]})" for m in missing
                              if predicted_field(wl.slo, m) in why)
            note = (f"the {pred.name} predictor does not predict {', '.join(missing)}{reasons}: the capacity model "
                    f"for the SLO is measured with the twin")
            same = twin is pred
            pred = base
            if same:
                twin = base
    wrapped = SloPredictor(pred, wl.slo)
    return wrapped, (wrapped if twin is pred else (SloPredictor(twin, wl.slo) if twin is not None else None)), note


def _warnings(predictor: str, preds: Sequence[Prediction], twin_preds: Sequence[Prediction] | None,
              verifier: str = "twin") -> tuple[str, ...]:
    """What a user must know before deploying: an unverified plan, GPUs that fail the twin, and every
    predictor warning (an extrapolating tree), each naming the GPUs it concerns."""
    out: list[str] = []
    if twin_preds is None:
        out.append(f"not verified: every GPU was checked by the {predictor} predictor only; solve without "
                   "--no-verify (verify=True) to check each GPU with the twin before deploying")
    else:
        failing = [g for g, p in enumerate(twin_preds) if not p.ok]
        if failing:
            out.append(f"GPU{'s' if len(failing) > 1 else ''} {_gpu_list(failing)} failed the {verifier}'s verification "
                       "(starved or out of memory) and could not be repaired; do not deploy this plan as it is")
    by_message: dict[str, list[int]] = {}
    for g, p in enumerate(preds):
        for w in p.warnings:
            by_message.setdefault(w, []).append(g)
    out += [f"{predictor} predictor, GPU{'s' if len(gs) > 1 else ''} {_gpu_list(gs)}: {w}" for w, gs in by_message.items()]
    return tuple(out)


def _gpu_list(gpus: Sequence[int], shown: int = 8) -> str:
    head = ", ".join(str(g) for g in gpus[:shown])
    return head + (f" and {len(gpus) - shown} more" if len(gpus) > shown else "")


# ---- re-planning ---------------------------------------------------------------------------------

_REPLAN_SOLVERS = ("greedy", "replan", "cpsat", "milp")


def _current_plan(current: Any, max_moves: Any, wl: PlacementWorkload, obj: Objective, solver: Any) -> LoadedPlan | None:
    """The deployed plan to re-plan from (None: a fresh solve), checked against the workload."""
    if current is None:
        if max_moves is not None:
            raise InputError("max_moves", "goes with a current plan (--current PLAN.json) to re-plan from")
        return None
    if max_moves is not None and (isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < 0):
        raise InputError("max_moves", f"expected an integer >= 0 (adapters that may move), got {max_moves!r}")
    plan = current if isinstance(current, LoadedPlan) else read_plan(current)
    if plan.profile is not None and plan.profile != wl.profile:
        raise InputError("current", f"{plan.path}: the plan is for profile {plan.profile!r} but the workload is for "
                         f"{wl.profile!r}; re-plan from a plan made for {wl.profile!r}, or solve afresh")
    if obj is not Objective.MIN_GPUS:
        raise InputError("objective", f"re-planning minimises moves, then GPUs; objective {obj.value!r} does not go "
                         "with a current plan (drop --objective min_latency or --current)")
    if solver not in _REPLAN_SOLVERS:
        raise InputError("solver", f"re-planning runs the incremental greedy (greedy) or an exact solver "
                         f"({', '.join(s for s in _REPLAN_SOLVERS if s not in ('greedy', 'replan'))}); solver "
                         f"{solver!r} does not go with a current plan")
    ranks = {a.id: a.rank for a in wl.adapters}
    for g, gpu in enumerate(plan.gpus):
        for j, a in enumerate(gpu.adapters):
            if a.id in ranks and ranks[a.id] != a.rank:
                raise InputError("current", f"{plan.path}: gpus[{g}].adapters[{j}].rank: adapter {a.id!r} has rank "
                                 f"{a.rank} in the plan but {ranks[a.id]} in the workload; a new rank is a new "
                                 "adapter: give it a new id, or solve afresh")
    return plan


def _replan(problem: PlacementProblem, plan: LoadedPlan, max_moves: int | None,
            solver: str = "greedy") -> tuple[PlacementProblem, Assignment, list, tuple[int | None, ...]]:
    """Map the plan onto the problem's items (``replan.items_with_plan_splits``: an adapter the plan splits
    keeps the plan's shares; otherwise its replicas go onto its current GPUs, in order, extra replicas
    are new), re-plan (greedy; then exactly with ``solver`` "cpsat" or "milp"), and drop
    the GPUs left empty."""
    items, home = _plan_items(problem, plan.placement())
    problem = dataclasses.replace(problem, items=items)
    t, started = time.perf_counter(), time.monotonic()
    r = _replan_bins(problem, home, len(plan.gpus), max_moves)
    phases = {"replan": time.perf_counter() - t}
    status, lower_bound, message, details = SolveStatus.FEASIBLE, None, "", {}
    if solver in ("cpsat", "milp"):
        x = _replan_exact(problem, home, len(plan.gpus), max_moves, solver, r, started=started)
        r, status, message = x.replan, x.status, x.message
        lower_bound = float(x.gpus_lower_bound) if x.exact else None
        phases["warm_start"] = phases.pop("replan")
        phases.update(x.details.get("phases", {}))
        details = {"backend": solver, "exact": x.exact, "moves_lower_bound": x.moves_lower_bound if x.exact else None,
                   "solver_wall_seconds": x.details.get("solver_wall_seconds"), "message": x.details.get("message")}
    problem = dataclasses.replace(problem, items=r.items)
    keep = [g for g, b in enumerate(r.bins) if b]
    bins = tuple(r.bins[g] for g in keep)
    tags = [g if g < r.n_current else None for g in keep]
    configs = tuple(bin_config(problem, b) for b in bins)
    details.update({"phases": phases, "shed_items": r.moved, "split": list(r.split)})
    return problem, Assignment(bins, configs, status, lower_bound=lower_bound, objective_value=float(len(bins)),
                               message=message, details=details), tags, r.home


def _replan_summary(problem: PlacementProblem, plan: LoadedPlan, wl: PlacementWorkload, bins: list[list[int]],
                    tags: list, home: Sequence[int | None], max_moves: int | None, a: Assignment) -> ReplanSummary:
    moves: list[Move] = []
    for g, members in enumerate(bins):
        for i in members:
            if home[i] is not None and home[i] != tags[g]:
                moves.append(Move(problem.items[i].adapter_id, home[i], g))
    moves.sort(key=lambda m: (m.from_gpu, m.to_gpu, m.adapter))
    new_ids = {a.id for a in wl.adapters}
    old_ids = {a.id for gpu in plan.gpus for a in gpu.adapters}
    return ReplanSummary(
        current_plan=plan.path, moves=tuple(moves), gpu_origin=tuple(tags),
        servers_added=tuple(g for g, t in enumerate(tags) if t is None),
        servers_removed=tuple(g for g in range(len(plan.gpus)) if g not in set(tags)),
        adapters_added=tuple(sorted(new_ids - old_ids)), adapters_removed=tuple(sorted(old_ids - new_ids)),
        split=tuple(a.details.get("split", ())), max_moves=max_moves,
        moves_lower_bound=a.details.get("moves_lower_bound"))


def _replan_message(s: ReplanSummary, message: str) -> str:
    parts = [f"re-planned from {s.current_plan}: {len(s.moves)} move{'s' if len(s.moves) != 1 else ''}, "
             f"{len(s.servers_added)} server{'s' if len(s.servers_added) != 1 else ''} added, "
             f"{len(s.servers_removed)} removed"]
    if s.split:
        parts.append(f"max-moves {s.max_moves} reached: {len(s.split)} adapter part(s) split onto other servers "
                     f"instead of moving more ({', '.join(sorted(set(s.split))[:5])})")
    if s.max_moves is not None and len(s.moves) > s.max_moves:
        parts.append(f"verification and repair moved more than max-moves {s.max_moves} ({len(s.moves)} moves)")
    return "; ".join(parts + ([message] if message else []))


# ---- confirmation and repair --------------------------------------------------------------------

def _confirm_and_repair(problem: PlacementProblem, bins: list[list[int]], configs: dict, checker: Predictor,
                        budget: int | None, obj: Objective, tags: list | None = None,
                        home: Sequence[int | None] | None = None) -> tuple[list[list[int]], int, list[Prediction]]:
    """Check every GPU with ``checker``; shed items from failing GPUs and re-place them until all pass.

    Re-planning passes ``tags`` (each GPU's index in the current plan, or None; kept in step with
    ``bins``) and ``home`` (each item's current GPU): a failing GPU sheds the items that are not at
    home there before those that are."""
    moved = 0
    preds = checker.predict_many([_query(problem, b, configs) for b in bins])
    for _ in range(MAX_REPAIR_ROUNDS):
        failing = [g for g, p in enumerate(preds) if not p.ok]
        if not failing:
            break
        shed: list[int] = []
        for g in failing:
            settled = (set() if tags is None or home is None or tags[g] is None
                       else {i for i in bins[g] if home[i] == tags[g]})
            bins[g], out, preds[g] = _shed_until_ok(problem, bins[g], configs, checker, settled)
            shed += out
        moved += len(shed)
        if not shed:
            break  # single items that fail alone: nothing left to move, the result says so
        # A GPU that just shed load is at its limit: it takes none back this round. A GPU that rejects
        # an item is not offered items as large again (each offer costs a checker call).
        refused = {g: 0 for g in failing}
        for i in sorted(shed, key=lambda i: -problem.items[i].units):
            if not _place_into_existing(problem, bins, preds, i, configs, checker, budget, obj, refused):
                bins.append([i])
                preds.append(checker.predict(_query(problem, bins[-1], configs)))
                if tags is not None:
                    tags.append(None)
        keep = [g for g, b in enumerate(bins) if b]
        bins, preds = [bins[g] for g in keep], [preds[g] for g in keep]
        if tags is not None:
            tags[:] = [tags[g] for g in keep]
    return bins, moved, preds


def _shed_until_ok(problem: PlacementProblem, members: list[int], configs: dict, checker: Predictor,
                   settled: set[int] = frozenset()) -> tuple[list[int], list[int], Prediction]:
    """Remove the lightest items (those not ``settled`` first), a growing fraction of the load at a
    time, until the GPU passes."""
    order = sorted(members, key=lambda i: (i in settled, problem.items[i].units, i))
    total = sum(problem.items[i].units for i in members)
    for step in range(1, 40):
        target = total * (1 - 0.03 * step)
        keep, removed, load = list(order), [], total
        while len(keep) > 1 and (load > target or not removed):
            i = keep.pop(0)
            removed.append(i)
            load -= problem.items[i].units
        kept = [i for i in members if i in set(keep)]
        p = checker.predict(_query(problem, kept, configs))
        if p.ok or len(kept) == 1:
            return kept, removed, p
    return kept, removed, p  # pragma: no cover - 40 steps remove everything but one item


def _place_into_existing(problem: PlacementProblem, bins: list[list[int]], preds: list[Prediction], i: int,
                         configs: dict, checker: Predictor, budget: int | None, obj: Objective,
                         refused: dict[int, int]) -> bool:
    """Put item ``i`` on an existing GPU that stays within the capacity model and passes ``checker``.

    ``refused`` maps a GPU to the smallest item size (units) it has refused: it is not offered an item
    as large again; a GPU that refuses ``i`` is recorded there."""
    it = problem.items[i]
    order = range(len(bins))
    if obj is Objective.MIN_LATENCY:
        order = sorted(order, key=lambda g: utilisation(problem, bins[g] + [i]))
    for g in order:
        if g in refused and it.units >= refused[g]:
            continue
        cand = bins[g] + [i]
        if any(problem.items[j].adapter_id == it.adapter_id for j in bins[g]):
            continue
        if problem.fits(max(problem.items[j].rank for j in cand), len(cand),
                        sum(problem.items[j].units for j in cand)) is None:
            continue
        p = checker.predict(_query(problem, cand, configs))
        if p.ok:
            bins[g], preds[g] = cand, p
            return True
        refused[g] = it.units
    return False


def _flags(problem: PlacementProblem, members: Sequence[int], configs: dict) -> tuple[int, int, int]:
    """max_loras, max_cpu_loras, max_lora_rank for a GPU holding ``members``."""
    R = rank_class(max(problem.items[i].rank for i in members))
    n = len({problem.items[i].adapter_id for i in members})
    solver_cfg = configs.get(tuple(members))
    cfg = solver_cfg if solver_cfg is not None and solver_cfg.max_lora_rank >= R else problem.config_for(R, len(members))
    a = cfg.max_loras if cfg is not None else n
    a = max(1, min(a, n))
    return a, max(a, n), R


def _query(problem: PlacementProblem, members: Sequence[int], configs: dict) -> GpuQuery:
    a, cpu, R = _flags(problem, members, configs)
    cm = problem.capacity
    its = [problem.items[i] for i in members]
    return GpuQuery(cm.profile, cm.base.server(a, R, cpu), tuple(it.rank for it in its),
                    tuple(it.rate for it in its), cm.lengths, cm.arrivals)


# ---- min_latency on the twin's latency -----------------------------------------------------------

def _latency(p: Prediction, metric: str) -> float:
    """A GPU's ``metric`` (ms) as the twin predicts it; infinite where it fails or nothing finished."""
    v = p.p99_ttft_ms if metric == "ttft_p99_ms" else p.mean_itl_ms
    return float(v) if p.ok and v is not None and math.isfinite(v) else math.inf


def _lower_worst_latency(problem: PlacementProblem, bins: list[list[int]], configs: dict, twin: Predictor,
                         metric: str, time_limit_s: float, per_round: int = 8,
                         ) -> tuple[list[list[int]], list[Prediction], int]:
    """Local search on the verified placement: move one adapter off the GPU with the worst ``metric``
    onto another GPU (within the capacity model, replicas apart) while that lowers the GPUs' values
    sorted worst first, compared in steps of 1 % (so GPUs tied at the worst value are brought down one
    by one); each round measures its candidate moves with the twin in one batch. Stops at no
    improvement or after ``time_limit_s``. Returns the bins, their predictions and the moves made."""

    def key(values: Sequence[float]) -> tuple:
        return tuple(sorted((math.inf if not math.isfinite(v) else math.floor(math.log(max(v, 1e-9)) / math.log(1.01))
                             for v in values), reverse=True))

    t0 = time.perf_counter()
    bins = [list(b) for b in bins]
    preds = twin.predict_many([_query(problem, b, configs) for b in bins])
    moves = 0
    while len(bins) > 1 and time.perf_counter() - t0 < time_limit_s:
        vals = [_latency(p, metric) for p in preds]
        g = max(range(len(bins)), key=lambda k: vals[k])
        if len(bins[g]) < 2:
            break
        cands = []
        for i in sorted(bins[g], key=lambda j: -problem.items[j].units)[:per_round]:
            aid = problem.items[i].adapter_id
            for h in sorted(range(len(bins)), key=lambda k: vals[k]):
                if h == g or any(problem.items[j].adapter_id == aid for j in bins[h]):
                    continue
                if bin_config(problem, bins[h] + [i]) is not None:
                    cands.append((i, h))
                    break  # the least loaded GPU that takes it
        if not cands:
            break
        queries = []
        for i, h in cands:
            queries += [_query(problem, [j for j in bins[g] if j != i], configs), _query(problem, bins[h] + [i], configs)]
        answers = twin.predict_many(queries)
        best = None
        for k, (i, h) in enumerate(cands):
            pg, ph = answers[2 * k], answers[2 * k + 1]
            new = list(vals)
            new[g], new[h] = _latency(pg, metric), _latency(ph, metric)
            if best is None or key(new) < best[0]:
                best = (key(new), i, h, pg, ph)
        if best is None or not best[0] < key(vals):
            break
        _, i, h, pg, ph = best
        bins[g].remove(i)
        bins[h].append(i)
        preds[g], preds[h] = pg, ph
        moves += 1
    return bins, preds, moves


# ---- result -------------------------------------------------------------------------------------

def _plan(problem: PlacementProblem, members: list[int], configs: dict, p: Prediction,
          twin_p: Prediction | None) -> GpuPlan:
    a, cpu, R = _flags(problem, members, configs)
    shares: dict[str, AdapterShare] = {}
    for i in members:
        it = problem.items[i]
        prev = shares.get(it.adapter_id)
        shares[it.adapter_id] = AdapterShare(it.adapter_id, it.rank, it.rate + (prev.rate if prev else 0.0),
                                             it.share + (prev.share if prev else 0.0))
    offered = sum(problem.items[i].load_tps for i in members)
    cap = problem.capacity.capacity(R, len(members))
    slo = getattr(problem.predictor, "slo", None)
    return GpuPlan(tuple(shares.values()), a, cpu, R, offered, cap, offered / cap if cap > 0 else math.inf,
                   p.throughput_tps, p.mean_itl_ms, p.starved, p.memory_error,
                   None if twin_p is None else twin_p.ok,
                   slo=() if slo is None else check_slo(slo, twin_p if twin_p is not None else p),
                   predicted_ttft_p99_ms=_finite_or_none((twin_p or p).p99_ttft_ms))


def _finite_or_none(x: float | None) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _min_gpus_bound(problem: PlacementProblem) -> int:
    return int(_bounds.lower_bounds({**problem.to_plain(), "objective": "min_gpus"})["best"])


def _result(problem: PlacementProblem, a: Assignment, obj: Objective, solver: str, predictor: str,
            plans: tuple[GpuPlan, ...], verified: bool, moved: int, budget: int | None,
            t0: float, t_cap: float, t_solve: float, t_verify: float, phases: dict[str, float],
            split_bound: int | None = None) -> SolveResult:
    n = len(plans)
    method: str | None = None
    if obj is Objective.MIN_GPUS:
        if split_bound is not None:  # the solver chose its splits: a bound on its items holds for no other split
            lb, method, cg = split_bound, "split_combinatorial", None
        else:
            lb, method, cg = _gpus_bound(problem, a, solver, n)
        if cg is not None:  # computed here, for a solver that computes none (its time: cg["seconds"])
            a = dataclasses.replace(a, details={**a.details, "colgen": cg})
        value: float | None = float(n)
        gap = (n - lb) / n if n else 0.0
        status = a.status
        if n == lb:
            status = SolveStatus.OPTIMAL
        elif status is SolveStatus.OPTIMAL:
            status = SolveStatus.FEASIBLE  # repairs added GPUs beyond the proven optimum
    else:
        value = max((p.utilisation for p in plans), default=0.0)
        lb = a.lower_bound
        method = None if lb is None else a.details.get("bound_method") or solver
        gap = (value - lb) / value if lb is not None and value else None
        status = a.status if moved == 0 else (SolveStatus.FEASIBLE if a.status is SolveStatus.OPTIMAL else a.status)
    short = max(0, n - budget) if budget is not None else None
    msg = a.message
    if short:
        msg = (msg + "; " if msg else "") + f"needs {n} GPUs, {short} more than the budget of {budget}"
    if budget is not None and short:
        status = SolveStatus.INFEASIBLE
    return SolveResult(status=status, objective=obj, num_gpus=n, objective_value=value, lower_bound=lb, gap=gap,
                       solver=solver, predictor=predictor, verified=verified, gpus=plans,
                       wall_seconds=time.perf_counter() - t0, capacity_seconds=t_cap - t0,
                       solver_seconds=t_solve - t_cap, verify_seconds=t_verify - t_solve, repaired_items=moved,
                       gpu_budget=budget, short_by=short if budget is not None else None, message=msg,
                       phases=phases, seed=problem.seed, solver_stats=_solver_stats(a),
                       profile=problem.capacity.profile.name, capacity_curve=_capacity_curve(problem),
                       bound_method=method)


def _gpus_bound(problem: PlacementProblem, a: Assignment, solver: str, n: int) -> tuple[int, str, dict | None]:
    """The best lower bound on GPUs known, the method that proved it (``colgen.best_bound``) and, when it
    ran here, the column-generation summary. Solvers that computed the column-generation bound say so in
    ``details["bounds"]``; for the others it runs here, for at most ``PLANNER_BOUND_S`` (or the time limit),
    unless a bound already meets the ``n`` GPUs placed."""
    plain = {**problem.to_plain(), "objective": "min_gpus"}
    comb = int(_bounds.lower_bounds(plain)["best"])
    own = a.lower_bound if a.lower_bound else None
    candidates = [("combinatorial", comb)]
    cg_bound, summary = a.details.get("bounds", {}).get("column_generation"), None
    if cg_bound is None and n > max(comb, math.ceil(own - 1e-9) if own else 0):
        cg = _colgen.column_generation(plain, time.monotonic() + min(_colgen.PLANNER_BOUND_S, problem.time_limit_s),
                                       incumbent=n)
        cg_bound, summary = cg.bound, cg.summary()
    candidates.append(("column_generation", cg_bound))
    if own is not None:
        candidates.append((a.details.get("bound_method") or solver, own))
    lb, method = _colgen.best_bound(candidates)
    return lb, method, summary


def _capacity_curve(problem: PlacementProblem) -> dict[int, tuple[tuple[int, float], ...]]:
    """Rank class -> (adapter count, sustainable tokens/s) at each measured point of the capacity model."""
    return {r: tuple((c.max_adapters, c.capacity_tps) for c in es) for r, es in problem.capacity.table.items()}


def _solver_stats(a: Assignment) -> dict[str, Any]:
    """What the solver reported about its own run, less the phases (kept in ``SolveResult.phases``)."""
    return {k: v for k, v in a.details.items() if k != "phases"}


def _objective(value: str) -> Objective:
    try:
        return Objective(value)
    except ValueError:
        raise InputError("objective", f"unknown objective {value!r}; valid: min_gpus, min_latency") from None
