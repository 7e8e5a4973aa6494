"""Child process of ``packer.solvers.exact``: one exact backend on one capacity-model problem.

    python -m packer.solvers._exact_worker cpsat|milp  < problem.json  > answer.json

It runs in its own process because ortools and highspy bundle different HiGHS libraries under one soname
and cannot be imported together. Only the chosen backend's libraries are imported ("cpsat": ortools;
"milp": pyomo + highspy). Stdout carries the answer JSON and nothing else (fd 1 is pointed at stderr while
solving, so solver logs cannot corrupt it).

The model (both backends): bins g < U; x[i,g] item i on bin g; z[g,c] bin g takes config c;
y[g] = sum_c z[g,c] (bin used); each item on one bin; per bin load <= sum_c C_c z[g,c], item count
<= sum_c n_c z[g,c], and x[i,g] <= sum of z[g,c] over the configs whose rank class holds item i. Symmetry
breaking, with items sorted by load descending: bins are labelled in the order of their smallest item
index, so item i only goes on bins g <= i and y[g] >= y[g+1]. sum_g y[g] >= the lower bound of
``packer.solvers.bounds``. Objective ``min_gpus``: minimise sum_g y[g] (U = max_bins). Objective
``min_latency``: U = gpus, T in [latency lower bound, 1000] integer, u[g,c] in [0, 1000] with
u <= 1000 z, u <= T, u >= T - 1000 (1 - z) (so u[g,c] = T on the chosen config) and
1000 load(g) <= sum_c C_c u[g,c]; minimise T.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass

from packer.solvers.bounds import PERMILLE, latency_lower_bound, lower_bounds
from packer.solvers.exact import DEFAULT_TIME_LIMIT_S

_EPS = 1e-6


@dataclass
class Prepared:
    """The problem with items sorted by load descending and the bins/configs the model uses."""

    objective: str
    order: list[int]  # order[s] = original index of sorted item s
    loads: list[int]  # by sorted index
    ranks: list[int]
    configs: list[int]  # the original indices of the non-dominated configs the model offers
    cap: dict[int, int]
    count: dict[int, int]
    rank: dict[int, int]
    bins: int  # U
    lower_bound: int  # on sum_g y[g]
    t_lower: int  # on T (min_latency)
    hint: tuple[list[int], list[int]] | None  # (bin per sorted item, config per bin), symmetry-consistent
    time_limit: float
    started: float  # time.monotonic() when the worker started
    workers: int
    seed: int

    def slots(self, s: int) -> range:
        """The bins sorted item ``s`` may go on (symmetry breaking: g <= s)."""
        return range(min(s + 1, self.bins))

    def members(self, g: int) -> range:
        """The sorted items that may go on bin ``g``."""
        return range(g, len(self.loads))

    def solver_seconds(self) -> float:
        """The solver's own limit: what is left of ``time_limit_s`` after imports and model building
        (at least a fifth of it, so that the warm start can still be loaded and returned)."""
        return max(0.2 * self.time_limit, self.time_limit - (time.monotonic() - self.started))

    def fits(self, s: int) -> list[int]:
        """The offered configs whose rank class holds sorted item ``s``."""
        return [c for c in self.configs if self.rank[c] >= self.ranks[s]]


def _non_dominated(configs: list[dict]) -> list[int]:
    """Drop configs that another config matches or beats on rank class, max_count and capacity (a
    solution using one can switch to its dominator). Among equal configs the first index is kept."""
    key = [(int(c["rank_class"]), int(c["max_count"]), int(c["capacity"])) for c in configs]
    keep = []
    for a, ka in enumerate(key):
        dominated = any(
            all(kb[t] >= ka[t] for t in range(3)) and (kb != ka or b < a) for b, kb in enumerate(key) if b != a)
        if not dominated:
            keep.append(a)
    return keep


def prepare(problem: dict, started: float) -> Prepared:
    items, configs = problem["items"], problem["configs"]
    objective = problem["objective"]
    order = sorted(range(len(items)), key=lambda i: (-int(items[i]["load"]), -int(items[i]["rank_class"]), i))
    loads = [int(items[i]["load"]) for i in order]
    ranks = [int(items[i]["rank_class"]) for i in order]
    if objective == "min_latency":
        bins = int(problem["gpus"])
        t_lower = latency_lower_bound(problem)
        t_lower = PERMILLE + 1 if t_lower is None else t_lower  # empty domain: the model is infeasible
    else:
        bins = int(problem["max_bins"])
        t_lower = 0
    bins = min(bins, len(items))
    hint = _hint(problem, order, bins)
    if hint is not None and objective == "min_gpus":
        bins = len(hint[1])  # the warm start is the incumbent: a better solution needs no more bins
    lb = problem.get("lower_bound")
    lb = int(lower_bounds(problem)["best"] if lb is None else lb)
    return Prepared(
        objective=objective, order=order, loads=loads, ranks=ranks, configs=_non_dominated(configs),
        cap={c: int(cf["capacity"]) for c, cf in enumerate(configs)},
        count={c: int(cf["max_count"]) for c, cf in enumerate(configs)},
        rank={c: int(cf["rank_class"]) for c, cf in enumerate(configs)},
        bins=bins, lower_bound=lb, t_lower=t_lower, hint=hint,
        time_limit=float(problem.get("time_limit_s") or DEFAULT_TIME_LIMIT_S), started=started,
        workers=int(problem.get("workers") or os.cpu_count() or 1), seed=int(problem.get("seed") or 0))


def _hint(problem: dict, order: list[int], bins: int) -> tuple[list[int], list[int]] | None:
    """The warm start relabelled to satisfy the symmetry breaking (bins in the order of their smallest
    sorted item), or None when there is none or it does not fit in ``bins`` bins."""
    warm = problem.get("warm_start")
    if not warm or not warm.get("bins") or len(warm["bins"]) != len(order):
        return None
    new_label: dict[int, int] = {}
    hint_bins = []
    for i in order:  # sorted order: first appearance = smallest sorted item of the bin
        b = int(warm["bins"][i])
        hint_bins.append(new_label.setdefault(b, len(new_label)))
    if len(new_label) > bins or any(b >= len(warm["configs"]) for b in new_label):
        return None
    hint_configs = [0] * len(new_label)
    for old, new in new_label.items():
        hint_configs[new] = int(warm["configs"][old])
    if any(g > s for s, g in enumerate(hint_bins)):  # cannot happen with this labelling; be safe
        return None
    return hint_bins, hint_configs


def _hint_values(p: Prepared) -> dict[str, dict] | None:
    """Full variable values (x, z, y, T, u) for the hint. A hinted config that the model does not offer
    (a dominated one) is replaced by one that dominates it; None if there is none (cannot happen)."""
    if p.hint is None:
        return None
    hint_bins, hint_configs = p.hint
    offered = set(p.configs)
    configs = []
    for g, c in enumerate(hint_configs):
        if c not in offered:
            c = next((d for d in p.configs if p.rank[d] >= p.rank[c] and p.count[d] >= p.count[c]
                      and p.cap[d] >= p.cap[c]), None)
            if c is None:
                return None
        configs.append(c)
    load = [0] * p.bins
    for s, g in enumerate(hint_bins):
        load[g] += p.loads[s]
    used = len(configs)
    t = max([math.ceil(PERMILLE * load[g] / p.cap[configs[g]]) for g in range(used)], default=0)
    t = max(t, p.t_lower)
    x = {(s, g): int(hint_bins[s] == g) for s in range(len(p.loads)) for g in p.slots(s)}
    z = {(g, c): int(g < used and configs[g] == c) for g in range(p.bins) for c in p.configs}
    y = {g: int(g < used) for g in range(p.bins)}
    u = {(g, c): t * z[g, c] for g in range(p.bins) for c in p.configs}
    return {"x": x, "z": z, "y": y, "T": t, "u": u}


def _answer(p: Prepared, status: str, bin_of: list[int] | None, config_of: dict[int, int] | None,
            objective: float | None, bound: float | None, t0: float, message: str) -> dict:
    """Map a sorted-item solution back to the original items, bins relabelled 0..m-1 (used bins only)."""
    bins_out = configs_out = None
    if bin_of is not None and config_of is not None:
        relabel: dict[int, int] = {}
        bins_out = [0] * len(p.order)
        for s, g in enumerate(bin_of):
            bins_out[p.order[s]] = relabel.setdefault(g, len(relabel))
        configs_out = [0] * len(relabel)
        for g, new in relabel.items():
            configs_out[new] = config_of[g]
    return {"status": status, "bins": bins_out, "configs": configs_out, "objective": objective,
            "bound": bound, "wall_seconds": time.monotonic() - t0, "message": message}


def solve_cpsat(p: Prepared, t0: float) -> dict:
    from ortools.sat.python import cp_model

    n, U = len(p.loads), p.bins
    m = cp_model.CpModel()
    x = {(s, g): m.new_bool_var(f"x{s}_{g}") for s in range(n) for g in p.slots(s)}
    z = {(g, c): m.new_bool_var(f"z{g}_{c}") for g in range(U) for c in p.configs}
    y = [m.new_bool_var(f"y{g}") for g in range(U)]
    for s in range(n):
        m.add_exactly_one(x[s, g] for g in p.slots(s))
    for g in range(U):
        m.add(sum(z[g, c] for c in p.configs) == y[g])
        m.add(sum(p.loads[s] * x[s, g] for s in p.members(g)) <= sum(p.cap[c] * z[g, c] for c in p.configs))
        m.add(sum(x[s, g] for s in p.members(g)) <= sum(p.count[c] * z[g, c] for c in p.configs))
        for s in p.members(g):
            m.add(x[s, g] <= sum(z[g, c] for c in p.fits(s)))
        if g + 1 < U:
            m.add(y[g] >= y[g + 1])
    m.add(sum(y) >= p.lower_bound)
    if p.objective == "min_latency":
        T = m.new_int_var(min(p.t_lower, PERMILLE + 1), PERMILLE, "T")
        u = {(g, c): m.new_int_var(0, PERMILLE, f"u{g}_{c}") for g in range(U) for c in p.configs}
        for (g, c), ugc in u.items():
            m.add(ugc <= PERMILLE * z[g, c])
            m.add(ugc <= T)
            m.add(ugc >= T - PERMILLE * (1 - z[g, c]))
        for g in range(U):
            m.add(PERMILLE * sum(p.loads[s] * x[s, g] for s in p.members(g))
                  <= sum(p.cap[c] * u[g, c] for c in p.configs))
        m.minimize(T)
    else:
        m.minimize(sum(y))
    hint = _hint_values(p)
    if hint is not None:
        for name, var in (("x", x), ("z", z)):
            for key, v in var.items():
                m.add_hint(v, hint[name][key])
        for g in range(U):
            m.add_hint(y[g], hint["y"][g])
        if p.objective == "min_latency":
            m.add_hint(T, hint["T"])
            for key, v in u.items():
                m.add_hint(v, hint["u"][key])

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = p.solver_seconds()
    solver.parameters.num_workers = p.workers
    solver.parameters.random_seed = p.seed
    code = solver.solve(m)
    name = solver.status_name(code)
    has_solution = code in (cp_model.OPTIMAL, cp_model.FEASIBLE)
    status = {cp_model.OPTIMAL: "optimal", cp_model.INFEASIBLE: "infeasible",
              cp_model.MODEL_INVALID: "error"}.get(code, "time_limit")
    if code == cp_model.FEASIBLE and solver.wall_time < solver.parameters.max_time_in_seconds - 0.5:
        status = "feasible"  # stopped without proof for a reason other than the time limit
    bin_of = config_of = None
    objective = bound = None
    if has_solution:
        bin_of = [next(g for g in p.slots(s) if solver.boolean_value(x[s, g])) for s in range(n)]
        config_of = {g: c for (g, c), v in z.items() if solver.boolean_value(v)}
        objective = solver.objective_value
    if code != cp_model.INFEASIBLE and code != cp_model.MODEL_INVALID:
        bound = math.ceil(solver.best_objective_bound - _EPS)
    return _answer(p, status, bin_of, config_of, objective, bound, t0,
                   f"cp-sat {name} in {solver.wall_time:.2f}s, {len(x)} x vars, hint={'yes' if hint else 'no'}")


def solve_milp(p: Prepared, t0: float) -> dict:
    import pyomo.environ as pyo
    from pyomo.contrib.appsi.base import TerminationCondition
    from pyomo.contrib.appsi.solvers import Highs

    n, U = len(p.loads), p.bins
    m = pyo.ConcreteModel()
    m.x = pyo.Var([(s, g) for s in range(n) for g in p.slots(s)], domain=pyo.Binary)
    m.z = pyo.Var([(g, c) for g in range(U) for c in p.configs], domain=pyo.Binary)
    m.y = pyo.Var(range(U), domain=pyo.Binary)
    m.one = pyo.Constraint(range(n), rule=lambda m, s: pyo.quicksum(m.x[s, g] for g in p.slots(s)) == 1)
    m.use = pyo.Constraint(range(U), rule=lambda m, g: pyo.quicksum(m.z[g, c] for c in p.configs) == m.y[g])
    m.cap = pyo.Constraint(range(U), rule=lambda m, g: pyo.quicksum(
        p.loads[s] * m.x[s, g] for s in p.members(g)) <= pyo.quicksum(p.cap[c] * m.z[g, c] for c in p.configs))
    m.cnt = pyo.Constraint(range(U), rule=lambda m, g: pyo.quicksum(m.x[s, g] for s in p.members(g))
                           <= pyo.quicksum(p.count[c] * m.z[g, c] for c in p.configs))
    m.rank = pyo.Constraint(list(m.x.keys()), rule=lambda m, s, g: m.x[s, g]
                            <= pyo.quicksum(m.z[g, c] for c in p.fits(s)))
    m.sym = pyo.Constraint(range(U - 1), rule=lambda m, g: m.y[g] >= m.y[g + 1])
    m.lb = pyo.Constraint(expr=pyo.quicksum(m.y[g] for g in range(U)) >= p.lower_bound)
    if p.objective == "min_latency":
        m.T = pyo.Var(domain=pyo.Integers, bounds=(min(p.t_lower, PERMILLE + 1), PERMILLE))
        m.u = pyo.Var(list(m.z.keys()), domain=pyo.NonNegativeReals, bounds=(0, PERMILLE))
        m.u_z = pyo.Constraint(list(m.z.keys()), rule=lambda m, g, c: m.u[g, c] <= PERMILLE * m.z[g, c])
        m.u_t = pyo.Constraint(list(m.z.keys()), rule=lambda m, g, c: m.u[g, c] <= m.T)
        m.u_on = pyo.Constraint(list(m.z.keys()),
                                rule=lambda m, g, c: m.u[g, c] >= m.T - PERMILLE * (1 - m.z[g, c]))
        m.util = pyo.Constraint(range(U), rule=lambda m, g: PERMILLE * pyo.quicksum(
            p.loads[s] * m.x[s, g] for s in p.members(g))
            <= pyo.quicksum(p.cap[c] * m.u[g, c] for c in p.configs))
        m.obj = pyo.Objective(expr=m.T, sense=pyo.minimize)
    else:
        m.obj = pyo.Objective(expr=pyo.quicksum(m.y[g] for g in range(U)), sense=pyo.minimize)

    hint = _hint_values(p)
    if hint is not None:
        for name in ("x", "z", "y"):
            for key, v in hint[name].items():
                getattr(m, name)[key].set_value(v)
        if p.objective == "min_latency":
            m.T.set_value(hint["T"])
            for key, v in hint["u"].items():
                m.u[key].set_value(v)

    opt = Highs()
    opt.set_instance(m)  # passing the model to HiGHS takes seconds for large models: before the clock
    for key in opt.update_config:  # solve() must not rescan the unchanged model
        if key.startswith(("check_for_", "update_")):
            setattr(opt.update_config, key, False)
    # The appsi class reads config.time_limit itself; SolverFactory('appsi_highs').solve() (the legacy
    # wrapper) overwrites it with its own ``timelimit`` argument, so we use the class directly.
    opt.config.time_limit = p.solver_seconds()
    opt.config.load_solution = False
    opt.config.warmstart = hint is not None
    # Objectives are integral: an absolute gap below 1 proves optimality.
    opt.highs_options = {"random_seed": p.seed, "mip_rel_gap": 0.0, "mip_abs_gap": 0.99}
    res = opt.solve(m)
    tc = res.termination_condition
    has_solution = res.best_feasible_objective is not None
    if tc == TerminationCondition.optimal:
        status = "optimal"
    elif tc == TerminationCondition.infeasible:
        status = "infeasible"
    elif tc == TerminationCondition.maxTimeLimit:
        status = "time_limit"
    else:
        status = "feasible" if has_solution else "error"
    bin_of = config_of = None
    objective = None
    if has_solution:
        res.solution_loader.load_vars()
        bin_of = [max(p.slots(s), key=lambda g: m.x[s, g].value or 0.0) for s in range(n)]
        config_of = {g: max(p.configs, key=lambda c: m.z[g, c].value or 0.0) for g in set(bin_of)}
        objective = res.best_feasible_objective
    bound = res.best_objective_bound  # HiGHS info.mip_dual_bound
    if bound is None or not math.isfinite(bound) or status == "infeasible":
        bound = None
    elif status != "optimal" and objective is not None and bound >= objective - _EPS:
        bound = None  # appsi reports the incumbent as the bound when HiGHS ran no B&B node: not a proof
    else:
        bound = math.ceil(bound - _EPS)
    return _answer(p, status, bin_of, config_of, objective, bound, t0,
                   f"highs {tc.name} in {res.wallclock_time:.2f}s, {len(m.x)} x vars, "
                   f"hint={'yes' if hint else 'no'}")


def solve(problem: dict, backend: str, started: float | None = None) -> dict:
    """Build and solve the model with ``backend``; the answer's objective is the solver's (the parent
    recomputes it from the placement). ``time_limit_s`` counts from ``started`` (default: now)."""
    t0 = time.monotonic() if started is None else started
    p = prepare(problem, t0)
    if len(p.loads) == 0:
        return _answer(p, "optimal", [], {}, 0, 0, t0, "no items")
    if p.objective == "min_latency" and (p.t_lower > PERMILLE or p.lower_bound > p.bins):
        return _answer(p, "infeasible", None, None, None, None, t0, "lower bounds exceed the budget")
    if backend == "cpsat":
        return solve_cpsat(p, t0)
    if backend == "milp":
        return solve_milp(p, t0)
    raise ValueError(f"unknown backend {backend!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m packer.solvers._exact_worker cpsat|milp < problem.json", file=sys.stderr)
        return 2
    started = time.monotonic()
    problem = json.load(sys.stdin)
    answer_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed while solving goes to stderr
    answer = solve(problem, argv[1], started)
    answer_out.write(json.dumps(answer))
    answer_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
