"""The predictor interface: one GPU's config and adapter set in, throughput/latency/starvation out.

Every backend (the twin, the distilled tree, a live vLLM benchmark) implements ``Predictor.predict``
on a ``GpuQuery`` and is registered by name in ``PREDICTORS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Sequence

from ..defaults import DEFAULT_DURATION_S, DEFAULT_WARMUP_S
from ..files import json_ready
from ..model import ArrivalSpec, LengthSpec, PoissonArrivals, Scenario, ServerConfig, Workload, parse_model
from ..profile import Profile, load_profile
from ..registry import Registry

__all__ = ["GpuQuery", "Prediction", "Predictor", "PREDICTORS", "get_predictor", "DEFAULT_DURATION_S",
           "DEFAULT_WARMUP_S", "KEEP_UP_RATIO"]

# "Keeps up": starts, is not starved and serves at least this share of the offered tokens. Stricter than
# the 90 % starvation line, so a placement packed to the capacity tables passes verification with margin.
KEEP_UP_RATIO = 0.95


@dataclass(frozen=True)
class GpuQuery:
    """One vLLM server: profile, server flags and the adapters it serves (rank and rate in req/s).

    ``profile`` is the ``Profile`` itself (a shipped name or a profile file path is resolved on
    construction), so every predictor answers with the numbers the user gave, never with a shipped
    profile that happens to share the name. Adapter identities do not matter to a prediction, only
    their ranks and rates, so a query is a value (hashable) that predictors can cache on.
    """

    profile: Profile
    server: ServerConfig
    ranks: tuple[int, ...]
    rates: tuple[float, ...]
    lengths: LengthSpec = field(default_factory=LengthSpec)
    arrivals: ArrivalSpec = field(default_factory=PoissonArrivals)

    def __post_init__(self) -> None:
        if not isinstance(self.profile, Profile):
            object.__setattr__(self, "profile", load_profile(self.profile))
        if len(self.ranks) != len(self.rates):
            raise ValueError("ranks and rates must have the same length")
        if not self.ranks:
            raise ValueError("a query needs at least one adapter")

    @property
    def num_adapters(self) -> int:
        return len(self.ranks)

    @property
    def offered_tps(self) -> float:
        """Offered token load (prompt + output tokens per second) at the lengths' means."""
        return sum(self.rates) * (self.lengths.input_mean + self.lengths.output_mean)

    def scenario(self, duration_s: float, seed: int, warmup_s: float = 0.0) -> Scenario:
        """This query as a twin scenario (adapters named a0, a1, ...); run it on ``self.profile``
        (the scenario names the profile only)."""
        adapters = [{"id": f"a{i}", "rank": r, "rate": q} for i, (r, q) in enumerate(zip(self.ranks, self.rates))]
        wl = parse_model(Workload, {"adapters": adapters, "lengths": self.lengths, "arrivals": self.arrivals,
                                    "duration_s": duration_s, "seed": seed, "warmup_s": warmup_s})
        return Scenario(profile=self.profile.name, server=self.server, workload=wl)

    @classmethod
    def from_scenario(cls, sc: Scenario, profile: Profile | None = None) -> "GpuQuery":
        """The query of a scenario, on ``profile`` if given (else the scenario's, by name or path)."""
        ads = sc.workload.adapters
        return cls(profile=profile if profile is not None else load_profile(sc.profile), server=sc.server, ranks=tuple(a.rank for a in ads),
                   rates=tuple(a.rate for a in ads), lengths=sc.workload.lengths, arrivals=sc.workload.arrivals)


@dataclass(frozen=True)
class Prediction:
    """What a predictor says about one GPU. Fields a backend does not predict are ``None``.

    ``warnings`` are caveats that come with the numbers, e.g. that a data-driven model extrapolates
    outside its training domain (each names the feature, its value and the trained range); empty
    when the prediction is within what the predictor knows."""

    predictor: str
    starved: bool
    memory_error: str | None
    throughput_tps: float | None
    offered_tps: float
    mean_itl_ms: float | None = None
    p99_ttft_ms: float | None = None
    warnings: tuple[str, ...] = ()
    mean_ttft_ms: float | None = None
    p99_tpot_ms: float | None = None
    worst_adapter_p99_ttft_ms: float | None = None
    slo_misses: tuple[str, ...] = ()  # the latency targets this GPU misses (``packer.predictors.slo``)

    @property
    def throughput_ratio(self) -> float | None:
        if self.throughput_tps is None or self.offered_tps <= 0:
            return None
        return self.throughput_tps / self.offered_tps

    @property
    def keeps_up(self) -> bool:
        """The capacity model's criterion: starts, not starved, serves >= KEEP_UP_RATIO of the offered tokens
        (and meets the SLO, where one is checked)."""
        ratio = self.throughput_ratio
        return self.ok and (ratio is None or ratio >= KEEP_UP_RATIO)

    @property
    def ok(self) -> bool:
        """Starts, keeps up and meets the SLO where one is checked: the GPU is usable as configured."""
        return self.memory_error is None and not self.starved and not self.slo_misses

    def to_dict(self) -> dict:
        return json_ready(asdict(self))


class Predictor(ABC):
    """Predicts one GPU's behaviour. Subclasses set ``name`` and implement ``predict``."""

    name: str = "predictor"

    @abstractmethod
    def predict(self, query: GpuQuery) -> Prediction:
        """Predict one GPU."""

    def predict_many(self, queries: Sequence[GpuQuery]) -> list[Prediction]:
        """Predict many GPUs (backends may batch or parallelise this)."""
        return [self.predict(q) for q in queries]

    @abstractmethod
    def describe(self) -> dict:
        """Every setting that changes this predictor's answers, with its ``name``: the capacity model's
        on-disk cache is keyed on it, so a backend that leaves one out gets stale tables."""

    def withheld(self, profile: str) -> dict[str, str]:
        """``Prediction`` latency fields this predictor could give for ``profile`` but withholds, each with
        the reason (the tree's heads that fail its accuracy gate); none by default."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.describe().items() if k != 'name')})"


PREDICTORS: Registry[Predictor] = Registry("predictor", Predictor)
# The shipped backends, imported (with their numba kernels) only when one is asked for.
PREDICTORS.declare("twin", "packer.predictors.twin")
PREDICTORS.declare("tree", "packer.predictors.tree")
PREDICTORS.declare("forest", "packer.predictors.tree")
PREDICTORS.declare("vllm", "packer.predictors.vllm")


def get_predictor(spec: "str | Predictor" = "twin", **options) -> Predictor:
    """A predictor by registered name (with options) or the given object."""
    return PREDICTORS.get(spec, **options)


