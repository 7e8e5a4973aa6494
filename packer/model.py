"""Domain model: adapters, workloads, server configs and scenarios, validated at the boundary.

Everything here is a frozen pydantic model; unknown fields are rejected so that a typo in a
scenario file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

if TYPE_CHECKING:
    from .profile import Profile

__all__ = [
    "Adapter",
    "Slo",
    "SLO_METRICS",
    "LengthSpec",
    "EmpiricalLengths",
    "PoissonArrivals",
    "BurstyArrivals",
    "TraceArrivals",
    "ArrivalSpec",
    "ServerConfig",
    "Workload",
    "Scenario",
    "ServerDefaults",
    "VLLM_MAX_LORA_RANKS",
    "rank_class",
    "PlacementWorkload",
    "parse_scenario",
    "parse_model",
    "MAX_ADAPTER_RATE",
    "MAX_TWIN_REQUESTS",
    "MAX_CLOCK_PERIODS",
    "MAX_REQUEST_TOKENS",
    "MAX_FLEET_GPUS",
    "BURSTY_RANGES",
    "UNITS_HINT",
    "check_twin_requests",
    "gpu_token_ceiling",
    "check_placement_load",
]

# Bounds that catch unit mistakes before anything is allocated. A twin run keeps about 120 bytes per
# request at its peak (the request arrays, their generation and the kernel's per-request state,
# measured on 1-5 million requests), so 20 million requests stay under about 2.5 GB.
MAX_TWIN_REQUESTS = 20_000_000
# One adapter at ten million requests per second is beyond any fleet packer plans (a GPU serves
# hundreds); a larger number is a unit mistake (tokens/s for req/s) or a typo.
MAX_ADAPTER_RATE = 1e7
# Tokens of one request: beyond any model's context window, and the twin keeps lengths as int32.
MAX_REQUEST_TOKENS = 1 << 21
# Rate periods of a bursty run's operational clock (one random multiplier each).
MAX_CLOCK_PERIODS = 1_000_000
# The largest fleet a placement may ask for (PlacementWorkload.gpus).
MAX_FLEET_GPUS = 100_000
UNITS_HINT = "rates are requests per second, not tokens per second"


class _Frozen(BaseModel):
    # allow_inf_nan=False: NaN and infinities, also as strings ("inf", "nan", "1e400"), are refused by
    # every float field before its range checks run.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Adapter(_Frozen):
    """One LoRA adapter: its id, its rank and its mean request rate (requests/s)."""

    id: str = Field(min_length=1)
    rank: int = Field(gt=0, le=512)
    rate: float = Field(ge=0.0)

    @field_validator("rate")
    @classmethod
    def _plausible_rate(cls, v: float) -> float:
        if v > MAX_ADAPTER_RATE:
            raise ValueError(f"must be at most {MAX_ADAPTER_RATE:.0e} requests per second; {UNITS_HINT}")
        return v


class EmpiricalLengths(_Frozen):
    """A measured length distribution (e.g. from a request log): the quantiles of prompt and output
    tokens at evenly spaced probabilities 0, 1/(K-1), ..., 1 (so ``prompt[0]`` is the minimum and
    ``prompt[-1]`` the maximum), and ``rho``, the correlation of the two lengths' normal scores (a
    Gaussian copula: long prompts that come with long answers stay together)."""

    prompt: tuple[int, ...] = Field(min_length=2, max_length=10_001)
    output: tuple[int, ...] = Field(min_length=2, max_length=10_001)
    rho: float = Field(default=0.0, ge=-1.0, le=1.0)

    @field_validator("prompt", "output")
    @classmethod
    def _quantiles(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v[0] < 1:
            raise ValueError(f"quantiles are token counts of at least 1 (got {v[0]})")
        if v[-1] > MAX_REQUEST_TOKENS:
            raise ValueError(f"must be at most {MAX_REQUEST_TOKENS:,} tokens per request (got {v[-1]:,})")
        for i in range(1, len(v)):
            if v[i] < v[i - 1]:
                raise ValueError(f"quantiles must not decrease (entry {i}: {v[i]} after {v[i - 1]})")
        return v

    @model_validator(mode="after")
    def _same_grid(self) -> "EmpiricalLengths":
        if len(self.prompt) != len(self.output):
            raise ValueError(f"prompt and output need the same number of quantiles (got {len(self.prompt)} "
                             f"and {len(self.output)})")
        return self

    @staticmethod
    def quantile_mean(q: tuple[int, ...]) -> float:
        """The mean of the piecewise-linear quantile function through ``q`` (what the twin draws)."""
        return (sum(q) - 0.5 * (q[0] + q[-1])) / (len(q) - 1)

    @property
    def means(self) -> tuple[float, float]:
        """(mean prompt, mean output) tokens of the distribution."""
        return self.quantile_mean(self.prompt), self.quantile_mean(self.output)


# The means an empirical distribution is given must be its own, up to rounding.
_EMPIRICAL_MEAN_TOLERANCE = 0.01


class LengthSpec(_Frozen):
    """Request lengths in tokens.

    ``distribution="sharegpt"`` (default) draws prompt and output lengths from a log-normal shape
    matching the ShareGPT pool of the measurements, truncated like its filter (prompt in
    [min_input, max_input], prompt + output <= max_total) and re-centred so that the *truncated*
    means equal ``input_mean`` / ``output_mean``. ``distribution="azure-conv"`` does the same with
    the shape of the Azure conversation trace (longer tails, correlated prompt and output).
    ``distribution="fixed"`` gives every request exactly the means (rounded).
    ``distribution="trace"`` takes lengths from the arrival trace (only with trace arrivals).
    ``distribution="empirical"`` draws from the measured quantiles in ``empirical`` (``packer
    workload from-log`` writes them); its means are the quantiles' (filled in when left out), and
    its prompt quantiles must lie in [min_input, max_input].
    """

    input_mean: float = Field(default=222.7, gt=0)
    output_mean: float = Field(default=196.1, gt=0)
    distribution: Literal["sharegpt", "azure-conv", "fixed", "trace", "empirical"] = "sharegpt"
    min_input: int = Field(default=4, ge=1)
    max_input: int = Field(default=1024, ge=1)
    max_total: int = Field(default=2048, ge=2)
    empirical: EmpiricalLengths | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # Without an empirical distribution the dump is what it was before the field existed: the cache
        # keys of capacity tables and sweeps (which hash it) stay valid.
        d = handler(self)
        if isinstance(d, dict) and d.get("empirical") is None:
            d.pop("empirical", None)
        return d

    @model_validator(mode="before")
    @classmethod
    def _empirical_means(cls, data):
        if isinstance(data, dict) and data.get("distribution") == "empirical" and data.get("empirical") is not None:
            emp = data["empirical"]
            if not isinstance(emp, EmpiricalLengths):
                try:
                    emp = EmpiricalLengths.model_validate(emp)
                except Exception:
                    return data  # the field's own validation reports it
            data = dict(data)
            for field, mean in zip(("input_mean", "output_mean"), emp.means):
                data.setdefault(field, mean)
        return data

    @field_validator("min_input", "max_input", "max_total")
    @classmethod
    def _plausible_tokens(cls, v: int) -> int:
        if v > MAX_REQUEST_TOKENS:
            raise ValueError(f"must be at most {MAX_REQUEST_TOKENS:,} tokens per request (beyond any model's "
                             "context); lengths are tokens per request")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "LengthSpec":
        if self.min_input > self.max_input:
            raise ValueError(f"min_input ({self.min_input}) must be <= max_input ({self.max_input})")
        if self.distribution == "empirical":
            self._check_empirical()
        elif self.empirical is not None:
            raise ValueError(f"empirical quantiles go with distribution='empirical' (got "
                             f"distribution={self.distribution!r}); drop them or set the distribution")
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

    def _check_empirical(self) -> None:
        emp = self.empirical
        if emp is None:
            raise ValueError("distribution='empirical' needs 'empirical': {\"prompt\": [quantiles], \"output\": "
                             "[quantiles], \"rho\": r} (packer workload from-log writes it)")
        if emp.prompt[0] < self.min_input or emp.prompt[-1] > self.max_input:
            raise ValueError(f"empirical prompt quantiles span [{emp.prompt[0]}, {emp.prompt[-1]}], outside "
                             f"[min_input={self.min_input}, max_input={self.max_input}]; widen min_input/max_input")
        for field, given, own in zip(("input_mean", "output_mean"), (self.input_mean, self.output_mean), emp.means):
            if abs(given - own) > _EMPIRICAL_MEAN_TOLERANCE * own:
                raise ValueError(f"{field}={given:g} is not the empirical quantiles' mean ({own:.6g}); leave "
                                 f"{field} out (it is filled in) or set it to {own:.6g}")


class PoissonArrivals(_Frozen):
    """Each adapter is an independent Poisson source at its own rate."""

    kind: Literal["poisson"] = "poisson"


class BurstyArrivals(_Frozen):
    """Unpredictable traffic: per-adapter gamma inter-arrivals with coefficient of variation ``cv``
    (cv=1 is Poisson) and a global rate multiplier redrawn every ``period_s`` seconds from a
    log-normal with standard deviation ``multiplier_sigma`` (mean 1, so the long-run rate is kept)."""

    kind: Literal["bursty"] = "bursty"
    cv: float = 2.0
    period_s: float = 300.0
    multiplier_sigma: float = 0.5

    @field_validator("cv", "period_s", "multiplier_sigma")
    @classmethod
    def _plausible(cls, v: float, info) -> float:
        lo, hi, meaning = BURSTY_RANGES[info.field_name]
        if not lo <= v <= hi:
            where = f"at least {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
            raise ValueError(f"must be {where}: {meaning}")
        return v


# Plausible bursty traffic, which the generator also draws exactly: gamma gaps of shape 1/cv^2 (cv 0.1:
# nearly periodic; 10: a few huge clumps), a multiplier redrawn at most once a second, and a log-normal
# sigma up to 2 (above it almost every period is silent and the mean rate lives in rare spikes, so a
# finite run sees far less traffic than its rates say). The training sweep (cv 1-3, sigma 0-1,
# periods 60-300 s) lies inside.
BURSTY_RANGES = {
    "cv": (0.1, 10.0, "the coefficient of variation of each adapter's inter-arrival gaps (1 is Poisson)"),
    "period_s": (1.0, math.inf, "seconds between redraws of the global rate multiplier"),
    "multiplier_sigma": (0.0, 2.0, "the log-normal sigma of the global rate multiplier (0: constant rate)"),
}


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
        if isinstance(self.arrivals, BurstyArrivals):
            periods = self.horizon_s / self.arrivals.period_s
            if periods > MAX_CLOCK_PERIODS:
                raise ValueError(
                    f"arrivals.period_s: {_seconds(self)} / period_s {self.arrivals.period_s:g} s = {periods:.3g} "
                    f"rate periods, more than {MAX_CLOCK_PERIODS:,}; use a longer period_s")
        if not (isinstance(self.arrivals, TraceArrivals) and not self.arrivals.scale_to_rates):
            # an unscaled trace replays at its own rate: twin.traces checks its count
            check_twin_requests(self.expected_requests,
                                f"total rate {self.total_rate:.3g} req/s x {_seconds(self)}", "adapters")
        return self

    @property
    def total_rate(self) -> float:
        return float(sum(a.rate for a in self.adapters))

    @property
    def horizon_s(self) -> float:
        """Simulated seconds: the warm-up and the measured window."""
        return self.warmup_s + self.duration_s

    @property
    def expected_requests(self) -> float:
        """The mean number of requests a twin run draws: total rate x (warm-up + duration)."""
        return self.total_rate * self.horizon_s


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


VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank


def rank_class(rank: int) -> int:
    """The smallest ``--max-lora-rank`` vLLM accepts that holds an adapter of ``rank``."""
    for r in VLLM_MAX_LORA_RANKS:
        if rank <= r:
            return r
    from .errors import InputError

    raise InputError("rank", f"rank {rank} is above vLLM's largest max_lora_rank ({VLLM_MAX_LORA_RANKS[-1]})")


class ServerDefaults(_Frozen):
    """Server settings a placement keeps the same on every GPU (the solver picks the LoRA flags).

    The defaults are those of the calibration runs (``max_num_seqs=2048``, a 2048-token budget)."""

    max_num_seqs: int = Field(default=2048, gt=0, le=65536)
    max_num_batched_tokens: int = Field(default=2048, gt=0, le=1 << 20)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)

    def server(self, max_loras: int, max_lora_rank: int, max_cpu_loras: int | None = None) -> ServerConfig:
        """One GPU's full server config: these settings and the LoRA flags the solver chose."""
        return ServerConfig(max_loras=max_loras, max_lora_rank=max_lora_rank, max_cpu_loras=max_cpu_loras,
                            max_num_seqs=self.max_num_seqs, max_num_batched_tokens=self.max_num_batched_tokens,
                            gpu_memory_utilization=self.gpu_memory_utilization)


