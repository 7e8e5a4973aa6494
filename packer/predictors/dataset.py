"""Twin-generated training data for the data-driven predictors: a reproducible, resumable sweep.

``SweepSpec`` describes the sweep (profile, size, seed and the ranges it draws from);
``sample_queries(spec)`` draws its ``GpuQuery`` list; ``generate(spec, out_dir)`` runs the twin on
every query in a pool of workers and writes the results as columnar NPZ chunks; ``load_dataset(dir)``
reads them back as one dict of arrays.

What one sample is (sample ``i`` is drawn from its own generator seeded ``(spec.seed, i)``, so a
larger ``n_samples`` keeps the first samples and their chunks):

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
``duration_s`` (600 s), the ``TwinPredictor`` defaults, with workload seed
``spec.seed * 1_000_003 + i`` (mod 2^32).

Chunk files ``chunk_00000.npz``, ... hold ``chunk_size`` consecutive samples each (written to a
temporary name and renamed, so a file that exists is complete; chunks whose file exists and matches
are skipped, so an interrupted run resumes). Columns (one row per sample unless noted):

- ``index`` (int64), ``twin_seed`` (int64), ``features`` (float64, rows x features) and
  ``feature_names`` (unicode, one per feature column);
- ``throughput_tps`` (NaN on a memory error), ``offered_tps`` (nominal, ``query.offered_tps``),
  ``twin_offered_tps`` (what the twin drew), ``throughput_ratio`` (throughput_tps / offered_tps),
  ``twin_throughput_ratio`` (throughput_tps / twin_offered_tps, the twin's own ratio),
  ``starved``, ``starved_by_throughput``, ``queue_diverging``, ``memory_error`` (bool),
  ``mean_itl_ms``, ``mean_ttft_ms``, ``p99_ttft_ms`` (NaN where the twin reports none),
  ``twin_wall_s``;
- the query: ``adapter_offsets`` (int64, rows + 1) into ``adapter_ranks`` (int32) and
  ``adapter_rates`` (float64), and ``query_json`` (fixed-width unicode: profile, server, lengths,
  arrivals); ``query_from_dataset(ds, row)`` rebuilds the ``GpuQuery``.
- ``spec_json`` (a 0-d unicode array): the sweep's spec (without n_samples).

Replicates (``replicate(spec, out_dir, ReplicateSpec(...))``): near the starvation boundary one twin
run is a noisy label (a bursty run's label depends on which bursts its window drew; a run at the knee
on whether its queue happened to grow). Samples that look ambiguous from their first run (see
``ReplicateSpec``) are run again with ``seeds`` more workload seeds; ``replicates_00000.npz``, ...
(one per chunk, same resumability) hold ``rep_index`` (the samples) and (samples x seeds) arrays
``rep_throughput_tps``, ``rep_twin_offered_tps``, ``rep_mean_itl_ms``, ``rep_starved``,
``rep_memory_error``. ``load_dataset`` returns them as they are, and ``consensus_labels(ds)``
replaces the outcome columns of replicated samples by the mean (throughput, drawn offered load, ITL)
and the majority (starved) over all their runs: the twin's expected outcome, which training learns.

Files load with ``numpy.load(..., allow_pickle=False)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import warnings
import zipfile
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..files import dumps, read_json, read_npz, write_json_atomic
from ..model import VLLM_MAX_LORA_RANKS, ArrivalSpec, BurstyArrivals, LengthSpec, PoissonArrivals, ServerConfig, rank_class
from ..profile import load_profile
from ..executor import EXECUTORS, map_jobs, open_executor
from ..twin.fingerprint import twin_fingerprint
from .base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S, GpuQuery
from .features import FEATURE_NAMES, feature_index, features, features_code, features_many

__all__ = ["SweepSpec", "ReplicateSpec", "sample_queries", "generate", "replicate", "load_dataset",
           "consensus_labels", "query_from_dataset", "run_query", "FAMILIES"]

FAMILIES = ("equal", "zipf", "dirichlet", "azure", "uniform", "mix3")
DEFAULT_LENGTHS = (222.7, 196.1)
_SEED_MULT = 1_000_003
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


@dataclass(frozen=True)
class ReplicateSpec:
    """Which samples get more twin runs, and how many (see the module docstring).

    A sample is replicated when it started and its first run was ambiguous: bursty arrivals with a
    load factor (offered / fluid capacity) in ``bursty_load_range``, or a throughput ratio (the twin's
    own: throughput / what it drew) in ``ratio_range``, or a queue that diverged while the ratio
    stayed at or above the starvation ratio. The defaults pick about a fifth of a sweep and, in a
    five-seed pilot on 1,200 samples of the Llama sweep, 87 % of the samples whose seeds disagree."""

    seeds: int = 4
    bursty_load_range: tuple[float, float] = (0.3, 1.5)
    ratio_range: tuple[float, float] = (0.85, 0.99)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise InputError("seeds", f"replicates need >= 1 extra seed (got {self.seeds}); use no ReplicateSpec "
                             f"for none")
        for name in ("bursty_load_range", "ratio_range"):
            lo, hi = getattr(self, name)
            if not (0 <= lo < hi):
                raise InputError(name, f"needs 0 <= low < high (got {(lo, hi)})")

    def fingerprint(self, spec: SweepSpec) -> str:
        """The base sweep's fingerprint joined with this spec: what a replicate file was made from."""
        blob = json.dumps({"sweep": spec.fingerprint(), "replicates": dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def select(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Row positions of a chunk (its first-run columns) to replicate."""
        from ..twin.engine import STARVED_RATIO

        X = cols["features"]
        names = [str(x) for x in cols["feature_names"]]
        lf = X[:, names.index("load_factor")]
        bursty = np.array([json.loads(str(q))["arrivals"]["kind"] == "bursty" for q in cols["query_json"]])
        r = cols["twin_throughput_ratio"]
        with np.errstate(invalid="ignore"):
            pick = bursty & (lf >= self.bursty_load_range[0]) & (lf < self.bursty_load_range[1])
            pick |= (r >= self.ratio_range[0]) & (r < self.ratio_range[1])
            pick |= cols["queue_diverging"].astype(bool) & (r >= STARVED_RATIO)
        return np.flatnonzero(pick & ~cols["memory_error"].astype(bool))


# ---- sampling -----------------------------------------------------------------------------------

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


# ---- running the twin ---------------------------------------------------------------------------

_FLOAT_COLS = ("throughput_tps", "offered_tps", "twin_offered_tps", "throughput_ratio", "twin_throughput_ratio",
               "mean_itl_ms",
               "mean_ttft_ms", "p99_ttft_ms", "twin_wall_s")
_BOOL_COLS = ("starved", "starved_by_throughput", "queue_diverging", "memory_error")


def run_query(query: GpuQuery, duration_s: float, seed: int, warmup_s: float = 0.0) -> dict[str, Any]:
    """One twin run of ``query`` (``warmup_s``, then the measured ``duration_s``): the dataset's outcome
    columns for it."""
    from ..twin import Twin

    t0 = time.perf_counter()
    r = Twin(query.scenario(duration_s, seed, warmup_s), query.profile).run()
    offered = query.offered_tps
    nan = float("nan")
    if r.memory_error:
        return dict(throughput_tps=nan, offered_tps=offered, twin_offered_tps=nan, throughput_ratio=nan,
                    twin_throughput_ratio=nan, mean_itl_ms=nan, mean_ttft_ms=nan, p99_ttft_ms=nan, twin_wall_s=time.perf_counter() - t0,
                    starved=False, starved_by_throughput=False, queue_diverging=False, memory_error=True)
    return dict(throughput_tps=r.throughput_tps, offered_tps=offered, twin_offered_tps=r.offered_tps,
                throughput_ratio=r.throughput_tps / offered if offered > 0 else nan,
                twin_throughput_ratio=r.throughput_ratio,
                mean_itl_ms=r.mean_itl_ms, mean_ttft_ms=r.mean_ttft_ms, p99_ttft_ms=r.p99_ttft_ms,
                twin_wall_s=time.perf_counter() - t0, starved=bool(r.starved),
                starved_by_throughput=bool(r.starved_by_throughput), queue_diverging=bool(r.queue_diverging),
                memory_error=False)


def _query_json(q: GpuQuery) -> str:
    return json.dumps({"profile": q.profile.name, "server": q.server.model_dump(), "lengths": q.lengths.model_dump(),
                       "arrivals": q.arrivals.model_dump()}, sort_keys=True, separators=(",", ":"))


def _twin_seed(spec: SweepSpec, i: int) -> int:
    return (spec.seed * _SEED_MULT + i) % (1 << 32)


def _replicate_seed(spec: SweepSpec, i: int, k: int) -> int:
    """Workload seed of replicate k (1, 2, ...) of sample i."""
    return int(np.random.SeedSequence([spec.seed, i, k]).generate_state(1)[0])


def _chunk_columns(spec: SweepSpec, start: int, stop: int) -> dict[str, np.ndarray]:
    """Run the twin on samples start..stop-1 and build the chunk's columns."""
    from ..twin.engine import warm_up

    warm_up()
    queries = [sample_query(spec, i) for i in range(start, stop)]
    seeds = [_twin_seed(spec, i) for i in range(start, stop)]
    rows = [run_query(q, spec.duration_s, s, spec.warmup_s) for q, s in zip(queries, seeds)]
    cols: dict[str, np.ndarray] = {
        "index": np.arange(start, stop, dtype=np.int64),
        "twin_seed": np.array(seeds, dtype=np.int64),
        "features": features_many(queries),
        "feature_names": np.array(FEATURE_NAMES),
        "features_code": np.array(features_code()),
    }
    for c in _FLOAT_COLS:
        cols[c] = np.array([r[c] for r in rows], dtype=np.float64)
    for c in _BOOL_COLS:
        cols[c] = np.array([r[c] for r in rows], dtype=bool)
    cols.update(_query_columns(queries))
    cols["spec_json"] = np.array(json.dumps(spec.to_dict(with_size=False), sort_keys=True))
    cols["fingerprint"] = np.array(spec.fingerprint())
    return cols


def _query_columns(queries: Sequence[GpuQuery]) -> dict[str, np.ndarray]:
    sizes = np.array([q.num_adapters for q in queries], dtype=np.int64)
    offsets = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return {
        "adapter_offsets": offsets,
        "adapter_ranks": np.array([r for q in queries for r in q.ranks], dtype=np.int32),
        "adapter_rates": np.array([r for q in queries for r in q.rates], dtype=np.float64),
        "query_json": np.array([_query_json(q) for q in queries]),
    }


def query_from_dataset(ds: dict[str, np.ndarray], row: int) -> GpuQuery:
    """The ``GpuQuery`` of dataset row ``row`` (as ``load_dataset`` returns it)."""
    from pydantic import TypeAdapter

    meta = json.loads(str(ds["query_json"][row]))
    a, b = int(ds["adapter_offsets"][row]), int(ds["adapter_offsets"][row + 1])
    arrivals = TypeAdapter(ArrivalSpec).validate_python(meta["arrivals"])
    return GpuQuery(meta["profile"], ServerConfig(**meta["server"]),
                    tuple(int(x) for x in ds["adapter_ranks"][a:b]), tuple(float(x) for x in ds["adapter_rates"][a:b]),
                    LengthSpec(**meta["lengths"]), arrivals)


# ---- generation ---------------------------------------------------------------------------------

def _chunk_path(out_dir: Path, k: int) -> Path:
    return out_dir / f"chunk_{k:05d}.npz"


def _chunk_ok(path: Path, spec: SweepSpec, start: int, stop: int) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            idx = z["index"]
            return (str(z["fingerprint"]) == spec.fingerprint() and len(idx) == stop - start
                    and int(idx[0]) == start and int(idx[-1]) == stop - 1)
    except (OSError, KeyError, ValueError, IndexError, EOFError, zipfile.BadZipFile):
        return False  # a chunk cut short (a killed run) is run again


def _write_chunk(path: Path, cols: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.npz")
    np.savez_compressed(tmp, **cols)
    os.replace(tmp, path)


def _run_and_write(spec: SweepSpec, out_dir: str, k: int, start: int, stop: int) -> int:
    _write_chunk(_chunk_path(Path(out_dir), k), _chunk_columns(spec, start, stop))
    return stop - start


def _chunk_bounds(spec: SweepSpec, chunk_size: int) -> list[tuple[int, int, int]]:
    """(chunk number, first sample, end sample) of every chunk of the sweep."""
    if chunk_size < 1:
        raise InputError("chunk_size", f"must be >= 1 (got {chunk_size})")
    return [(k, s, min(s + chunk_size, spec.n_samples)) for k, s in enumerate(range(0, spec.n_samples, chunk_size))]


def _pick_executor(executor: "str | Executor", workers: int | None, n_jobs: int) -> "tuple[str | Executor, int]":
    """The executor and worker count to use: a process pool for one worker or one job is serial."""
    if not isinstance(executor, Executor) and executor not in EXECUTORS:
        raise InputError("executor", f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    n_workers = max(1, int(workers or os.cpu_count() or 1))
    if executor == "process" and (n_workers == 1 or n_jobs <= 1):
        executor = "serial"
    return executor, n_workers


def _map_jobs(fn: Any, jobs: list[tuple], executor: "str | Executor", n_workers: int, done: Any,
              ray_address: str | None = None) -> None:
    """``fn(*job)`` for every job on the executor (``packer.executor``); ``done(result)`` as each finishes."""
    if not jobs:
        return
    if executor == "process":
        from ..twin.engine import warm_up

        warm_up()  # forked workers inherit the compiled kernel
    with open_executor(executor, min(n_workers, len(jobs)), ray_address) as ex:
        map_jobs(ex, fn, jobs, done)


def _executor_name(executor: "str | Executor") -> str:
    return executor if isinstance(executor, str) else type(executor).__name__


_REP_COLS = ("throughput_tps", "twin_offered_tps", "mean_itl_ms", "starved", "memory_error")


def _replicate_path(out_dir: Path, k: int) -> Path:
    return out_dir / f"replicates_{k:05d}.npz"


def _replicate_ok(path: Path, fingerprint: str, start: int, stop: int) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["fingerprint"]) == fingerprint and z["chunk_bounds"].tolist() == [start, stop]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def _replicate_chunk(spec: SweepSpec, rspec: ReplicateSpec, out_dir: str, k: int) -> int:
    """Replicate the ambiguous samples of base chunk k; returns the number of twin runs."""
    from ..twin.engine import warm_up

    warm_up()
    cols = read_npz(_chunk_path(Path(out_dir), k), field="dataset", required=("index",))
    rows = rspec.select(cols)
    idx = cols["index"][rows]
    S = rspec.seeds
    out: dict[str, np.ndarray] = {"rep_index": idx.astype(np.int64),
                                  "rep_seeds": np.zeros((len(idx), S), dtype=np.int64)}
    for c in _REP_COLS:
        out[f"rep_{c}"] = np.zeros((len(idx), S), dtype=bool if c in _BOOL_COLS else np.float64)
    for j, i in enumerate(idx):
        q = query_from_dataset(cols, int(rows[j]))
        for kk in range(S):
            seed = _replicate_seed(spec, int(i), kk + 1)
            r = run_query(q, spec.duration_s, seed, spec.warmup_s)
            out["rep_seeds"][j, kk] = seed
            for c in _REP_COLS:
                out[f"rep_{c}"][j, kk] = r[c]
    out["fingerprint"] = np.array(rspec.fingerprint(spec))
    out["chunk_bounds"] = np.array([int(cols["index"][0]), int(cols["index"][-1]) + 1], dtype=np.int64)
    out["replicate_spec_json"] = np.array(json.dumps(dataclasses.asdict(rspec), sort_keys=True))
    _write_chunk(_replicate_path(Path(out_dir), k), out)
    return len(idx) * S


def replicate(spec: SweepSpec, out_dir: str | os.PathLike, rspec: ReplicateSpec | None = None,
              workers: int | None = None, executor: "str | Executor" = "process", progress: bool = True,
              chunk_size: int = 256, ray_address: str | None = None) -> dict[str, Any]:
    """Run the ambiguous samples of a generated sweep again (``rspec.seeds`` more seeds each) and write
    ``replicates_*.npz`` next to its chunks (complete files are kept: resumable). ``chunk_size`` must
    be the one the sweep was generated with. Returns a summary (samples replicated, runs, seconds)."""
    rspec = rspec or ReplicateSpec()
    bounds = _chunk_bounds(spec, chunk_size)
    _pick_executor(executor, workers, 0)  # a bad name is refused before anything runs
    out = Path(out_dir)
    missing = [k for k, s, e in bounds if not _chunk_ok(_chunk_path(out, k), spec, s, e)]
    if missing:
        raise InputError("dataset", f"{out}: {len(missing)} sweep chunks are missing or stale (first: "
                         f"{_chunk_path(out, missing[0]).name}); generate the sweep before replicating it")
    fp = rspec.fingerprint(spec)
    todo = [k for k, s, e in bounds if not _replicate_ok(_replicate_path(out, k), fp, s, e)]
    executor, n_workers = _pick_executor(executor, workers, len(todo))
    t0 = time.perf_counter()
    with _progress(progress, spec, len(bounds), len(bounds) - len(todo), "replicates (chunks)") as advance:
        _map_jobs(_replicate_chunk, [(spec, rspec, str(out), k) for k in todo], executor, n_workers,
                  lambda _runs: advance(1), ray_address)
    n_rep = 0
    for k, _, _ in bounds:
        n_rep += len(read_npz(_replicate_path(out, k), field="dataset", required=("rep_index",))["rep_index"])
    return {"replicated_samples": n_rep, "seeds": rspec.seeds, "runs": n_rep * rspec.seeds,
            "chunks_run": len(todo), "chunks_skipped": len(bounds) - len(todo),
            "seconds": time.perf_counter() - t0, "executor": _executor_name(executor)}


def generate(spec: SweepSpec, out_dir: str | os.PathLike, workers: int | None = None, chunk_size: int = 256,
             executor: "str | Executor" = "process", progress: bool = True,
             ray_address: str | None = None) -> dict[str, Any]:
    """Run the twin on the sweep's queries and write chunk files to ``out_dir`` (see the module docstring).

    On ``executor`` (``packer.executor``): ``workers`` processes (default: the CPU count) in a local
    pool (``"process"``), this process (``"serial"``, also used when ``workers`` is 1), a Ray cluster
    (``"ray"`` at ``ray_address``, default a local Ray; needs the ``packer[ray]`` extra), or any
    ``concurrent.futures.Executor``; every executor gives the same rows. Complete chunks already in
    ``out_dir`` are kept. Returns a summary (rows, chunks run and skipped, seconds).
    """
    bounds = _chunk_bounds(spec, chunk_size)
    _pick_executor(executor, workers, 0)  # a bad name is refused before anything runs
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    meta = {"fingerprint": spec.fingerprint(), "spec": spec.to_dict(with_size=False)}
    if spec_file.is_file():
        old = read_json(spec_file, field="out_dir")
        old_fingerprint = old.get("fingerprint") if isinstance(old, dict) else None
        if old_fingerprint != meta["fingerprint"]:
            raise InputError("out_dir", f"{out} holds a different sweep (fingerprint {old_fingerprint} vs "
                             f"{meta['fingerprint']}); use another directory or empty this one")
    write_json_atomic(spec_file, {**meta, "n_samples": spec.n_samples}, indent=1, sort_keys=True)

    todo = [b for b in bounds if not _chunk_ok(_chunk_path(out, b[0]), spec, b[1], b[2])]
    done_rows = spec.n_samples - sum(b[2] - b[1] for b in todo)
    executor, n_workers = _pick_executor(executor, workers, len(todo))
    t0 = time.perf_counter()
    with _progress(progress, spec, spec.n_samples, done_rows) as advance:
        _map_jobs(_run_and_write, [(spec, str(out), k, s, e) for k, s, e in todo], executor, n_workers, advance,
                  ray_address)
    return {"out_dir": str(out), "rows": spec.n_samples, "chunks": len(bounds), "chunks_run": len(todo),
            "chunks_skipped": len(bounds) - len(todo), "seconds": time.perf_counter() - t0,
            "executor": _executor_name(executor), "workers": 1 if executor == "serial" else n_workers}


class _progress:
    """A rich progress bar over samples on stderr (or nothing); ``advance(n)`` moves it.

    Shown only when asked for and stderr is a terminal: stdout carries results (``packer train
    --json``), and a bar redrawn into a log file or a pipe is noise."""

    def __init__(self, show: bool, spec: SweepSpec, total: int, done: int, what: str = ""):
        self.show, self.spec, self.total, self.done, self.what = show, spec, total, done, what
        self._p = None

    def __enter__(self):
        if not (self.show and sys.stderr.isatty()):
            return lambda n: None
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._p = Progress(TextColumn("[bold]twin sweep[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), TimeRemainingColumn(), transient=False,
                           console=Console(file=sys.stderr))
        self._p.__enter__()
        task = self._p.add_task(f"{self.spec.profile} {self.what}".strip(), total=self.total, completed=self.done)
        return lambda n: self._p.advance(task, n)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)
        return False


# ---- loading ------------------------------------------------------------------------------------

def load_dataset(directory: str | os.PathLike, recompute_features: bool | None = None) -> dict[str, np.ndarray]:
    """All chunks of a sweep directory, concatenated in sample order (a dict of arrays).

    Per-row columns are concatenated; ``adapter_offsets`` is re-based; ``feature_names`` and
    ``spec_json`` are kept once. Features are recomputed from the stored queries when the chunks were
    written with other ``FEATURE_NAMES`` or by other feature code (``features_code``), or when
    ``recompute_features`` is true."""
    d = Path(directory)
    paths = sorted(d.glob("chunk_*.npz"))
    if not paths:
        raise InputError("dataset", f"no chunk_*.npz files in {d}; generate the sweep first")
    parts, fps = _read_parts(paths)
    if len(fps) > 1:
        raise InputError("dataset", f"{d} mixes chunks of different sweeps ({', '.join(sorted(fps))})")
    out: dict[str, np.ndarray] = {}
    per_row = [k for k in parts[0] if k not in ("feature_names", "features_code", "spec_json", "fingerprint",
                                                 "adapter_offsets", "adapter_ranks", "adapter_rates")]
    for k in per_row:
        out[k] = np.concatenate([p[k] for p in parts])
    out["adapter_ranks"] = np.concatenate([p["adapter_ranks"] for p in parts])
    out["adapter_rates"] = np.concatenate([p["adapter_rates"] for p in parts])
    offs, base = [np.zeros(1, dtype=np.int64)], 0
    for p in parts:
        offs.append(p["adapter_offsets"][1:] + base)
        base += int(p["adapter_offsets"][-1])
    out["adapter_offsets"] = np.concatenate(offs)
    out["feature_names"] = parts[0]["feature_names"]
    out["spec_json"] = parts[0]["spec_json"]
    order = np.argsort(out["index"], kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        raise InputError("dataset", f"{d}: chunk rows are not in sample order")
    stale = (tuple(str(x) for x in out["feature_names"]) != FEATURE_NAMES
             or any(str(p.get("features_code", "")) != features_code() for p in parts))
    if recompute_features or (recompute_features is None and stale):
        out["features"] = features_many([query_from_dataset(out, i) for i in range(len(out["index"]))])
        out["feature_names"] = np.array(FEATURE_NAMES)
    out.update(_load_replicates(d, out["index"]))
    return out


def _read_parts(paths: Sequence[Path]) -> tuple[list[dict[str, np.ndarray]], set[str]]:
    """The arrays of each NPZ file, and the set of their fingerprints."""
    parts = [read_npz(p, field="dataset", required=("fingerprint",)) for p in paths]
    return parts, {str(p["fingerprint"]) for p in parts}


def _load_replicates(d: Path, index: np.ndarray) -> dict[str, np.ndarray]:
    """The ``rep_*`` columns of the directory's replicate files (none when there are none)."""
    paths = sorted(d.glob("replicates_*.npz"))
    if not paths:
        return {}
    parts, fps = _read_parts(paths)
    if len(fps) > 1:
        raise InputError("dataset", f"{d} mixes replicate files of different runs ({', '.join(sorted(fps))}); "
                         f"delete the replicates_*.npz files and replicate again")
    cols = [k for k in parts[0] if k.startswith("rep_")]
    out = {k: np.concatenate([p[k] for p in parts]) for k in cols}
    if not np.isin(out["rep_index"], index).all():
        raise InputError("dataset", f"{d}: replicate files name samples the sweep does not have; "
                         f"delete the replicates_*.npz files and replicate again")
    out["replicate_spec_json"] = parts[0]["replicate_spec_json"]
    return out


def consensus_labels(ds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``ds`` with each replicated sample's outcome columns taken over all its runs (a new dict;
    ``ds`` is not changed): mean ``throughput_tps``, ``twin_offered_tps`` and ``mean_itl_ms`` (over
    the runs that have one), majority ``starved`` (a tie counts as starved), and the ratios
    recomputed from those; ``runs`` counts the runs behind each row. Without replicates, ``runs`` is
    all ones and the rest is unchanged."""
    out = dict(ds)
    n = len(ds["index"])
    out["runs"] = np.ones(n, dtype=np.int64)
    if "rep_index" not in ds or len(ds["rep_index"]) == 0:
        return out
    rows = np.searchsorted(ds["index"], ds["rep_index"])
    first_ok = ~ds["memory_error"][rows]
    rep_ok = ~ds["rep_memory_error"] & first_ok[:, None]
    for c in ("throughput_tps", "twin_offered_tps", "mean_itl_ms"):
        runs = np.column_stack([ds[c][rows], np.where(rep_ok, ds[f"rep_{c}"], np.nan)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no run has an ITL)
            mean = np.nanmean(runs, axis=1)
        col = ds[c].copy()
        col[rows] = mean  # NaN only where every run, the first included, has none
        out[c] = col
    votes = ds["starved"][rows].astype(int) + np.sum(ds["rep_starved"] & rep_ok, axis=1)
    n_runs = 1 + np.sum(rep_ok, axis=1)
    starved = ds["starved"].copy()
    starved[rows] = 2 * votes >= n_runs
    out["starved"] = starved
    out["runs"][rows] = n_runs
    with np.errstate(invalid="ignore", divide="ignore"):
        out["throughput_ratio"] = out["throughput_tps"] / ds["offered_tps"]
        out["twin_throughput_ratio"] = out["throughput_tps"] / out["twin_offered_tps"]
    return out


def _cli(argv: Iterable[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Generate a twin sweep (packer.predictors.dataset).")
    ap.add_argument("--profile", required=True)
    ap.add_argument("--samples", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION_S)
    ap.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S)
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--executor", default="process")
    a = ap.parse_args(list(argv) if argv is not None else None)
    spec = SweepSpec(profile=a.profile, n_samples=a.samples, seed=a.seed, duration_s=a.duration, warmup_s=a.warmup)
    print(dumps(generate(spec, a.out, workers=a.workers, chunk_size=a.chunk_size, executor=a.executor)))


if __name__ == "__main__":
    _cli()
