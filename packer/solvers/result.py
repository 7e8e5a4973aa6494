"""What ``packer.solve`` returns: a placement, per-GPU vLLM flags and predictions, and the proof."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..files import json_ready
from ..model import Slo
from ..predictors.slo import SloCheck
from .base import Objective, SolveStatus

__all__ = ["AdapterShare", "GpuPlan", "Move", "ReplanSummary", "SolveResult", "PlannedGpu", "LoadedPlan", "read_plan", "PLAN_FILE"]

PLAN_FILE = "plan.json"  # what ``packer solve --export DIR`` writes next to the deployable files


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
    verified: bool | None         # the twin says it starts, keeps up and meets the SLO (None: not verified)
    predicted_ttft_p99_ms: float | None = None
    slo: tuple[SloCheck, ...] = ()  # each latency target against the twin's prediction (the predictor's unverified)

    def vllm_flags(self) -> str:
        return (f"--enable-lora --max-loras {self.max_loras} --max-cpu-loras {self.max_cpu_loras} "
                f"--max-lora-rank {self.max_lora_rank}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["adapters"] = [asdict(a) for a in self.adapters]
        return json_ready(d)


@dataclass(frozen=True)
class Move:
    """An adapter (replica) that leaves ``from_gpu`` (its index in the current plan) for ``to_gpu`` (its
    index in the new plan)."""

    adapter: str
    from_gpu: int
    to_gpu: int


@dataclass(frozen=True)
class ReplanSummary:
    """How a re-plan differs from the plan it started from. New-plan GPU ``g`` was the current plan's
    GPU ``gpu_origin[g]`` (None: a server added); the kept GPUs come first, in their old order."""

    current_plan: str
    moves: tuple[Move, ...]
    gpu_origin: tuple[int | None, ...]
    servers_added: tuple[int, ...]      # new-plan indices
    servers_removed: tuple[int, ...]    # current-plan indices (left empty)
    adapters_added: tuple[str, ...]
    adapters_removed: tuple[str, ...]
    split: tuple[str, ...] = ()         # adapters split instead of moved (max_moves reached)
    max_moves: int | None = None
    moves_lower_bound: int | None = None  # exact solvers: no re-plan with this many GPUs moves fewer

    def to_dict(self) -> dict:
        d = asdict(self)
        d["moves"] = [asdict(m) for m in self.moves]
        return json_ready(d)


def _placement(gpus) -> dict[str, list[tuple[int, float]]]:
    """Adapter id -> [(GPU index, share)] over GPUs that each have ``adapters`` with ``id`` and ``share``."""
    out: dict[str, list[tuple[int, float]]] = {}
    for g, plan in enumerate(gpus):
        for a in plan.adapters:
            out.setdefault(a.id, []).append((g, a.share))
    return out


@dataclass(frozen=True, kw_only=True)
class SolveResult:
    """A placement and how good it is.

    ``lower_bound`` and ``gap`` are on the capacity model: no placement keeps every GPU within the
    model with fewer than ``lower_bound`` GPUs (``min_gpus``), or with a lower worst utilisation
    (``min_latency``); ``gap`` = (objective - bound) / objective. ``bound_method`` names what proved
    the bound: every solver's ``min_gpus`` result carries the best of the combinatorial bounds, the
    column-generation bound and the solver's own.

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
    profile: str | None = None        # the profile (model x GPU) the plan was made for
    replan: ReplanSummary | None = None  # moves and servers added/removed (re-planning from a current plan)
    slo: Slo | None = None  # the latency targets every GPU was planned and verified against
    objective_metric: str = ""  # what objective_value counts: "gpus", "utilisation", "ttft_p99_ms", "itl_mean_ms"
    # the capacity model the plan packed against: rank class -> ((adapter count, sustainable tokens/s), ...)
    capacity_curve: dict[int, tuple[tuple[int, float], ...]] = field(default_factory=dict, compare=False, hash=False)
    # what proved ``lower_bound``: "combinatorial" (packer.solvers.bounds), "column_generation" (the
    # configuration LP, packer.solvers.colgen), an exact backend's own search ("cpsat", "milp") or
    # "split_combinatorial" (valid for every replica split: greedy-split); None: no bound
    bound_method: str | None = None

    @property
    def max_predicted_itl_ms(self) -> float | None:
        vals = [g.predicted_itl_ms for g in self.gpus if g.predicted_itl_ms is not None and math.isfinite(g.predicted_itl_ms)]
        return max(vals) if vals else None

    def placement(self) -> dict[str, list[tuple[int, float]]]:
        """Adapter id -> [(GPU index, share)]."""
        return _placement(self.gpus)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("objective", "num_gpus", "objective_value", "lower_bound", "gap", "solver",
                                           "predictor", "verified", "wall_seconds", "capacity_seconds",
                                           "solver_seconds", "verify_seconds", "repaired_items", "gpu_budget",
                                           "short_by", "message", "phases", "seed", "solver_stats", "verified_with",
                                           "profile", "objective_metric", "bound_method")}
        d["warnings"] = list(self.warnings)
        d["status"] = self.status.value
        d["max_predicted_itl_ms"] = self.max_predicted_itl_ms
        d["gpus"] = [g.to_dict() for g in self.gpus]
        d["replan"] = None if self.replan is None else self.replan.to_dict()
        d["slo"] = None if self.slo is None else self.slo.model_dump(exclude_none=True)
        d["capacity_curve"] = {str(r): [[n, c] for n, c in pts] for r, pts in sorted(self.capacity_curve.items())}
        return json_ready(d)