SLO_METRICS = ("ttft_p99_ms", "ttft_mean_ms", "itl_mean_ms", "itl_p99_ms")


class Slo(_Frozen):
    """Latency targets every GPU of a placement must meet (any subset, milliseconds).

    ``ttft_p99_ms`` / ``ttft_mean_ms``: time to first token, its 99th percentile and mean over the
    GPU's requests; with ``per_adapter`` the p99 is each adapter's own (the worst adapter's tail, where
    a starved adapter shows first). ``itl_mean_ms``: the token-weighted mean inter-token latency;
    ``itl_p99_ms``: the 99th percentile over requests of each request's mean inter-token time (TPOT).
    """

    ttft_p99_ms: float | None = Field(default=None, gt=0.0)
    ttft_mean_ms: float | None = Field(default=None, gt=0.0)
    itl_mean_ms: float | None = Field(default=None, gt=0.0)
    itl_p99_ms: float | None = Field(default=None, gt=0.0)
    per_adapter: bool = False

    @model_validator(mode="after")
    def _some_target(self) -> "Slo":
        if all(getattr(self, m) is None for m in SLO_METRICS):
            raise ValueError(f"set at least one of {', '.join(SLO_METRICS)} (milliseconds)")
        return self

    def targets(self) -> dict[str, float]:
        """The metrics set, with their targets in milliseconds."""
        return {m: getattr(self, m) for m in SLO_METRICS if getattr(self, m) is not None}


