"""The contract kit: the checks every solver and predictor backend must pass, for packer's own and for a
third party's (``check_solver(MySolver())``, ``check_predictor(MyPredictor())``).

Solvers are checked on small capacity tables with a known optimum, hand-made so that no twin runs:
every item placed exactly once, every GPU within the table (load units, adapter count, rank class), the
bound never above the optimum, ``optimal`` only when it is, the GPU budget kept, the same answer twice.
A solver may refuse an objective it does not support with an ``InputError`` on ``objective``.
Predictors are checked on the shipped Llama profile: a light load keeps up, a heavy overload starves, a
config that cannot start is a memory error, answers are deterministic and ``predict_many`` equals
``predict``, and ``describe`` names the backend. Each check raises ``AssertionError`` naming the case.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Sequence

from .capacity import CapacityModel, GpuConfig
from .errors import InputError
from .model import LengthSpec, PoissonArrivals, ServerConfig, ServerDefaults, rank_class
from .predictors.base import GpuQuery, Prediction, Predictor
from .profile import load_profile
from .solvers.base import Assignment, Item, Objective, PlacementProblem, Solver, SolveStatus, bin_config

__all__ = ["TablePredictor", "KnownProblem", "known_problems", "check_solver", "check_predictor"]

PROFILE = "llama-3.1-8b-instruct@h100-64gb"
TOKENS_PER_REQUEST = 400.0


class TablePredictor(Predictor):
    """A predictor that answers from a capacity table: a GPU keeps up while its load is within the
    table's capacity for its adapter count and rank class, and serves at most that capacity beyond.
    It lets solvers that consult a predictor (``ladder``) run on a hand-made table, with no twin."""

    name = "table"

    def __init__(self, capacity: CapacityModel):
        self.capacity = capacity

    def describe(self) -> dict:
        table = json.dumps(self.capacity.to_dict()["table"], sort_keys=True)
        return {"name": self.name, "table": hashlib.sha256(table.encode()).hexdigest()[:16]}

    def predict(self, query: GpuQuery) -> Prediction:
        s = query.server
        err = query.profile.memory.startup_error(s.max_loras, s.max_lora_rank, s.gpu_memory_utilization, s.enable_lora)
        offered = query.offered_tps
        if err is not None:
            return Prediction(self.name, starved=False, memory_error=err, throughput_tps=None, offered_tps=offered)
        cap = self.capacity.capacity(max(query.ranks), query.num_adapters)
        served = min(offered, cap)
        return Prediction(self.name, starved=offered > 0 and served < 0.9 * offered, memory_error=None,
                          throughput_tps=served, offered_tps=offered)


@dataclass(frozen=True)
class KnownProblem:
    """A placement problem with its optimum (GPUs for ``min_gpus``; for ``min_latency``, the budget)."""

    name: str
    problem: PlacementProblem
    optimum: int


def _table(caps: dict[int, Sequence[tuple[int, float]]]) -> CapacityModel:
    """A capacity model from (max adapters, capacity tokens/s) entries per rank class."""
    table = {R: tuple(GpuConfig(R, n, min(n, 16), c) for n, c in entries) for R, entries in caps.items()}
    return CapacityModel(load_profile(PROFILE), LengthSpec(), PoissonArrivals(), ServerDefaults(), TOKENS_PER_REQUEST,
                         table)


def _problem(name: str, loads: Sequence[float], ranks: Sequence[int], model: CapacityModel, optimum: int,
             objective: Objective = Objective.MIN_GPUS, gpus: int | None = None) -> KnownProblem:
    items = sorted((Item.of(f"a{i}", r, x / TOKENS_PER_REQUEST, 1.0, x) for i, (x, r) in enumerate(zip(loads, ranks))),
                   key=lambda it: (-it.units, -it.rank, it.adapter_id))
    return KnownProblem(name, PlacementProblem(tuple(items), model, TablePredictor(model), objective, gpus, 10.0, 0, 1),
                        optimum)


def known_problems() -> list[KnownProblem]:
    """Small problems whose optimum is known by construction."""
    flat = _table({8: [(4, 1000.0), (8, 1000.0)]})
    falling = _table({8: [(1, 1000.0), (2, 900.0), (4, 800.0), (8, 600.0)],
                      32: [(1, 800.0), (2, 700.0), (4, 600.0), (8, 400.0)]})
    return [
        # six halves of a GPU: pairs fill three GPUs exactly
        _problem("pairs", [500.0] * 6, [8] * 6, flat, 3),
        # the load would fit two GPUs but the table holds at most 8 adapters a GPU: 20 light adapters need 3
        _problem("count-limited", [10.0] * 20, [8] * 20, flat, 3),
        # capacity falls with the count: 1,200 tokens/s on six adapters fit no one GPU (600 for up to eight),
        # but two: 300 + 300 + 200 (800 for up to four) and 200 + 100 + 100
        _problem("falling-capacity", [300.0, 300.0, 200.0, 200.0, 100.0, 100.0], [8] * 6, falling, 2),
        # a rank-32 adapter puts its GPU on the smaller rank-32 table: 500 + 100 there (700 for two), and
        # 400 + 300 on a rank-8 GPU (900 for two)
        _problem("mixed-ranks", [500.0, 400.0, 300.0, 100.0], [32, 8, 8, 8], falling, 2),
        # every adapter exactly at one GPU's single-adapter capacity: one GPU each
        _problem("one-per-gpu", [1000.0] * 4, [8] * 4, falling, 4),
        # min_latency on a budget of 3: six equal halves spread two per GPU
        _problem("balance", [400.0] * 6, [8] * 6, flat, 3, Objective.MIN_LATENCY, 3),
    ]


def check_solver(solver: Solver, problems: Sequence[KnownProblem] | None = None) -> None:
    """Check ``solver`` against the contract on ``problems`` (default ``known_problems()``)."""
    assert isinstance(solver, Solver), f"{solver!r} is not a packer.solvers.Solver"
    assert isinstance(getattr(solver, "name", None), str) and solver.name, "a solver needs a name"
    for case in problems if problems is not None else known_problems():
        p = case.problem
        where = f"{solver.name} on {case.name!r}"
        try:
            a = solver.solve(p)
        except InputError as e:  # a solver may refuse an objective it does not support, saying so
            if p.objective is not Objective.MIN_GPUS and e.field == "objective":
                continue
            raise AssertionError(f"{where}: refused a valid problem: {e}") from None
        assert isinstance(a, Assignment), f"{where}: solve() returned {type(a).__name__}, not an Assignment"
        assert isinstance(a.status, SolveStatus), f"{where}: status {a.status!r} is not a SolveStatus"
        assert a.status is not SolveStatus.INFEASIBLE, f"{where}: a feasible problem answered infeasible"
        if a.items is not None:  # the solver's own replica splits: each adapter's shares still carry its rate
            _check_shares(p, a.items, where)
            p = a.placed_problem(p)
        placed = sorted(i for b in a.bins for i in b)
        assert placed == list(range(len(p.items))), f"{where}: items placed {placed}, not each once"
        assert len(a.configs) == len(a.bins), f"{where}: {len(a.configs)} configs for {len(a.bins)} GPUs"
        for g, members in enumerate(a.bins):
            assert members, f"{where}: GPU {g} is empty"
            assert bin_config(p, members) is not None, f"{where}: GPU {g} {list(members)} exceeds the capacity table"
            top = rank_class(max(p.items[i].rank for i in members))
            assert a.configs[g].max_lora_rank >= top, f"{where}: GPU {g}'s config is below its rank class {top}"
        if p.objective is Objective.MIN_GPUS:
            assert a.num_gpus >= case.optimum, f"{where}: {a.num_gpus} GPUs, below the optimum {case.optimum}"
            if a.lower_bound is not None:
                assert a.lower_bound <= case.optimum + 1e-9, f"{where}: bound {a.lower_bound} above the optimum"
            if a.status is SolveStatus.OPTIMAL:
                assert a.num_gpus == case.optimum, f"{where}: 'optimal' with {a.num_gpus} GPUs, optimum {case.optimum}"
        else:
            assert a.num_gpus <= (p.gpus or math.inf), f"{where}: {a.num_gpus} GPUs on a budget of {p.gpus}"
        again = solver.solve(case.problem)
        assert again.bins == a.bins and again.items == a.items, f"{where}: two solves of the same problem differ"


def _check_shares(problem: PlacementProblem, items: Sequence[Item], where: str) -> None:
    """A solver's re-split items carry, per adapter, the rank, rate and load of the problem's items."""
    def totals(its):
        out: dict[str, list[float]] = {}
        for it in its:
            t = out.setdefault(it.adapter_id, [it.rank, 0.0, 0.0, 0.0])
            assert t[0] == it.rank, f"{where}: adapter {it.adapter_id} has two ranks"
            t[1] += it.rate
            t[2] += it.share
            t[3] += it.load_tps
        return out

    want, got = totals(problem.items), totals(items)
    assert set(want) == set(got), f"{where}: its items cover adapters {sorted(got)}, not {sorted(want)}"
    for aid, (rank, rate, share, load) in want.items():
        g = got[aid]
        assert g[0] == rank and math.isclose(g[1], rate, rel_tol=1e-9, abs_tol=1e-12) and math.isclose(
            g[2], share, rel_tol=1e-9) and math.isclose(g[3], load, rel_tol=1e-9, abs_tol=1e-9), \
            f"{where}: adapter {aid}'s shares carry rank/rate/share/load {g}, not {[rank, rate, share, load]}"


def _query(rate_per_adapter: float, n: int = 4, max_loras: int = 4, rank: int = 8) -> GpuQuery:
    return GpuQuery(PROFILE, ServerConfig(max_loras=max_loras, max_lora_rank=rank), (8,) * n, (rate_per_adapter,) * n)


def check_predictor(predictor: Predictor) -> None:
    """Check ``predictor`` against the contract on the shipped Llama profile."""
    assert isinstance(predictor, Predictor), f"{predictor!r} is not a packer.predictors.Predictor"
    d = predictor.describe()
    assert isinstance(d, dict) and d.get("name") == predictor.name, f"describe() must name the backend, got {d}"
    json.dumps(d, default=str)  # a cache key: plain data
    light, heavy, no_start = _query(0.2), _query(30.0), _query(0.2, max_loras=4000, rank=512)
    name = predictor.name
    p = predictor.predict(light)
    assert isinstance(p, Prediction), f"{name}: predict() returned {type(p).__name__}, not a Prediction"
    assert p.memory_error is None and not p.starved, f"{name}: 4 adapters at 0.2 req/s should keep up: {p}"
    assert p.throughput_tps is None or p.throughput_tps <= 1.5 * p.offered_tps, f"{name}: serves more than offered: {p}"
    q = predictor.predict(heavy)
    assert q.memory_error is None and q.starved, f"{name}: 4 adapters at 30 req/s each should starve: {q}"
    m = predictor.predict(no_start)
    assert m.memory_error, f"{name}: 4,000 slots at rank 512 cannot start: {m}"
    assert predictor.predict(light) == p, f"{name}: the same query gave two answers"
    assert predictor.predict_many([light, heavy, no_start]) == [p, q, m], f"{name}: predict_many differs from predict"
