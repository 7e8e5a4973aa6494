"""Domain model: adapters, workloads, server configs and scenarios, validated at the boundary.

Everything here is a frozen pydantic model; unknown fields are rejected so that a typo in a
scenario file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Adapter",
    "LengthSpec",
    "PoissonArrivals",
    "BurstyArrivals",
    "TraceArrivals",
    "ArrivalSpec",
    "ServerConfig",
    "Workload",
    "Scenario",
    "ServerDefaults",
    "PlacementWorkload",
    "parse_scenario",
    "parse_model",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Adapter(_Frozen):
    """One LoRA adapter: its id, its rank and its mean request rate (requests/s)."""

    id: str = Field(min_length=1)
    rank: int = Field(gt=0, le=512)
    rate: float = Field(ge=0.0)

    @field_validator("rate", mode="before")
    @classmethod
    def _finite_rate(cls, v):
        if isinstance(v, (int, float)) and not math.isfinite(v):
            raise ValueError("must be a finite number of requests per second (got NaN or inf)")
        return v


class LengthSpec(_Frozen):
    """Request lengths in tokens.

    ``distribution="sharegpt"`` (default) draws prompt and output lengths from a log-normal shape
    matching the ShareGPT pool of the measurements, truncated like its filter (prompt in
    [min_input, max_input], prompt + output <= max_total) and re-centred so that the *truncated*
    means equal ``input_mean`` / ``output_mean``. ``distribution="azure-conv"`` does the same with
    the shape of the Azure conversation trace (longer tails, correlated prompt and output).
    ``distribution="fixed"`` gives every request exactly the means (rounded).
    ``distribution="trace"`` takes lengths from the arrival trace (only with trace arrivals).
    """

    input_mean: float = Field(default=222.7, gt=0)
    output_mean: float = Field(default=196.1, gt=0)
    distribution: Literal["sharegpt", "azure-conv", "fixed", "trace"] = "sharegpt"
    min_input: int = Field(default=4, ge=1)
    max_input: int = Field(default=1024, ge=1)
    max_total: int = Field(default=2048, ge=2)

    @model_validator(mode="after")
    def _consistent(self) -> "LengthSpec":
        if self.min_input > self.max_input:
            raise ValueError(f"min_input ({self.min_input}) must be <= max_input ({self.max_input})")
        if self.distribution != "trace":
            if not (self.min_input <= self.input_mean <= self.max_input):
                raise ValueError(
                    f"input_mean={self.input_mean} must lie in [min_input={self.min_input}, "
                    f"max_input={self.max_input}]")
            if self.input_mean + self.output_mean > self.max_total:
                raise ValueError(
                    f"input_mean + output_mean = {self.input_mean + self.output_mean:g} exceeds "
                    f"max_total={self.max_total}; lower the means or raise max_total")
        return self


class PoissonArrivals(_Frozen):
    """Each adapter is an independent Poisson source at its own rate."""

    kind: Literal["poisson"] = "poisson"


class BurstyArrivals(_Frozen):
    """Unpredictable traffic: per-adapter gamma inter-arrivals with coefficient of variation ``cv``
    (cv=1 is Poisson) and a global rate multiplier redrawn every ``period_s`` seconds from a
    log-normal with standard deviation ``multiplier_sigma`` (mean 1, so the long-run rate is kept)."""

    kind: Literal["bursty"] = "bursty"
    cv: float = Field(default=2.0, gt=0)
    period_s: float = Field(default=300.0, gt=0)
    multiplier_sigma: float = Field(default=0.5, ge=0)


class TraceArrivals(_Frozen):
    """Replay of a real arrival trace (shipped: ``azure-conv``, ``azure-code``; or a CSV path with
    ``arrived_at`` and optionally ``num_prefill_tokens``/``num_decode_tokens``). Requests are mapped
    to adapters with probability proportional to their rates; with ``scale_to_rates`` the trace's
    time axis is stretched so that its mean rate equals the adapters' total rate."""

    kind: Literal["trace"] = "trace"
    trace: str = "azure-conv"
    scale_to_rates: bool = True
    loop: bool = True


ArrivalSpec = Annotated[Union[PoissonArrivals, BurstyArrivals, TraceArrivals], Field(discriminator="kind")]


class ServerConfig(_Frozen):
    """vLLM server settings that matter for multi-LoRA serving."""

    max_loras: int = Field(gt=0, le=4096)
    max_cpu_loras: int | None = Field(default=None, gt=0)
    max_lora_rank: int = Field(gt=0, le=512)
    max_num_seqs: int = Field(default=256, gt=0, le=65536)
    max_num_batched_tokens: int = Field(default=2048, gt=0, le=1 << 20)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    enable_lora: bool = True

    @model_validator(mode="after")
    def _cpu_cache(self) -> "ServerConfig":
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras}); "
                "vLLM requires the CPU cache to hold at least the GPU slots")
        return self


def _check_adapters_and_lengths(adapters, lengths: LengthSpec, arrivals) -> None:
    """Unique adapter ids; trace lengths only with trace arrivals."""
    seen: set[str] = set()
    for i, a in enumerate(adapters):
        if a.id in seen:
            raise ValueError(f"adapters[{i}].id: duplicate adapter id {a.id!r}; ids must be unique")
        seen.add(a.id)
    if lengths.distribution == "trace" and not isinstance(arrivals, TraceArrivals):
        raise ValueError('lengths.distribution="trace" needs trace arrivals ({"kind": "trace", ...})')