# ---- reading a plan back (re-planning, reports) -------------------------------------------------

@dataclass(frozen=True)
class PlannedGpu:
    """One GPU of a plan read back from JSON: its adapters (with shares) and its LoRA flags."""

    adapters: tuple[AdapterShare, ...]
    max_loras: int
    max_cpu_loras: int
    max_lora_rank: int


@dataclass(frozen=True)
class LoadedPlan:
    """A plan as ``packer solve --json`` printed it (or ``--export`` wrote it): its GPUs, checked, and
    the whole JSON object in ``data`` (predictions, bound, gap, warnings) for reports."""

    path: str
    profile: str | None
    gpus: tuple[PlannedGpu, ...]
    data: dict = field(compare=False, hash=False)

    def placement(self) -> dict[str, list[tuple[int, float]]]:
        """Adapter id -> [(GPU index, share)], as ``SolveResult.placement``."""
        return _placement(self.gpus)


def read_plan(path: Any) -> LoadedPlan:
    """The plan in ``path``: the JSON ``packer solve --json`` printed, or an ``--export`` directory
    (its ``plan.json``). Raises ``InputError`` (field ``plan``) naming the file, the entry and the fix."""
    from pathlib import Path

    from .. import files
    from ..errors import InputError

    p = Path(path)
    if p.is_dir():
        if not (p / PLAN_FILE).is_file():
            raise InputError("plan", f"{p}: a directory without {PLAN_FILE}; give the JSON `packer solve --json` "
                             "printed, or a directory `packer solve --export` wrote (re-export it if it predates "
                             f"{PLAN_FILE})")
        p = p / PLAN_FILE
    data = files.read_json(p, field="plan")

    def bad(where: str, problem: str) -> InputError:
        return InputError("plan", f"{p}: {where}: {problem}; give the JSON `packer solve --json` printed")

    if not isinstance(data, dict) or not isinstance(data.get("gpus"), list):
        raise bad("top level", "expected an object with a list 'gpus'")

    def integer(v: Any, where: str, low: int = 1) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise bad(where, f"expected an integer >= {low}, got {v!r}")
        return v

    def number(v: Any, where: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise bad(where, f"expected a finite number >= 0, got {v!r}")
        return float(v)

    gpus: list[PlannedGpu] = []
    for g, gpu in enumerate(data["gpus"]):
        w = f"gpus[{g}]"
        if not isinstance(gpu, dict) or not isinstance(gpu.get("adapters"), list):
            raise bad(w, "expected an object with a list 'adapters'")
        shares: list[AdapterShare] = []
        seen: set[str] = set()
        for j, a in enumerate(gpu["adapters"]):
            wa = f"{w}.adapters[{j}]"
            if not isinstance(a, dict) or not isinstance(a.get("id"), str) or not a["id"]:
                raise bad(wa, "expected an object with a non-empty string 'id'")
            if a["id"] in seen:
                raise bad(wa, f"adapter {a['id']!r} is listed twice on this GPU")
            seen.add(a["id"])
            share = number(a.get("share", 1.0), f"{wa}.share")
            if not 0 < share <= 1 + 1e-9:
                raise bad(f"{wa}.share", f"expected a share in (0, 1], got {share!r}")
            shares.append(AdapterShare(a["id"], integer(a.get("rank"), f"{wa}.rank"),
                                       number(a.get("rate", 0.0), f"{wa}.rate"), min(share, 1.0)))
        n = len(shares)
        max_loras = integer(gpu.get("max_loras", max(n, 1)), f"{w}.max_loras")
        gpus.append(PlannedGpu(tuple(shares), max_loras, integer(gpu.get("max_cpu_loras", max(max_loras, n)),
                                                                  f"{w}.max_cpu_loras"),
                               integer(gpu.get("max_lora_rank", max((a.rank for a in shares), default=8)),
                                       f"{w}.max_lora_rank")))
    profile = data.get("profile")
    if profile is not None and not isinstance(profile, str):
        raise bad("profile", f"expected a profile name, got {profile!r}")
    return LoadedPlan(str(p), profile, tuple(gpus), data)
