"""What ``packer.solve`` returns: a placement, per-GPU vLLM flags and predictions, and the proof."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..files import json_ready
from .base import Objective, SolveStatus

__all__ = ["AdapterShare", "GpuPlan", "SolveResult"]


@dataclass(frozen=True)
class AdapterShare:
    """An adapter on one GPU: the requests/s it gets there and that share of its total rate."""

    id: str
    rank: int
    rate: float
    share: float


@dataclass(frozen=True)
class GpuPlan:
    """One GPU: its adapters, its vLLM LoRA flags, and what the predictor and the twin say."""

    adapters: tuple[AdapterShare, ...]
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int
    offered_tps: float            # token load offered to this GPU
    capacity_tps: float           # what the capacity model says it sustains
    utilisation: float            # offered / capacity
    predicted_throughput_tps: float | None
    predicted_itl_ms: float | None
    starved: bool
    memory_error: str | None
    verified: bool | None         # the twin says it starts and keeps up (None: not verified)

    def vllm_flags(self) -> str:
        return (f"--enable-lora --max-loras {self.max_loras} --max-cpu-loras {self.max_cpu_loras} "
                f"--max-lora-rank {self.max_lora_rank}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adapters"] = [asdict(a) for a in self.adapters]
        return json_ready(d)


@dataclass(frozen=True, kw_only=True)
class SolveResult:
    """A placement and how good it is.

    ``lower_bound`` and ``gap`` are on the capacity model: no placement keeps every GPU within the
    model with fewer than ``lower_bound`` GPUs (``min_gpus``), or with a lower worst utilisation
    (``min_latency``); ``gap`` = (objective - bound) / objective.

    ``phases`` splits ``solver_seconds`` into the solver's own phases (seconds, in order; e.g. the
    exact solvers' ``warm_start``, ``import``, ``model_build``, ``search``, ``answer``). ``warnings``
    are things the caller should know about the answer, one line each. ``solver_stats`` keeps what the
    solver reported about its own run (its bounds, backend, predictor calls); ``seed`` is the seed the
    solve ran with.
    """

    status: SolveStatus
    objective: Objective
    num_gpus: int
    objective_value: float | None
    lower_bound: float | None
    gap: float | None
    solver: str
    predictor: str
    verified: bool
    gpus: tuple[GpuPlan, ...]
    wall_seconds: float
    capacity_seconds: float
    solver_seconds: float
    verify_seconds: float
    repaired_items: int
    gpu_budget: int | None
    short_by: int | None          # GPUs beyond the budget that the workload needs (None: within it)
    message: str = ""
    phases: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    warnings: tuple[str, ...] = ()
    seed: int = 0
    solver_stats: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    verified_with: str | None = None  # the predictor that verified each GPU (twin, or vllm on real GPUs)

    @property
    def max_predicted_itl_ms(self) -> float | None:
        vals = [g.predicted_itl_ms for g in self.gpus if g.predicted_itl_ms is not None and math.isfinite(g.predicted_itl_ms)]
        return max(vals) if vals else None

    def placement(self) -> dict[str, list[tuple[int, float]]]:
        """Adapter id -> [(GPU index, share)]."""
        out: dict[str, list[tuple[int, float]]] = {}
        for g, plan in enumerate(self.gpus):
            for a in plan.adapters:
                out.setdefault(a.id, []).append((g, a.share))
        return out

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("objective", "num_gpus", "objective_value", "lower_bound", "gap", "solver",
                                           "predictor", "verified", "wall_seconds", "capacity_seconds",
                                           "solver_seconds", "verify_seconds", "repaired_items", "gpu_budget",
                                           "short_by", "message", "phases", "seed", "solver_stats", "verified_with")}
        d["warnings"] = list(self.warnings)
        d["status"] = self.status.value
        d["max_predicted_itl_ms"] = self.max_predicted_itl_ms
        d["gpus"] = [g.to_dict() for g in self.gpus]
        return json_ready(d)
