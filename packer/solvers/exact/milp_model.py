"""The MILP backend (Pyomo, solved by HiGHS through appsi) of the exact worker: the model of ``prepare``
built and searched.

Pyomo and highspy are imported only when ``solve_milp`` runs, in the worker's process (never next to ortools).
"""

from __future__ import annotations

import math

from ..bounds import PERMILLE
from .phases import Phases
from .prepare import EPS, Prepared, apart, hint_values, make_answer

__all__ = ["solve_milp"]


def solve_milp(p: Prepared, t0: float, phases: Phases) -> dict:
    """Build the model with Pyomo, search it with HiGHS until the deadline and answer (``make_answer``)."""
    import pyomo.environ as pyo
    from pyomo.contrib.appsi.base import TerminationCondition
    from pyomo.contrib.appsi.solvers import Highs

    phases.done("import")
    p.check_time()
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
    p.check_time()
    m.rank = pyo.Constraint(list(m.x.keys()), rule=lambda m, s, g: m.x[s, g]
                            <= pyo.quicksum(m.z[g, c] for c in p.fits(s)))
    p.check_time()
    m.sym = pyo.Constraint(list(p.ordered()), rule=lambda m, g: m.y[g] >= m.y[g + 1])
    pairs = apart(p)
    m.apart = pyo.Constraint(range(len(pairs)), rule=lambda m, k: pyo.quicksum(m.x[s, pairs[k][0]]
                                                                              for s in pairs[k][1]) <= 1)
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
    elif p.moved is not None:
        # moves = homed - kept; the constant is added back to the objective's value below
        homed = sum(h for _, _, h in p.moved)
        kept = pyo.quicksum(m.x[s, h] for items, homes, _ in p.moved for s in items for h in homes)
        if p.max_moves is not None:
            m.moves = pyo.Constraint(expr=kept >= homed - p.max_moves)
        m.obj = pyo.Objective(expr=pyo.quicksum([p.weight * m.y[g] for g in range(U)] + [
            -m.x[s, h] for items, homes, _ in p.moved for s in items for h in homes]), sense=pyo.minimize)
    else:
        m.obj = pyo.Objective(expr=pyo.quicksum(m.y[g] for g in range(U)), sense=pyo.minimize)

    hint = hint_values(p)
    if hint is not None:
        for name in ("x", "z", "y"):
            for key, v in hint[name].items():
                getattr(m, name)[key].set_value(v)
        if p.objective == "min_latency":
            m.T.set_value(hint["T"])
            for key, v in hint["u"].items():
                m.u[key].set_value(v)

    p.check_time()
    opt = Highs()
    opt.set_instance(m)  # passing the model to HiGHS takes seconds for large models: before the clock
    for key in opt.update_config:  # solve() must not rescan the unchanged model
        if key.startswith(("check_for_", "update_")):
            setattr(opt.update_config, key, False)
    # The appsi class reads config.time_limit itself; SolverFactory('appsi_highs').solve() (the legacy
    # wrapper) overwrites it with its own ``timelimit`` argument, so we use the class directly.
    opt.config.load_solution = False
    # HiGHS 1.15 given this warm start on the re-planning model answered "optimal" with an objective no
    # feasible point has (below its own incumbent's): re-planning searches cold (the runner keeps the warm start)
    opt.config.warmstart = hint is not None and p.moved is None
    # Objectives are integral: an absolute gap below 1 proves optimality.
    opt.highs_options = {"random_seed": p.seed, "mip_rel_gap": 0.0, "mip_abs_gap": 0.99}
    phases.done("model_build")
    p.check_time()
    opt.config.time_limit = p.search_seconds()
    res = opt.solve(m)
    phases.done("search")
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
    trusted = True
    if has_solution:
        res.solution_loader.load_vars()
        bin_of = [max(p.slots(s), key=lambda g: m.x[s, g].value or 0.0) for s in range(n)]
        config_of = {g: max(p.configs, key=lambda c: m.z[g, c].value or 0.0) for g in set(bin_of)}
        objective = res.best_feasible_objective
        own = pyo.value(m.obj)
        if abs(own - objective) > 0.5:  # the solver's value is not its solution's: trust neither bound nor status
            status, objective, trusted = ("feasible" if status == "optimal" else status), own, False
    bound = res.best_objective_bound if trusted else None  # HiGHS info.mip_dual_bound
    if p.moved is not None:  # the objective's constant (see above)
        offset = sum(h for _, _, h in p.moved)
        objective = None if objective is None else objective + offset
        bound = None if bound is None else bound + offset
    if bound is None or not math.isfinite(bound) or status == "infeasible":
        bound = None
    elif status != "optimal" and objective is not None and bound >= objective - EPS:
        bound = None  # appsi reports the incumbent as the bound when HiGHS ran no B&B node: not a proof
    else:
        bound = math.ceil(bound - EPS)
    return make_answer(p, status, bin_of, config_of, objective, bound, t0,
                       f"highs {tc.name} in {res.wallclock_time:.2f}s, {len(m.x)} x vars, "
                       f"hint={'yes' if opt.config.warmstart else 'no'}")
