"""The solver interface: a placement problem on the shared capacity model in, bins of items out.

Loads are compared in integer *units* (``LOAD_UNIT`` tokens/s; item loads rounded up, capacities
down) so that every solver, exact or not, judges feasibility with the same arithmetic.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

from ..predictors.base import Predictor
from ..registry import Registry
from .capacity import CapacityModel, GpuConfig, rank_class

__all__ = ["Objective", "SolveStatus", "Item", "PlacementProblem", "Assignment", "Solver", "SOLVERS", "get_solver",
           "LOAD_UNIT"]

LOAD_UNIT = 0.1  # tokens/s per integer load unit


class Objective(str, enum.Enum):
    MIN_GPUS = "min_gpus"
    MIN_LATENCY = "min_latency"


class SolveStatus(str, enum.Enum):
    OPTIMAL = "optimal"          # proven optimal on the capacity model
    FEASIBLE = "feasible"        # a placement, optimality not proven
    TIME_LIMIT = "time_limit"    # stopped by the time limit: the incumbent, the bound and the gap
    INFEASIBLE = "infeasible"    # no placement within the GPU budget


@dataclass(frozen=True)
class Item:
    """An adapter, or one replica of a hot adapter carrying ``share`` of its traffic."""

    adapter_id: str
    rank: int
    rate: float        # requests/s this item carries
    share: float       # fraction of the adapter's rate (1.0 unless replicated)
    load_tps: float    # offered tokens/s
    units: int         # load in integer units (rounded up)
    rank_class: int    # vLLM max_lora_rank class


@dataclass(frozen=True)
class PlacementProblem:
    """What a solver sees: items (sorted by load, descending), the capacity model and the objective."""

    items: tuple[Item, ...]
    capacity: CapacityModel
    predictor: Predictor
    objective: Objective = Objective.MIN_GPUS
    gpus: int | None = None          # GPU budget (required for min_latency)
    time_limit_s: float = 60.0
    seed: int = 0
    workers: int | None = None

    @property
    def configs(self) -> tuple[GpuConfig, ...]:
        return self.capacity.configs

    def config_units(self, c: GpuConfig) -> int:
        return int(math.floor(c.capacity_tps / LOAD_UNIT + 1e-9))

    def config_for(self, max_rank: int, count: int) -> GpuConfig | None:
        return self.capacity.config_for(max_rank, count)

    def fits(self, max_rank: int, count: int, units: int) -> GpuConfig | None:
        """The config a GPU with these adapters uses, or None if it does not keep up (capacity model)."""
        c = self.config_for(max_rank, count)
        return c if c is not None and units <= self.config_units(c) else None

    def to_plain(self, warm_start: "Assignment | None" = None) -> dict:
        """The problem in the exact backends' JSON form (see ``exact.py``)."""
        classes = list(self.capacity.rank_classes)
        configs = self.configs
        index = {c: k for k, c in enumerate(configs)}
        plain = {
            "items": [{"load": it.units, "rank_class": classes.index(it.rank_class)} for it in self.items],
            "configs": [{"rank_class": classes.index(c.max_lora_rank), "max_count": c.max_adapters,
                         "capacity": self.config_units(c)} for c in configs],
            "objective": self.objective.value,
            "max_bins": (warm_start.num_gpus if warm_start and self.objective is Objective.MIN_GPUS
                         else (self.gpus or len(self.items))),
            "gpus": self.gpus,
            "warm_start": None,
            "time_limit_s": self.time_limit_s,
            "workers": self.workers,
            "seed": self.seed,
        }
        if warm_start is not None and warm_start.bins:
            bins = [0] * len(self.items)
            for g, members in enumerate(warm_start.bins):
                for i in members:
                    bins[i] = g
            plain["warm_start"] = {"bins": bins, "configs": [index[c] for c in warm_start.configs]}
        return plain


@dataclass(frozen=True)
class Assignment:
    """A solver's answer on the capacity model: item indices per GPU and each GPU's config."""

    bins: tuple[tuple[int, ...], ...]
    configs: tuple[GpuConfig, ...]
    status: SolveStatus
    lower_bound: float | None = None     # proven bound on the objective (GPUs, or utilisation for min_latency)
    objective_value: float | None = None
    message: str = ""
    details: dict = field(default_factory=dict, compare=False)

    @property
    def num_gpus(self) -> int:
        return len(self.bins)


class Solver(ABC):
    """Places items on GPUs. Subclasses set ``name`` and implement ``solve``."""

    name: str = "solver"

    @abstractmethod
    def solve(self, problem: PlacementProblem) -> Assignment:
        """Place every item of ``problem`` (each in exactly one bin) or report infeasibility."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


SOLVERS: Registry[Solver] = Registry("solver", Solver)


def get_solver(spec: "str | Solver" = "greedy", **options) -> Solver:
    """A solver by registered name (with options) or the given object."""
    return SOLVERS.get(spec, **options)


def bin_config(problem: PlacementProblem, members: Sequence[int]) -> GpuConfig | None:
    """The capacity-model config of a GPU holding ``members`` (None if it does not fit)."""
    its = [problem.items[i] for i in members]
    return problem.fits(max(it.rank for it in its), len(its), sum(it.units for it in its))


def utilisation(problem: PlacementProblem, members: Sequence[int]) -> float:
    """Load over capacity of a GPU holding ``members`` on the capacity model (inf if it does not fit)."""
    its = [problem.items[i] for i in members]
    c = problem.config_for(max(it.rank for it in its), len(its))
    if c is None:
        return math.inf
    return sum(it.units for it in its) / max(problem.config_units(c), 1)
