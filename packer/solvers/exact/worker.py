"""The exact solvers' child process: reads one capacity-model problem (JSON) on stdin, runs the chosen
backend on it and writes the answer (JSON) on stdout.

    python -P -m packer.solvers.exact.worker cpsat|milp  < problem.json  > answer.json

``packer.solvers.exact.runner`` starts it once per solve, because ortools and highspy bundle different HiGHS
libraries under one soname and cannot be imported together. Only the chosen backend's libraries are
imported ("cpsat": ortools, in ``cpsat_model``; "milp": pyomo + highspy, in ``milp_model``), and of
``packer`` only what the model needs (the lazy package ``__init__`` files, the bounds, the executor's
``die_with_parent``; no twin, predictors or capacity model): its start-up comes out of the time limit.
``-P`` keeps the working directory off ``sys.path``. Stdout carries the answer JSON and nothing else (fd 1
is pointed at stderr while solving, so solver logs cannot corrupt it).

Time: the problem's ``time_limit_s`` is what is left of the solve's limit when the parent started this
process (and ``deadline`` the same instant on the shared ``time.monotonic`` clock). The search gets what
remains of it after start-up, imports and the model build, less ``prepare.ANSWER_RESERVE_S`` for writing
the answer; with less than ``prepare.MIN_SEARCH_S`` left there is no search (the parent keeps its warm
start). Each phase is reported as it ends (``phases.mark``), so the parent knows where the time went even
when it has to kill this process.
"""

from __future__ import annotations

import time

_STARTED = time.monotonic()  # before this module's imports: they are the worker's own start-up phase

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from ...executor import die_with_parent  # noqa: E402
from ..bounds import PERMILLE  # noqa: E402
from .cpsat_model import solve_cpsat  # noqa: E402
from .milp_model import solve_milp  # noqa: E402
from .phases import Phases, mark  # noqa: E402
from .prepare import OutOfTime, make_answer, prepare  # noqa: E402

__all__ = ["solve", "main"]


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
        return make_answer(p, "optimal", [], {}, 0, 0, t0, "no items")
    if p.objective == "min_latency" and (p.t_lower > PERMILLE or p.lower_bound > p.bins):
        return make_answer(p, "infeasible", None, None, None, None, t0, "lower bounds exceed the budget")
    if backend not in ("cpsat", "milp"):
        raise ValueError(f"unknown backend {backend!r}")
    try:
        return solve_cpsat(p, t0, phases) if backend == "cpsat" else solve_milp(p, t0, phases)
    except OutOfTime:
        phases.done("model_build")  # the phase it was in (or the end of the import)
        return make_answer(p, "time_limit", None, None, None, None, t0,
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
    """The child's entry point: ``argv`` is [program, backend]; problem on stdin, answer on stdout."""
    if len(argv) != 2:
        print("usage: python -P -m packer.solvers.exact.worker cpsat|milp < problem.json", file=sys.stderr)
        return 2
    phases = Phases(_STARTED, mark)
    phases.done("worker_start")  # this module's imports: numpy, the bounds, the model modules
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
