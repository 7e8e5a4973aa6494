"""Every registered predictor passes the public contract kit (``packer.testing``), so a new backend cannot
skip it (every registered solver: tests/test_solvers_contract.py); the kit itself rejects backends that
break the contract."""

from __future__ import annotations

import pytest

from packer.predictors import PREDICTORS, get_predictor
from packer.solvers.base import Assignment, Solver, SolveStatus
from packer.testing import TablePredictor, check_predictor, check_solver, known_problems


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_every_registered_predictor_meets_the_contract(name):
    if not PREDICTORS.available(name):
        pytest.skip(f"{name}'s libraries are not installed")
    check_predictor(get_predictor(name, duration_s=300.0) if name == "twin" else get_predictor(name))


def test_the_table_predictor_meets_the_predictor_contract():
    check_predictor(TablePredictor(known_problems()[0].problem.capacity))


class _OneGpuForAll(Solver):
    """Puts everything on one GPU, ignoring the table."""

    name = "one-gpu"

    def solve(self, problem):
        return Assignment((tuple(range(len(problem.items))),), (problem.capacity.configs[-1],), SolveStatus.OPTIMAL, 1.0)


class _ClaimsOptimal(Solver):
    """One GPU per item, and says that is optimal."""

    name = "boastful"

    def solve(self, problem):
        from packer.solvers.base import bin_config
        bins = tuple((i,) for i in range(len(problem.items)))
        return Assignment(bins, tuple(bin_config(problem, b) for b in bins), SolveStatus.OPTIMAL, 1.0)


@pytest.mark.parametrize("solver,words", [(_OneGpuForAll(), "exceeds the capacity table"),
                                          (_ClaimsOptimal(), "'optimal' with")])
def test_the_kit_catches_a_broken_solver(solver, words):
    with pytest.raises(AssertionError, match=words):
        check_solver(solver)