class PlacementWorkload(_Frozen):
    """A placement request: a profile and the adapters to serve, with their traffic.

    ``objective`` is ``min_gpus`` (the fewest GPUs that keep up) or ``min_latency`` (on ``gpus`` GPUs,
    the lowest worst-GPU ``latency_metric``: ``utilisation`` on the capacity model, with proven bounds,
    or ``ttft_p99_ms`` / ``itl_mean_ms`` as the twin measures them); ``gpus`` is an optional GPU budget.
    With ``slo`` every GPU must also meet those latency targets, in the capacity model and in verification.
    """

    profile: str
    adapters: tuple[Adapter, ...] = Field(min_length=1)
    lengths: LengthSpec = LengthSpec()
    arrivals: ArrivalSpec = PoissonArrivals()
    server: ServerDefaults = ServerDefaults()
    objective: Literal["min_gpus", "min_latency"] = "min_gpus"
    gpus: int | None = Field(default=None, gt=0, le=MAX_FLEET_GPUS)
    slo: Slo | None = None
    latency_metric: Literal["utilisation", "ttft_p99_ms", "itl_mean_ms"] = "utilisation"

    _arrivals_shorthand = field_validator("arrivals", mode="before")(Workload._arrivals_shorthand.__func__)

    @model_validator(mode="after")
    def _checks(self) -> "PlacementWorkload":
        _check_adapters_and_lengths(self.adapters, self.lengths, self.arrivals)
        return self

    @property
    def total_rate(self) -> float:
        return float(sum(a.rate for a in self.adapters))


