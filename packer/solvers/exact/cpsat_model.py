"""The CP-SAT backend (OR-Tools) of the exact worker: the model of ``prepare`` built and searched.

OR-Tools is imported only when ``solve_cpsat`` runs, in the worker's process (never next to highspy).
"""

from __future__ import annotations

import math

from ..bounds import PERMILLE
from .phases import Phases
from .prepare import EPS, Prepared, apart, hint_values, make_answer

__all__ = ["solve_cpsat"]


def solve_cpsat(p: Prepared, t0: float, phases: Phases) -> dict:
    """Build the model with CP-SAT, search it until the deadline and answer (``make_answer``)."""
    from ortools.sat.python import cp_model

    phases.done("import")
    p.check_time()
    n, U = len(p.loads), p.bins
    m = cp_model.CpModel()
    x = {(s, g): m.new_bool_var(f"x{s}_{g}") for s in range(n) for g in p.slots(s)}
    z = {(g, c): m.new_bool_var(f"z{g}_{c}") for g in range(U) for c in p.configs}
    y = [m.new_bool_var(f"y{g}") for g in range(U)]
    for s in range(n):
        m.add_exactly_one(x[s, g] for g in p.slots(s))
    for g in range(U):
        p.check_time()
        m.add(sum(z[g, c] for c in p.configs) == y[g])
        m.add(sum(p.loads[s] * x[s, g] for s in p.members(g)) <= sum(p.cap[c] * z[g, c] for c in p.configs))
        m.add(sum(x[s, g] for s in p.members(g)) <= sum(p.count[c] * z[g, c] for c in p.configs))
        for s in p.members(g):
            m.add(x[s, g] <= sum(z[g, c] for c in p.fits(s)))
    for g in p.ordered():
        m.add(y[g] >= y[g + 1])
    for g, on in apart(p):
        m.add(sum(x[s, g] for s in on) <= 1)
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
    elif p.moved is not None:
        moves = sum(homed - sum(x[s, h] for s in items for h in homes) for items, homes, homed in p.moved)
        if p.max_moves is not None:
            m.add(moves <= p.max_moves)
        m.minimize(p.weight * sum(y) + moves)
    else:
        m.minimize(sum(y))
    hint = hint_values(p)
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

    phases.done("model_build")
    p.check_time()
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = p.search_seconds()
    solver.parameters.num_workers = p.workers
    solver.parameters.random_seed = p.seed
    code = solver.solve(m)
    phases.done("search")
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
        bound = math.ceil(solver.best_objective_bound - EPS)
    return make_answer(p, status, bin_of, config_of, objective, bound, t0,
                       f"cp-sat {name} in {solver.wall_time:.2f}s, {len(x)} x vars, hint={'yes' if hint else 'no'}")
