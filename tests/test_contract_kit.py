"""The public contract kit (``packer.testing``) itself: it accepts its own table predictor and rejects
backends that break the contract. (Every registered backend runs the kit in test_predictors.py and
test_solvers_contract.py.)"""

from __future__ import annotations

import pytest

from packer.solvers.base import Assignment, Solver, SolveStatus
from packer.testing import TablePredictor, check_predictor, check_solver, known_problems


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