class Workload(_Frozen):
    """Adapters and their traffic."""

    adapters: tuple[Adapter, ...] = Field(min_length=1)
    lengths: LengthSpec = LengthSpec()
    arrivals: ArrivalSpec = PoissonArrivals()
    duration_s: float = Field(default=3600.0, gt=0, le=30 * 86400)
    seed: int = Field(default=0, ge=0)
    # Simulated before the measured window [warmup_s, warmup_s + duration_s): the results describe the
    # window only, in steady state (adapters loaded, queues settled, in-flight work at both ends).
    warmup_s: float = Field(default=0.0, ge=0, le=30 * 86400)

    @field_validator("arrivals", mode="before")
    @classmethod
    def _arrivals_shorthand(cls, v):
        if isinstance(v, str):
            return {"kind": v}
        return v

    @model_validator(mode="after")
    def _checks(self) -> "Workload":
        _check_adapters_and_lengths(self.adapters, self.lengths, self.arrivals)
        return self

    @property
    def total_rate(self) -> float:
        return float(sum(a.rate for a in self.adapters))

    @property
    def horizon_s(self) -> float:
        """Simulated seconds: the warm-up and the measured window."""
        return self.warmup_s + self.duration_s


class Scenario(_Frozen):
    """Everything one twin run needs: a profile name, a server config and a workload."""

    profile: str
    server: ServerConfig
    workload: Workload

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, data):
        # The scenario file format is flat (adapters, lengths, arrivals, duration_s, warmup_s and seed
        # at the top level, as in the docs); the nested form is accepted too.
        if isinstance(data, dict) and "workload" not in data:
            data = dict(data)
            wl = {k: data.pop(k) for k in ("adapters", "lengths", "arrivals", "duration_s", "warmup_s", "seed")
                  if k in data}
            data["workload"] = wl
        return data

    @model_validator(mode="after")
    def _ranks_fit(self) -> "Scenario":
        for i, a in enumerate(self.workload.adapters):
            if a.rank > self.server.max_lora_rank:
                raise ValueError(
                    f"adapters[{i}].rank: adapter {a.id!r} has rank {a.rank} above "
                    f"server.max_lora_rank={self.server.max_lora_rank}; raise max_lora_rank to >= {a.rank}")
        return self

    @property
    def cpu_loras(self) -> int:
        """Effective CPU adapter cache size (vLLM's default is max_loras; packer's default is all served)."""
        if self.server.max_cpu_loras is not None:
            return self.server.max_cpu_loras
        return max(self.server.max_loras, len(self.workload.adapters))


class ServerDefaults(_Frozen):
    """Server settings a placement keeps the same on every GPU (the solver picks the LoRA flags).

    The defaults are those of the calibration runs (``max_num_seqs=2048``, a 2048-token budget)."""

    max_num_seqs: int = Field(default=2048, gt=0, le=65536)
    max_num_batched_tokens: int = Field(default=2048, gt=0, le=1 << 20)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)


class PlacementWorkload(_Frozen):
    """A placement request: a profile and the adapters to serve, with their traffic.

    ``objective`` is ``min_gpus`` (the fewest GPUs that keep up) or ``min_latency`` (the lowest worst
    GPU utilisation on ``gpus`` GPUs); ``gpus`` is an optional GPU budget.
    """

    profile: str
    adapters: tuple[Adapter, ...] = Field(min_length=1)
    lengths: LengthSpec = LengthSpec()
    arrivals: ArrivalSpec = PoissonArrivals()
    server: ServerDefaults = ServerDefaults()
    objective: Literal["min_gpus", "min_latency"] = "min_gpus"
    gpus: int | None = Field(default=None, gt=0, le=100_000)

    _arrivals_shorthand = field_validator("arrivals", mode="before")(Workload._arrivals_shorthand.__func__)

    @model_validator(mode="after")
    def _checks(self) -> "PlacementWorkload":
        _check_adapters_and_lengths(self.adapters, self.lengths, self.arrivals)
        return self

    @property
    def total_rate(self) -> float:
        return float(sum(a.rate for a in self.adapters))


def parse_scenario(data) -> Scenario:
    """A ``Scenario`` from a dict (scenario-file format) or a ``Scenario``; errors become ``InputError``."""
    if isinstance(data, Scenario):
        return data
    return parse_model(Scenario, data)


def parse_model(cls, data):
    """Validate ``data`` as ``cls``; the first problem becomes one ``InputError`` line naming the field."""
    from pydantic import ValidationError

    from .errors import InputError

    if not isinstance(data, dict):
        raise InputError("", f"expected a JSON object for {cls.__name__}, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = _field_path(err.get("loc", ()))
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if err.get("type") == "missing" or isinstance(value, (dict, list)) else f" (got {value!r})"
        if err.get("type") == "extra_forbidden":
            msg, shown = "unknown field; check the spelling against the documented fields", ""
        more = f" [+{e.error_count() - 1} more]" if e.error_count() > 1 else ""
        raise InputError(loc, f"{msg}{shown}{more}") from None


def _field_path(loc) -> str:
    parts: list[str] = []
    for p in loc:
        if p == "workload" or (isinstance(p, str) and p in ("poisson", "bursty", "trace")):
            continue  # the file format is flat and the arrival kind is given by "kind"
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]" if parts else f"[{p}]"]
        else:
            parts.append(str(p))
    return ".".join(parts)
