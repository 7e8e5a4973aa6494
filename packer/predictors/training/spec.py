"""The sweep specification: ``SweepSpec`` (profile, size, seed and the ranges a sweep draws from) and
the sampling of its queries, ``sample_query(spec, i)`` / ``sample_queries(spec)``.

Sample ``i`` is drawn from its own generator seeded ``(spec.seed, i)``, so a larger ``n_samples``
keeps the first samples (and their chunks). What one sample is:

- adapter count n: log-uniform integer in ``count_range`` (1..512).
- ranks: a random non-empty subset of ``ranks`` ({8, 16, 32, 64}), each adapter's rank drawn from
  it with Dirichlet(1) weights; ``max_lora_rank`` is the largest rank's vLLM class, one class higher
  with probability ``rank_bump_share``.
- lengths: with probability ``default_lengths_share`` the calibration means (222.7 / 196.1), else
  integer means uniform in ``input_mean_range`` (100..600) and ``output_mean_range`` (50..400)
  (always inside ``LengthSpec``'s limits); distribution ``sharegpt``.
- total load: log-uniform in ``load_tps_range`` (500..25,000 tokens/s, about 0.05x to 2x of one
  GPU), turned into a total request rate by dividing by input_mean + output_mean; with probability
  ``knee_share`` (for a server that starts) instead a multiple, log-uniform in ``knee_load_range``
  (0.4..1.6), of the fluid model's capacity estimate (feature ``capacity_est_tps``): the region
  around the knee, where the capacity model's keep-up decisions are made; with probability
  ``overload_share`` a multiple log-uniform in ``overload_load_range`` (1.6..20): overload, up to
  the heavy-overload runs of the real measurements (hundreds of req/s on one GPU).
- per-adapter shares by family (``family_weights``): ``equal`` (the capacity model's case), ``zipf``
  (exponent uniform in 0..2, random order), ``dirichlet`` (concentration log-uniform in 0.05..10),
  ``azure`` (request counts of n random windows of 10..300 s of the Azure conversation trace, plus
  one, as in benchmarks/gap.py), ``uniform`` (U(1-w, 1+w), w uniform in 0..0.95) and ``mix3`` (the
  upstream measurements' three rate levels r, 2r, 4r in equal thirds).
- arrivals: Poisson, or with probability ``bursty_share`` bursty with cv uniform in
  ``bursty_cv_range``, multiplier_sigma uniform in ``bursty_sigma_range`` and period_s from
  ``bursty_periods``.
- server: ``max_num_seqs`` / ``max_num_batched_tokens`` are the defaults (2048 / 2048) with
  probability ``server_default_share``, else drawn from ``max_num_seqs_choices`` /
  ``max_num_batched_tokens_choices``; ``max_loras``: the memory limit L for max_lora_rank is found
  with the profile's memory model; with probability ``over_memory_share`` max_loras is drawn
  log-uniformly above L (up to 2L: vLLM would refuse to start, the memory_error cases), otherwise,
  with T = min(n, L): T with probability ``top_loras_share``, ceil(T·u) with u log-uniform in
  [1/8, 1] with probability ``near_loras_share`` (the region a placement uses), else a log-uniform
  integer in 1..T (heavy slot contention).

The twin runs each query for ``warmup_s`` (300 s by default) and then a measured window of
``duration_s`` (600 s), the ``TwinPredictor`` defaults (see ``runs.py``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ...errors import InputError
from ...model import VLLM_MAX_LORA_RANKS, ArrivalSpec, BurstyArrivals, LengthSpec, PoissonArrivals, ServerConfig, rank_class
from ...profile import load_profile
from ...twin.fingerprint import twin_fingerprint
from ..base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S, GpuQuery
from ..features import feature_index, features

__all__ = ["SweepSpec", "sample_queries", "sample_query", "FAMILIES", "DEFAULT_LENGTHS"]

FAMILIES = ("equal", "zipf", "dirichlet", "azure", "uniform", "mix3")
DEFAULT_LENGTHS = (222.7, 196.1)
_CAPACITY = feature_index("capacity_est_tps")


@dataclass(frozen=True)
class SweepSpec:
    """A reproducible sweep of GPU queries for one profile (see the module docstring)."""

    profile: str
    n_samples: int = 4000
    seed: int = 0
    duration_s: float = DEFAULT_DURATION_S
    warmup_s: float = DEFAULT_WARMUP_S
    count_range: tuple[int, int] = (1, 512)
    ranks: tuple[int, ...] = (8, 16, 32, 64)
    rank_bump_share: float = 0.15
    load_tps_range: tuple[float, float] = (500.0, 25000.0)
    input_mean_range: tuple[int, int] = (100, 600)
    output_mean_range: tuple[int, int] = (50, 400)
    default_lengths_share: float = 0.3
    family_weights: tuple[tuple[str, float], ...] = (
        ("equal", 0.2), ("zipf", 0.2), ("dirichlet", 0.2), ("azure", 0.15), ("uniform", 0.1), ("mix3", 0.15))
    bursty_share: float = 0.2
    bursty_cv_range: tuple[float, float] = (1.0, 3.0)
    bursty_sigma_range: tuple[float, float] = (0.0, 1.0)
    bursty_periods: tuple[float, ...] = (60.0, 120.0, 300.0)
    server_default_share: float = 0.75
    max_num_seqs_choices: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    max_num_batched_tokens_choices: tuple[int, ...] = (1024, 2048, 4096, 8192)
    gpu_memory_utilization: float = 0.9
    knee_share: float = 0.4
    knee_load_range: tuple[float, float] = (0.4, 1.6)
    overload_share: float = 0.15
    overload_load_range: tuple[float, float] = (1.6, 20.0)
    over_memory_share: float = 0.04
    top_loras_share: float = 0.3
    near_loras_share: float = 0.45

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise InputError("n_samples", f"must be >= 1 (got {self.n_samples})")
        if self.seed < 0:
            raise InputError("seed", f"must be >= 0 (got {self.seed})")
        if not (self.warmup_s >= 0 and math.isfinite(self.warmup_s)):
            raise InputError("warmup_s", f"must be a non-negative number of seconds (got {self.warmup_s!r})")
        if not (self.duration_s > 0 and math.isfinite(self.duration_s)):
            raise InputError("duration_s", f"must be a positive number of seconds (got {self.duration_s!r})")
        lo, hi = self.count_range
        if not (1 <= lo <= hi):
            raise InputError("count_range", f"needs 1 <= low <= high (got {self.count_range})")
        for name, _ in self.family_weights:
            if name not in FAMILIES:
                raise InputError("family_weights", f"unknown rate family {name!r}; valid: {', '.join(FAMILIES)}")
        if not self.ranks or any(r not in VLLM_MAX_LORA_RANKS for r in self.ranks):
            raise InputError("ranks", f"ranks must be among {VLLM_MAX_LORA_RANKS} (got {self.ranks})")
        load_profile(self.profile)  # a clear error for an unknown profile

    def to_dict(self, with_size: bool = True) -> dict:
        """The spec's fields as a dict (without ``n_samples`` unless ``with_size``)."""
        d = dataclasses.asdict(self)
        if not with_size:
            d.pop("n_samples")
        return d

    def fingerprint(self) -> str:
        """A hash of everything that changes a sample (not n_samples): the spec and the twin's
        fingerprint (its code and data files, the profile's numbers).

        Features are not part of it: they are recomputed from the stored queries when they change."""
        blob = json.dumps({"spec": self.to_dict(with_size=False), "twin": twin_fingerprint(load_profile(self.profile))},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def sample_queries(spec: SweepSpec) -> list[GpuQuery]:
    """The sweep's queries, in sample order (sample i depends only on the spec's seed and i)."""
    return [sample_query(spec, i) for i in range(spec.n_samples)]


def sample_query(spec: SweepSpec, i: int) -> GpuQuery:
    """Sample ``i`` of the sweep."""
    rng = np.random.default_rng([spec.seed, i])
    prof = load_profile(spec.profile)
    lo, hi = spec.count_range
    n = int(min(hi, max(lo, math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))))

    # ranks: a non-empty subset, weighted
    pool = np.array(spec.ranks)
    subset = pool[rng.random(len(pool)) < 0.5]
    if len(subset) == 0:
        subset = pool[[rng.integers(len(pool))]]
    w = rng.dirichlet(np.ones(len(subset)))
    ranks = tuple(int(r) for r in rng.choice(subset, n, p=w))
    R = rank_class(max(ranks))
    if rng.random() < spec.rank_bump_share and R != VLLM_MAX_LORA_RANKS[-1]:
        R = VLLM_MAX_LORA_RANKS[VLLM_MAX_LORA_RANKS.index(R) + 1]

    # lengths
    if rng.random() < spec.default_lengths_share:
        im, om = DEFAULT_LENGTHS
    else:
        im = float(rng.integers(spec.input_mean_range[0], spec.input_mean_range[1] + 1))
        om = float(rng.integers(spec.output_mean_range[0], spec.output_mean_range[1] + 1))
    lengths = LengthSpec(input_mean=im, output_mean=om)

    # rates
    load = math.exp(rng.uniform(math.log(spec.load_tps_range[0]), math.log(spec.load_tps_range[1])))
    total_rate = load / (im + om)
    names = [f for f, _ in spec.family_weights]
    p = np.array([wt for _, wt in spec.family_weights], dtype=float)
    family = names[int(rng.choice(len(names), p=p / p.sum()))]
    shares = _shares(family, n, rng)
    rates = tuple(float(x) for x in shares * total_rate)

    # arrivals
    arrivals: ArrivalSpec
    if rng.random() < spec.bursty_share:
        arrivals = BurstyArrivals(cv=round(float(rng.uniform(*spec.bursty_cv_range)), 3),
                                  multiplier_sigma=round(float(rng.uniform(*spec.bursty_sigma_range)), 3),
                                  period_s=float(rng.choice(spec.bursty_periods)))
    else:
        arrivals = PoissonArrivals()

    # server
    if rng.random() < spec.server_default_share:
        seqs, batched = 2048, 2048
    else:
        seqs = int(rng.choice(spec.max_num_seqs_choices))
        batched = int(rng.choice(spec.max_num_batched_tokens_choices))
    limit = _memory_limit(spec.profile, prof.fingerprint(), R, spec.gpu_memory_utilization)
    top = min(n, limit)
    u = rng.random()
    if limit == 0 or u < spec.over_memory_share:
        base = max(limit, 1)
        A = int(min(4096, max(limit + 1, math.floor(base * math.exp(rng.uniform(0.0, math.log(2.0))) + 1))))
    elif u < spec.over_memory_share + spec.top_loras_share:
        A = top
    elif u < spec.over_memory_share + spec.top_loras_share + spec.near_loras_share:
        A = max(1, min(top, math.ceil(top * math.exp(rng.uniform(-math.log(8.0), 0.0)))))
    else:
        A = int(min(top, math.floor(math.exp(rng.uniform(0.0, math.log(top + 1))))))
        A = max(1, A)
    server = ServerConfig(max_loras=A, max_lora_rank=R, max_num_seqs=seqs, max_num_batched_tokens=batched,
                          gpu_memory_utilization=spec.gpu_memory_utilization)
    q = GpuQuery(prof, server, ranks, rates, lengths, arrivals)

    # near the knee: rescale the load to a multiple of the fluid model's capacity estimate
    knee_u = rng.random()
    lf_range = spec.knee_load_range if knee_u < spec.knee_share else spec.overload_load_range
    knee_lf = math.exp(rng.uniform(math.log(lf_range[0]), math.log(lf_range[1])))
    if knee_u < spec.knee_share + spec.overload_share and 0 < A <= limit:
        cap = float(features(q)[_CAPACITY])
        if cap > 0 and q.offered_tps > 0:
            k = cap * knee_lf / q.offered_tps
            q = GpuQuery(prof, server, ranks, tuple(r * k for r in rates), lengths, arrivals)
    return q


