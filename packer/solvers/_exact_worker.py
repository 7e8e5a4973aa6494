"""Child process of ``packer.solvers.exact``: one exact backend on one capacity-model problem.

    python -P path/to/_exact_worker.py cpsat|milp  < problem.json  > answer.json

It runs in its own process because ortools and highspy bundle different HiGHS libraries under one soname
and cannot be imported together. Only the chosen backend's libraries are imported ("cpsat": ortools;
"milp": pyomo + highspy), and, run as a script, not the ``packer`` package either (only the two modules
it needs: its start-up comes out of the time limit). Stdout carries the answer JSON and nothing else (fd 1
is pointed at stderr while solving, so solver logs cannot corrupt it).

Time: the problem's ``time_limit_s`` is what is left of the solve's limit when the parent started this
process (and ``deadline`` the same instant on the shared ``time.monotonic`` clock). The search gets what
remains of it after start-up, imports and the model build, less ``ANSWER_RESERVE_S`` for writing the
answer; with less than ``MIN_SEARCH_S`` left there is no search (the parent keeps its warm start). Each
phase is reported as it ends, as a line ``PHASE_MARK name seconds`` on stderr, so the parent knows where
the time went even when it has to kill this process.

The model (both backends): bins g < U; x[i,g] item i on bin g; z[g,c] bin g takes config c;
y[g] = sum_c z[g,c] (bin used); each item on one bin; per bin load <= sum_c C_c z[g,c], item count
<= sum_c n_c z[g,c], and x[i,g] <= sum of z[g,c] over the configs whose rank class holds item i; items of
one ``group`` (replicas of one adapter) go on distinct bins: sum over the group of x[i,g] <= 1. Symmetry
breaking, with items sorted by load descending: bins are labelled in the order of their smallest item
index, so item i only goes on bins g <= i and y[g] >= y[g+1]. sum_g y[g] >= the lower bound of
``packer.solvers.bounds``. Objective ``min_gpus``: minimise sum_g y[g] (U = max_bins). Objective
``min_latency``: U = gpus, T in [latency lower bound, 1000] integer, u[g,c] in [0, 1000] with
u <= 1000 z, u <= T, u >= T - 1000 (1 - z) (so u[g,c] = T on the chosen config) and
1000 load(g) <= sum_c C_c u[g,c]; minimise T.
"""

from __future__ import annotations

import time

_STARTED = time.monotonic()  # before any import: the worker's own start-up is a phase too

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable  # noqa: E402

if __package__:  # imported (tests, or ``python -m``)
    from ..executor import die_with_parent
    from .bounds import PERMILLE, latency_lower_bound, lower_bounds
else:  # run by path from exact.py: bounds.py and executor.py alone (stdlib and numpy), without importing packer
    import importlib.util
    from pathlib import Path

    def _load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
        return module

    _bounds = _load("_packer_exact_bounds", Path(__file__).with_name("bounds.py"))
    PERMILLE, latency_lower_bound, lower_bounds = _bounds.PERMILLE, _bounds.latency_lower_bound, _bounds.lower_bounds
    die_with_parent = _load("_packer_executor", Path(__file__).parents[1] / "executor.py").die_with_parent

_EPS = 1e-6
PHASE_MARK = "@packer-phase"
ANSWER_RESERVE_S = 0.05  # taken off the search: reading the solution back and writing the answer
MIN_SEARCH_S = 0.05  # less than this left after the model build: no search


def mark(name: str, seconds: float) -> None:
    """Report that phase ``name`` took ``seconds`` (stderr, flushed at once: it must survive a kill)."""
    print(f"{PHASE_MARK} {name} {seconds:.6f}", file=sys.stderr, flush=True)


class Phases:
    """Times consecutive phases: ``done(name)`` ends the phase that began at the previous call."""

    def __init__(self, start: float, report: Callable[[str, float], None] | None = None):
        self.last = start
        self.report = report
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.monotonic()
        took, self.last = now - self.last, now
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        if self.report is not None:
            self.report(name, took)


class OutOfTime(Exception):
    """The deadline leaves no time to search: answer with no incumbent (the parent has the warm start)."""


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
    groups: list[list[int]]  # sorted items that must go on distinct bins (replicas of one adapter)
    deadline: float  # time.monotonic() by which the answer must be written
    workers: int
    seed: int

    def slots(self, s: int) -> range:
        """The bins sorted item ``s`` may go on (symmetry breaking: g <= s)."""
        return range(min(s + 1, self.bins))

    def members(self, g: int) -> range:
        """The sorted items that may go on bin ``g``."""
        return range(g, len(self.loads))

    def search_seconds(self) -> float:
        """The search's own limit: what is left until the deadline, less the time to write the answer."""
        return self.deadline - time.monotonic() - ANSWER_RESERVE_S

    def check_time(self) -> None:
        """Raise ``OutOfTime`` once no search of at least ``MIN_SEARCH_S`` can start before the deadline
        (checked while the model is built: building a large model can take longer than the limit)."""
        if self.search_seconds() < MIN_SEARCH_S:
            raise OutOfTime

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


