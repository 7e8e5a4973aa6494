"""``cpsat`` (OR-Tools CP-SAT) and ``milp`` (Pyomo + HiGHS): exact solvers on the capacity model.

Both start from the greedy placement (warm start and upper bound), compute the column-generation
bound (``packer.solvers.colgen``, at most ``COLGEN_SHARE`` of a time limit of ``COLGEN_MIN_LIMIT_S`` or
more) where the combinatorial bounds leave a gap, skip the search when greedy meets the lower bound, break symmetry between GPUs, honour the time limit and return the incumbent, the
proven bound and the gap. Each runs in its own worker process (``runner``) because ortools and
highspy bundle clashing HiGHS libraries and cannot share a process.
"""

from __future__ import annotations

import time

from ..base import SOLVERS, Assignment, Objective, PlacementProblem, Solver, SolveStatus
from ..bounds import lower_bounds
from ..colgen import column_generation
from ..greedy import GreedySolver
from .runner import solve_exact

__all__ = ["CpSatSolver", "MilpSolver"]

COLGEN_SHARE = 0.25  # of the time limit, at most, for the column-generation bound before the backend's search
COLGEN_MIN_LIMIT_S = 4.0  # below this the backend gets all the time (packer.solve adds the bound afterwards)
_STATUS = {"optimal": SolveStatus.OPTIMAL, "feasible": SolveStatus.FEASIBLE, "time_limit": SolveStatus.TIME_LIMIT,
           "infeasible": SolveStatus.INFEASIBLE}


class _ExactSolver(Solver):
    backend = ""

    def solve(self, problem: PlacementProblem) -> Assignment:
        t0 = time.perf_counter()
        started = time.monotonic()  # the time limit counts from here: the warm start comes out of it too
        warm = GreedySolver().solve(problem)
        if warm.status is SolveStatus.INFEASIBLE:
            warm = None
        plain = problem.to_plain(warm)
        t_warm = time.monotonic()
        cg = None
        if (problem.objective is Objective.MIN_GPUS and warm is not None and problem.time_limit_s >= COLGEN_MIN_LIMIT_S
                and warm.num_gpus > lower_bounds(plain)["best"]):
            # the configuration LP's bound first (in this process: scipy's HiGHS is its own), handed to the
            # backend as sum_g y[g] >= bound; when it meets greedy the backend does not search at all
            index = {c: k for k, c in enumerate(problem.configs)}
            cg = column_generation(plain, started + COLGEN_SHARE * problem.time_limit_s, warm.num_gpus,
                                   [(list(b), index[c]) for b, c in zip(warm.bins, warm.configs)])
            plain["known_lower_bound"] = cg.bound
        t_cg = time.monotonic()
        answer = solve_exact(plain, self.backend, started=started)
        status = answer.get("status")
        phases = {"warm_start": t_warm - started, **({"column_generation": t_cg - t_warm} if cg else {}),
                  **answer.get("phases", {})}
        details = {"wall_seconds": time.perf_counter() - t0, "backend": self.backend, "phases": phases,
                   "solver_wall_seconds": answer.get("wall_seconds"), "message": answer.get("message", "")}
        if problem.objective is Objective.MIN_GPUS:
            details["bounds"] = dict(answer.get("lower_bounds") or lower_bounds(plain))
            if cg is not None:
                details["bounds"]["column_generation"] = cg.bound
                details["colgen"] = cg.summary()
            b = answer.get("bound")
            comb = details["bounds"]["best"]
            details["bound_method"] = (None if b is None else "combinatorial" if b <= comb else
                                       "column_generation" if cg is not None and b <= cg.bound else self.backend)
        if status == "infeasible":
            return Assignment((), (), SolveStatus.INFEASIBLE, lower_bound=answer.get("bound"),
                              message=answer.get("message", ""), details=details)
        if status not in _STATUS or answer.get("bins") is None:
            if warm is None:
                return Assignment((), (), SolveStatus.INFEASIBLE, message=f"{self.backend}: {answer.get('message')}",
                                  details=details)
            # The backend failed: keep the greedy incumbent and say so.
            return Assignment(warm.bins, warm.configs, SolveStatus.FEASIBLE, lower_bound=answer.get("bound"),
                              objective_value=warm.objective_value,
                              message=f"{self.backend} failed ({answer.get('message')}); greedy incumbent kept",
                              details=details)
        n_bins = max(answer["bins"]) + 1 if answer["bins"] else 0
        members: list[list[int]] = [[] for _ in range(n_bins)]
        for i, g in enumerate(answer["bins"]):
            members[g].append(i)
        configs = problem.configs
        bins = tuple(tuple(m) for m in members if m)
        cfgs = tuple(configs[answer["configs"][g]] for g, m in enumerate(members) if m)
        value = answer.get("objective")
        bound = answer.get("bound")
        if problem.objective is Objective.MIN_LATENCY:  # per-mille utilisation -> fraction
            value = None if value is None else value / 1000.0
            bound = None if bound is None else bound / 1000.0
        return Assignment(bins, cfgs, _STATUS[status], lower_bound=bound, objective_value=value,
                          message=answer.get("message", ""), details=details)


class CpSatSolver(_ExactSolver):
    """OR-Tools CP-SAT on the capacity model."""

    name = "cpsat"
    backend = "cpsat"


class MilpSolver(_ExactSolver):
    """A Pyomo MILP solved by HiGHS on the capacity model."""

    name = "milp"
    backend = "milp"


SOLVERS.register("cpsat", CpSatSolver, summary="OR-Tools CP-SAT, exact on the capacity model", requires=("ortools",))
SOLVERS.register("milp", MilpSolver, summary="Pyomo MILP with HiGHS, exact on the capacity model",
                 requires=("pyomo", "highspy"))