@lru_cache(maxsize=256)
def _memory_limit(profile: str, fingerprint: str, R: int, util: float) -> int:
    """The most GPU slots at max_lora_rank R that still start (0 if even one does not)."""
    return load_profile(profile).memory.max_loras_that_start(R, util)


@lru_cache(maxsize=1)
def _azure_times() -> np.ndarray:
    from importlib import resources
    with (resources.files("packer") / "data" / "azure2023_conv.npz").open("rb") as f:
        return np.load(f, allow_pickle=False)["arrived_at"].astype(np.float64)


def _shares(family: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-adapter traffic shares (summing to 1) of one rate family."""
    if n == 1:
        return np.ones(1)
    if family == "equal":
        w = np.ones(n)
    elif family == "zipf":
        s = rng.uniform(0.0, 2.0)
        w = rng.permutation(1.0 / np.arange(1, n + 1) ** s)
    elif family == "dirichlet":
        alpha = math.exp(rng.uniform(math.log(0.05), math.log(10.0)))
        w = rng.dirichlet(np.full(n, alpha))
        w = np.maximum(w, 1e-6)  # all-zero shares would leave an adapter without traffic
    elif family == "azure":
        t = _azure_times()
        win = rng.uniform(10.0, 300.0)
        starts = rng.uniform(0, t[-1] - win, n)
        w = (np.searchsorted(t, starts + win) - np.searchsorted(t, starts) + 1.0)
    elif family == "uniform":
        width = rng.uniform(0.0, 0.95)
        w = rng.uniform(1.0 - width, 1.0 + width, n)
    elif family == "mix3":
        levels = np.array([1.0, 2.0, 4.0])
        w = rng.permutation(np.repeat(levels, [n - 2 * (n // 3), n // 3, n // 3]))
    else:
        raise InputError("family", f"unknown rate family {family!r}; valid: {', '.join(FAMILIES)}")
    return w / w.sum()


