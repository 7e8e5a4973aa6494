"""The solver interface: a placement problem on the shared capacity model in, bins of items out.

Loads are compared in integer *units* (``LOAD_UNIT`` tokens/s; item loads rounded up, capacities
down) so that every solver, exact or not, judges feasibility with the same arithmetic.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

from ..errors import InputError
from ..predictors.base import Predictor
from ..registry import Registry
from ..capacity import CapacityModel, GpuConfig
from ..model import rank_class

__all__ = ["Objective", "SolveStatus", "Item", "PlacementProblem", "Assignment", "Solver", "SOLVERS", "get_solver",
           "LOAD_UNIT", "MAX_REPLICAS", "load_units", "capacity_units", "replica_count", "make_items"]

LOAD_UNIT = 0.1  # tokens/s per integer load unit
MAX_REPLICAS = 1000  # replicas of one adapter, each on its own GPU (greedy's packing is quadratic in them)


def load_units(tps: float) -> int:
    """A load in integer units, rounded up: an item is never counted lighter than it is."""
    return int(math.ceil(tps / LOAD_UNIT - 1e-9))


def capacity_units(tps: float) -> int:
    """A capacity in integer units, rounded down: a GPU is never counted stronger than it is."""
    return int(math.floor(tps / LOAD_UNIT + 1e-9))


def replica_count(load_tps: float, capacity_tps: float) -> int | None:
    """The fewest equal replicas ``k`` whose share ``load_tps / k``, in load units, fits ``capacity_tps``
    in capacity units (None when no number of replicas fits: the capacity is below one unit).

    Units, not raw tokens/s, decide: k shares each rounded up can exceed a capacity that the raw
    total would not, and every solver compares units."""
    cap = capacity_units(capacity_tps)
    if load_units(load_tps) <= cap:
        return 1
    if cap < 1:
        return None
    lo, hi = 1, max(2, math.ceil(load_tps / (cap * LOAD_UNIT)))  # lo does not fit; hi (about) does
    while load_units(load_tps / hi) > cap:
        hi *= 2
    while hi - lo > 1:  # load_units(load_tps / k) does not grow with k: bisect the first k that fits
        mid = (lo + hi) // 2
        if load_units(load_tps / mid) <= cap:
            hi = mid
        else:
            lo = mid
    return hi


def make_items(adapters: Iterable[tuple[str, int, float]], capacity: CapacityModel) -> tuple[Item, ...]:
    """A problem's items, sorted by load (descending): each adapter ``(id, rank, rate in req/s)``, or
    ``replica_count`` equal replicas of it where one GPU cannot carry it, each its own item.

    Raises ``InputError`` (field ``adapters[i].rate``) for an adapter that needs more than
    ``MAX_REPLICAS`` replicas, or that no number of them serves."""
    items: list[Item] = []
    for i, (adapter_id, rank, rate) in enumerate(adapters):
        load = rate * capacity.tokens_per_request
        single = capacity.max_single_load(rank)
        k = replica_count(load, single)
        if k is None or k > MAX_REPLICAS:
            need = (f"less than one load unit ({LOAD_UNIT} tokens/s), so no number of replicas serves it"
                    if k is None else f"it needs {k} replicas, more than the {MAX_REPLICAS} packer plans per adapter")
            raise InputError(f"adapters[{i}].rate", f"adapter {adapter_id!r} offers {load:,.1f} tokens/s ({rate:g} "
                             f"req/s) and one {capacity.profile} GPU sustains {single:,.1f} tokens/s at rank {rank}: "
                             f"{need}; lower the rate or plan this adapter separately")
        items.extend(Item.of(adapter_id, rank, rate / k, 1.0 / k, load / k) for _ in range(k))
    items.sort(key=lambda it: (-it.units, -it.rank, it.adapter_id))
    return tuple(items)


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

    @classmethod
    def of(cls, adapter_id: str, rank: int, rate: float, share: float, load_tps: float) -> "Item":
        """An item whose ``units`` and ``rank_class`` follow from its load and rank."""
        return cls(adapter_id, rank, rate, share, load_tps, load_units(load_tps), rank_class(rank))


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

    def __post_init__(self):
        missing = sorted({it.rank_class for it in self.items} - set(self.capacity.rank_classes))
        if missing:
            raise InputError("items", f"max_lora_rank {', '.join(map(str, missing))} has no entries in the capacity "
                             f"model (it covers {', '.join(map(str, self.capacity.rank_classes)) or 'none'}); build "
                             "the capacity model for every item's rank")

    @property
    def configs(self) -> tuple[GpuConfig, ...]:
        return self.capacity.configs

    def config_units(self, c: GpuConfig) -> int:
        """What a GPU with config ``c`` sustains, in load units."""
        return capacity_units(c.capacity_tps)

    def config_for(self, max_rank: int, count: int) -> GpuConfig | None:
        return self.capacity.config_for(max_rank, count)

    def fits(self, max_rank: int, count: int, units: int) -> GpuConfig | None:
        """The config a GPU with these adapters uses, or None if it does not keep up (capacity model)."""
        c = self.config_for(max_rank, count)
        return c if c is not None and units <= self.config_units(c) else None

    def to_plain(self, warm_start: "Assignment | None" = None) -> dict:
        """The problem in the exact backends' JSON form (see ``packer.solvers.exact``); the replicas of an adapter
        form a ``group``, kept on distinct GPUs as greedy's arithmetic keeps them."""
        classes = list(self.capacity.rank_classes)
        configs = self.configs
        index = {c: k for k, c in enumerate(configs)}
        replicated: dict[str, int] = {}
        for it in self.items:
            if it.share < 1.0:
                replicated.setdefault(it.adapter_id, len(replicated))
        plain = {
            "items": [{"load": it.units, "rank_class": classes.index(it.rank_class),
                       **({"group": replicated[it.adapter_id]} if it.adapter_id in replicated else {})}
                      for it in self.items],
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
    # the items ``bins`` index when the solver chose its own replica splits (``greedy-split``); None: the
    # problem's items
    items: tuple[Item, ...] | None = None

    @property
    def num_gpus(self) -> int:
        return len(self.bins)

    def placed_problem(self, problem: PlacementProblem) -> PlacementProblem:
        """``problem`` with the items this answer's bins index (its own splits, where it chose them)."""
        return problem if self.items is None else replace(problem, items=self.items)


class Solver(ABC):
    """Places items on GPUs. Subclasses set ``name`` and implement ``solve``."""

    name: str = "solver"
    # True for a solver that chooses hot adapters' replica splits itself (its answer's ``items``): the
    # planner then reports a bound that holds for every split, not one on the problem's equal replicas
    chooses_splits: bool = False

    @abstractmethod
    def solve(self, problem: PlacementProblem) -> Assignment:
        """Place every item of ``problem`` (each in exactly one bin) or report infeasibility."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


SOLVERS: Registry[Solver] = Registry("solver", Solver)
# The shipped backends, imported only when one is asked for (cpsat and milp run OR-Tools / Pyomo in a child).
SOLVERS.declare("greedy", "packer.solvers.greedy")
SOLVERS.declare("greedy-split", "packer.solvers.split")
SOLVERS.declare("ladder", "packer.solvers.ladder")
SOLVERS.declare("loraserve", "packer.solvers.peers")
SOLVERS.declare("dlora", "packer.solvers.peers")
SOLVERS.declare("cpsat", "packer.solvers.exact.solvers")
SOLVERS.declare("milp", "packer.solvers.exact.solvers")
SOLVERS.declare("colgen", "packer.solvers.colgen")


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