def _seconds(wl: Workload) -> str:
    if wl.warmup_s:
        return f"(warmup_s {wl.warmup_s:,.10g} + duration_s {wl.duration_s:,.10g}) s"
    return f"{wl.duration_s:,.10g} s"


def check_twin_requests(expected: float, how: str, field: str) -> None:
    """Refuse a twin run of more than ``MAX_TWIN_REQUESTS`` expected requests (``how`` says where
    the number comes from), before anything is allocated."""
    if expected > MAX_TWIN_REQUESTS:
        from .errors import InputError

        raise InputError(field, f"expected {expected:.3g} requests in one twin run ({how}), more than the "
                         f"{MAX_TWIN_REQUESTS:.0e} it can hold; {UNITS_HINT}: check the units, or simulate "
                         "a shorter duration_s")


def gpu_token_ceiling(profile: "Profile", max_num_batched_tokens: int) -> float:
    """A generous upper bound on the tokens per second one GPU of ``profile`` serves: a full token
    budget in every step, each step as fast as the profile's fastest (its smallest ``decode_ms``).
    Infinite when the profile's step times give no bound."""
    fastest_ms = min(profile.step.decode_ms, default=0.0)
    if not (math.isfinite(fastest_ms) and fastest_ms > 0):
        return math.inf
    return max_num_batched_tokens * 1000.0 / fastest_ms