def prepare(problem: dict, deadline: float) -> Prepared:
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
        bins=bins, lower_bound=lb, t_lower=t_lower, hint=hint, groups=_groups(items, order),
        deadline=deadline, workers=int(problem.get("workers") or os.cpu_count() or 1),
        seed=int(problem.get("seed") or 0))


def _groups(items: list[dict], order: list[int]) -> list[list[int]]:
    """The sorted indices of the items of each ``group`` with more than one item."""
    by_group: dict[int, list[int]] = {}
    for s, i in enumerate(order):
        if items[i].get("group") is not None:
            by_group.setdefault(int(items[i]["group"]), []).append(s)
    return [members for members in by_group.values() if len(members) > 1]


def _apart(p: Prepared) -> list[tuple[int, list[int]]]:
    """(bin, sorted items of one group that may go on it) where at most one of them may."""
    return [(g, on) for grp in p.groups for g in range(p.bins) if len(on := [s for s in grp if g <= s]) > 1]


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


def solve_cpsat(p: Prepared, t0: float, phases: Phases) -> dict:
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
        if g + 1 < U:
            m.add(y[g] >= y[g + 1])
    for g, on in _apart(p):
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
        bound = math.ceil(solver.best_objective_bound - _EPS)
    return _answer(p, status, bin_of, config_of, objective, bound, t0,
                   f"cp-sat {name} in {solver.wall_time:.2f}s, {len(x)} x vars, hint={'yes' if hint else 'no'}")


def solve_milp(p: Prepared, t0: float, phases: Phases) -> dict:
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
    m.sym = pyo.Constraint(range(U - 1), rule=lambda m, g: m.y[g] >= m.y[g + 1])
    apart = _apart(p)
    m.apart = pyo.Constraint(range(len(apart)), rule=lambda m, k: pyo.quicksum(m.x[s, apart[k][0]]
                                                                              for s in apart[k][1]) <= 1)
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

    p.check_time()
    opt = Highs()
    opt.set_instance(m)  # passing the model to HiGHS takes seconds for large models: before the clock
    for key in opt.update_config:  # solve() must not rescan the unchanged model
        if key.startswith(("check_for_", "update_")):
            setattr(opt.update_config, key, False)
    # The appsi class reads config.time_limit itself; SolverFactory('appsi_highs').solve() (the legacy
    # wrapper) overwrites it with its own ``timelimit`` argument, so we use the class directly.
    opt.config.load_solution = False
    opt.config.warmstart = hint is not None
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


def solve(problem: dict, backend: str, deadline: float | None = None, phases: Phases | None = None) -> dict:
    """Build and solve the model with ``backend``; the answer's objective is the solver's (the parent
    recomputes it from the placement). The answer is due by ``deadline`` (``time.monotonic()``; default:
    ``time_limit_s`` from now)."""
    t0 = time.monotonic()
    phases = phases or Phases(t0)
    if deadline is None:
        deadline = t0 + float(problem["time_limit_s"])
    p = prepare(problem, deadline)
    phases.done("prepare")
    if len(p.loads) == 0:
        return _answer(p, "optimal", [], {}, 0, 0, t0, "no items")
    if p.objective == "min_latency" and (p.t_lower > PERMILLE or p.lower_bound > p.bins):
        return _answer(p, "infeasible", None, None, None, None, t0, "lower bounds exceed the budget")
    if backend not in ("cpsat", "milp"):
        raise ValueError(f"unknown backend {backend!r}")
    try:
        return solve_cpsat(p, t0, phases) if backend == "cpsat" else solve_milp(p, t0, phases)
    except OutOfTime:
        phases.done("model_build")  # the phase it was in (or the end of the import)
        return _answer(p, "time_limit", None, None, None, None, t0,
                       f"no time left to search after start-up, imports and the model build "
                       f"({time.monotonic() - t0:.2f}s in the worker)")


def _deadline(problem: dict, started: float) -> float:
    """When the answer is due: the parent's ``deadline`` where this process shares its clock (it is no
    later than ``time_limit_s`` from this process's start), else ``time_limit_s`` from that start."""
    own = started + float(problem["time_limit_s"])
    parent = problem.get("deadline")
    if isinstance(parent, (int, float)) and own - 60.0 < parent <= own:
        return float(parent)
    return own


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -P _exact_worker.py cpsat|milp < problem.json", file=sys.stderr)
        return 2
    phases = Phases(_STARTED, mark)
    phases.done("worker_start")  # this module's imports: numpy and the bounds
    problem = json.load(sys.stdin)
    answer_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything printed while solving goes to stderr
    answer = solve(problem, argv[1], _deadline(problem, _STARTED), phases)
    answer_out.write(json.dumps(answer))
    answer_out.flush()
    phases.done("answer")
    return 0


if __name__ == "__main__":
    die_with_parent()  # a solve killed by SIGTERM or SIGKILL takes its solver with it
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip the interpreter's teardown of the solver's objects: the answer is written