def check_placement_load(workload: "PlacementWorkload", profile: "Profile") -> None:
    """Refuse a placement whose offered token rate is beyond what the largest fleet
    (``MAX_FLEET_GPUS`` GPUs of ``profile``, ``gpu_token_ceiling`` each) could serve: a unit
    mistake, which would otherwise end in a placement of absurd size."""
    from .errors import InputError

    tokens = workload.lengths.input_mean + workload.lengths.output_mean
    offered = workload.total_rate * tokens
    ceiling = MAX_FLEET_GPUS * gpu_token_ceiling(profile, workload.server.max_num_batched_tokens)
    if offered > ceiling:
        raise InputError("adapters", f"the offered load, {offered:.3g} tokens/s ({workload.total_rate:.3g} req/s x "
                         f"{tokens:g} tokens per request), is more than {MAX_FLEET_GPUS:,} GPUs of "
                         f"{profile.name} could serve (at most {ceiling:.3g} tokens/s); {UNITS_HINT}")


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
        errors = e.errors()
        err = errors[0]
        raw_loc = tuple(err.get("loc", ()))
        loc = _field_path(raw_loc)
        msg = err.get("msg", "invalid value").removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if err.get("type") == "missing" or isinstance(value, (dict, list)) else f" (got {value!r})"
        if err.get("type") == "extra_forbidden":
            msg, shown = "unknown field; check the spelling against the documented fields", ""
        elif err.get("type") == "finite_number":
            msg = "must be a finite number" + (" of requests per second" if raw_loc[-1:] == ("rate",) else "")
        # a container that failed because its item failed (an empty tuple after a bad adapter) is no news
        others = [x for x in errors[1:] if tuple(x.get("loc", ())) != raw_loc[:len(x.get("loc", ()))]]
        more = f" [+{len(others)} more]" if others else ""
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
