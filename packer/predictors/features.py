"""Features of one GPU query for the data-driven predictors (``tree``, ``forest``).

``features(query)`` turns a ``GpuQuery`` into one float64 vector, in the order of ``FEATURE_NAMES``;
``features_many(queries)`` stacks them into a 2-D array. Python only reads the queries' fields; one
numba kernel (``kernels.py``) computes the features of a whole batch, another those of one packed
query (``pack``); no pandas.
``expected_offered(rows, output_len_scale)`` is the offered load the twin draws in expectation,
from feature rows (what the predictors multiply their throughput ratio by, and training divides by).

The features (``FEATURE_DOCS`` holds the same text per name):

Adapter set (rates r_i in req/s, shares p_i = r_i / Σr, ranks k_i)
- ``n_adapters``: number of adapters served.
- ``total_rate_rps``, ``mean_rate_rps``, ``std_rate_rps`` (population), ``max_rate_rps``.
- ``rate_cv``: std / mean of the rates (0 for equal rates).
- ``max_share``: the largest p_i.
- ``effective_adapters``: 1 / Σ p_i², the number of equally loaded adapters with the same spread.
- ``rank_max``, ``rank_mean``, ``rank_std``: over adapters (unweighted).

Server flags
- ``max_lora_rank``, ``max_loras``, ``loras_per_adapter`` (= max_loras / n_adapters),
  ``max_num_seqs``, ``max_num_batched_tokens``, ``gpu_memory_utilization``.
- ``slot_pressure``: effective_adapters / max_loras (> 1: the traffic's adapters contend for slots).
- ``top_slots_share``: the traffic share of the max_loras busiest adapters (1 when every adapter
  fits in the slots at once).
- ``rate_per_slot_rps``: total_rate_rps / min(max_loras, n_adapters).

Load and lengths
- ``offered_tps``: Σr × (input_mean + output_mean), the nominal offered token load.
- ``input_mean``, ``output_mean``: the length spec's mean prompt and output tokens.
- ``length_distribution``: 0 sharegpt, 1 azure-conv, 2 fixed, 3 trace, 4 empirical.

Arrivals
- ``arrival_cv``, ``arrival_sigma``, ``arrival_period_s``: Poisson is cv 1, sigma 0, period 0;
  bursty is its cv, multiplier_sigma and period_s; a replayed trace has no closed form, so it is
  treated like bursty traffic with cv 1.5, sigma 0.5 and period 300 s (``TRACE_AS_BURSTY``).

Memory (the profile's start-up memory model, exact)
- ``kv_tokens``: KV-cache capacity in tokens, ``profile.memory.kv_tokens(max_loras, max_lora_rank,
  gpu_memory_utilization, enable_lora)`` (0 when nothing is left).
- ``offered_per_kv_token``: offered_tps / kv_tokens (offered_tps when kv_tokens is 0).

Fluid model (closed-form estimates from the profile's step-cost model; they give a single tree most
of the load-versus-capacity structure, the tree learns the corrections). With prompt tokens I and
output tokens O (output_mean × the profile's output_len_scale), a batch of B running requests costs
per step, as in the twin's kernel,

    step(B) = decode_ms(B) + attention_ms_per_kv_token·B·(I + O/2 − decode_ctx_ref) + prefill_ms·B·I/O
              + sched_ms_per_running·B + [LoRA] rank_factor·(lora_ms_base + (lora_ms_per_token
              + lora_ms_per_token_slot·max_loras)·B·(1 + I/O)) + lora_ms_per_adapter·D(B)

(each running request brings I/O prompt tokens per decode token; D(B) = min(max_loras, E(1 − e^(−B/E))),
E = effective_adapters, is the distinct adapters in a batch). B is limited by max_num_seqs, by the
token budget (max_num_batched_tokens / (1 + I/O)) and by the KV cache (kv_tokens / (I + O/2 + block_size)).
A request lives O steps, so a batch B serves 1000·B / (O·step(B)) requests/s.
- ``batch_limit``: that largest B.
- ``capacity_est_tps``: the rate served at the largest B, in nominal tokens/s (× (input_mean + output_mean)).
- ``load_factor``: offered_tps / capacity_est_tps (≈ 1 at the knee; > 1 overloaded).
- ``itl_est_ms``: step(B*) where B* is the batch that serves the offered rate (the largest B if
  overloaded): an estimate of the mean inter-token latency.

Slot contention (vLLM admits a waiting request of an adapter outside the step's adapter set only while
the set holds fewer than max_loras adapters; an adapter leaves the set when its last running request
finishes). A request lives about S = O · itl_est_ms / 1000 seconds, so adapter i has ρ_i = r_i·S
requests running on average (Little's law), and once in the set it stays for the busy period of an
M/G/∞ queue, (e^ρ_i − 1) / r_i. When max_loras < n_adapters (and LoRA is on), the max_loras busiest
adapters are the likely holders; the others wait for a holder to leave. At light load this, not
the fluid capacity, is what starves a server.
- ``busiest_running``: ρ of the busiest adapter.
- ``slot_holder_running``: ρ of the max_loras-th busiest adapter, the holder that leaves first
  (0 when every adapter fits the slots).
- ``slot_hold_log_s``: ln of that holder's busy period in seconds (−10 when every adapter fits).
- ``slot_turnover_log10``: log10 of the holders' slot releases per second, Σ r_i / (e^ρ_i − 1)
  over the max_loras busiest, per request/s of the other adapters (6 when every adapter fits;
  clipped to [−12, 6]).
- ``unslotted_rate_rps``: total rate of the adapters beyond the max_loras busiest (0 when all fit).
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..profile import Profile, load_profile
from .base import GpuQuery
from .kernels import (_C_ATTN, _C_BLOCK, _C_CTX_REF, _C_LORA_ADAPTER, _C_LORA_BASE, _C_LORA_SLOT, _C_LORA_TOK, _C_N,
                      _C_OUT_SCALE, _C_PREFILL, _C_RANK_REF, _C_RANK_SLOPE, _C_SCHED_BASE, _C_SCHED_RUNNING, _S_N,
                      N_FEATURES, _features_kernel, features_packed)

__all__ = ["FEATURE_NAMES", "FEATURE_DOCS", "TRACE_AS_BURSTY", "features", "features_many", "feature_index",
           "features_code",
           "expected_offered", "served_base", "profile_of"]

# (cv, multiplier_sigma, period_s) standing in for a replayed trace.
TRACE_AS_BURSTY = (1.5, 0.5, 300.0)
_RATES = attrgetter("rates")
_LENGTH_CODES = {"sharegpt": 0.0, "azure-conv": 1.0, "fixed": 2.0, "trace": 3.0, "empirical": 4.0}

FEATURE_DOCS: dict[str, str] = {
    "n_adapters": "number of adapters served",
    "total_rate_rps": "sum of the adapters' request rates (req/s)",
    "mean_rate_rps": "mean adapter rate (req/s)",
    "std_rate_rps": "population standard deviation of the adapter rates (req/s)",
    "max_rate_rps": "largest adapter rate (req/s)",
    "rate_cv": "coefficient of variation of the adapter rates (std / mean; 0 for equal rates)",
    "max_share": "largest adapter's share of the total rate",
    "effective_adapters": "effective number of adapters, 1 / sum(share^2)",
    "rank_max": "largest adapter rank",
    "rank_mean": "mean adapter rank (unweighted)",
    "rank_std": "population standard deviation of the adapter ranks",
    "max_lora_rank": "server --max-lora-rank (every GPU slot is reserved at this rank)",
    "max_loras": "server --max-loras (GPU adapter slots)",
    "loras_per_adapter": "max_loras / n_adapters",
    "slot_pressure": "effective_adapters / max_loras (> 1: adapters contend for slots)",
    "top_slots_share": "traffic share of the max_loras busiest adapters (1 if all adapters fit the slots)",
    "rate_per_slot_rps": "total_rate_rps / min(max_loras, n_adapters) (req/s)",
    "offered_tps": "nominal offered token load, total_rate * (input_mean + output_mean) (tokens/s)",
    "input_mean": "mean prompt tokens per request",
    "output_mean": "mean output tokens per request",
    "length_distribution": "length distribution code: 0 sharegpt, 1 azure-conv, 2 fixed, 3 trace, 4 empirical",
    "arrival_cv": "inter-arrival coefficient of variation (Poisson 1; trace treated as 1.5)",
    "arrival_sigma": "bursty rate-multiplier log-normal sigma (Poisson 0; trace treated as 0.5)",
    "arrival_period_s": "bursty multiplier period in seconds (Poisson 0; trace treated as 300)",
    "kv_tokens": "KV-cache capacity in tokens from the profile's memory model (0 if nothing is left)",
    "offered_per_kv_token": "offered_tps / kv_tokens (offered_tps if kv_tokens is 0)",
    "max_num_seqs": "server --max-num-seqs",
    "max_num_batched_tokens": "server --max-num-batched-tokens (the per-step token budget)",
    "gpu_memory_utilization": "server --gpu-memory-utilization",
    "batch_limit": "fluid model: the largest running batch (max_num_seqs, token budget, KV cache)",
    "capacity_est_tps": "fluid model: nominal tokens/s served at the largest batch",
    "load_factor": "offered_tps / capacity_est_tps",
    "itl_est_ms": "fluid model: step time at the batch that serves the offered rate (ms)",
    "busiest_running": "slot contention: mean running requests of the busiest adapter (rate x request lifetime)",
    "slot_holder_running": "slot contention: mean running requests of the max_loras-th busiest adapter (0 if all fit)",
    "slot_hold_log_s": "slot contention: ln of that adapter's M/G/inf busy period in seconds (-10 if all fit)",
    "slot_turnover_log10": "slot contention: log10 of slot releases per request of the adapters beyond the "
                           "max_loras busiest (6 if all fit)",
    "unslotted_rate_rps": "slot contention: total rate of the adapters beyond the max_loras busiest (req/s; 0 if all fit)",
}
FEATURE_NAMES: tuple[str, ...] = tuple(FEATURE_DOCS)
if len(FEATURE_NAMES) != N_FEATURES:  # the kernel writes N_FEATURES values, in this order
    raise ImportError(f"features.py names {len(FEATURE_NAMES)} features, kernels.py computes {N_FEATURES}")
_INDEX = {n: i for i, n in enumerate(FEATURE_NAMES)}


@lru_cache(maxsize=1)
def features_code() -> str:
    """A hash of the code that computes the features (this module and ``kernels.py``): stored with
    a sweep's feature rows, so that rows computed by other code are recomputed, not reused."""
    from . import kernels
    return hashlib.sha256(Path(__file__).read_bytes() + Path(kernels.__file__).read_bytes()).hexdigest()[:16]


def feature_index(name: str) -> int:
    """Column of feature ``name`` in a feature vector."""
    return _INDEX[name]


_F_TOTAL_RATE, _F_INPUT_MEAN, _F_OUTPUT_MEAN = _INDEX["total_rate_rps"], _INDEX["input_mean"], _INDEX["output_mean"]





@lru_cache(maxsize=64)
def _consts(profile: str | Profile) -> tuple[np.ndarray, np.ndarray, np.ndarray, Profile]:
    p = load_profile(profile)
    st = p.step
    c = np.zeros(_C_N)
    c[_C_PREFILL], c[_C_ATTN], c[_C_CTX_REF] = st.prefill_ms_per_token, st.attention_ms_per_kv_token, st.decode_ctx_ref
    c[_C_LORA_BASE], c[_C_LORA_TOK], c[_C_LORA_SLOT] = st.lora_ms_base, st.lora_ms_per_token, st.lora_ms_per_token_slot
    c[_C_LORA_ADAPTER], c[_C_RANK_REF], c[_C_RANK_SLOPE] = st.lora_ms_per_adapter, st.lora_rank_ref, st.lora_rank_slope
    c[_C_SCHED_BASE], c[_C_SCHED_RUNNING] = p.scheduler.ms_base, p.scheduler.ms_per_running
    c[_C_OUT_SCALE], c[_C_BLOCK] = p.client.output_len_scale, p.memory.block_size
    return (np.asarray(st.decode_batch, dtype=np.float64), np.asarray(st.decode_ms, dtype=np.float64), c, p)


def profile_of(profile: str | Profile) -> Profile:
    """``load_profile``, cached (a shipped name, a profile file path or a ``Profile``)."""
    return _consts(profile)[3]


def expected_offered(rows, output_len_scale: float):
    """The offered token load the twin draws, in expectation, from feature rows: total_rate ×
    (input_mean + output_mean × the profile's ``client.output_len_scale``), the nominal
    ``offered_tps`` without the early-EOS scale. ``rows``: one row (a sequence of floats) or a
    (rows, features) array."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return rows[:, _F_TOTAL_RATE] * (rows[:, _F_INPUT_MEAN] + rows[:, _F_OUTPUT_MEAN] * output_len_scale)
    return rows[_F_TOTAL_RATE] * (rows[_F_INPUT_MEAN] + rows[_F_OUTPUT_MEAN] * output_len_scale)


def served_base(offered, load_factor):
    """min(offered, offered / load_factor): the offered load, or the fluid model's capacity when it is
    overloaded (scalars or arrays). The predictors' throughput head learns throughput / this base,
    which stays near 1 at any load, so a tree's constant leaves extrapolate to heavy overload (where
    throughput / offered would keep falling)."""
    if isinstance(offered, np.ndarray) or isinstance(load_factor, np.ndarray):
        lf = np.asarray(load_factor, dtype=np.float64)
        return np.where(np.isfinite(lf) & (lf > 1.0), offered / np.where(lf > 1.0, lf, 1.0), offered)
    return offered / load_factor if math.isfinite(load_factor) and load_factor > 1.0 else offered


@lru_cache(maxsize=4096)
def _kv_tokens(profile: str | Profile, max_loras: int, max_lora_rank: int, util: float, lora: bool) -> int:
    return profile_of(profile).memory.kv_tokens(max_loras, max_lora_rank, util, lora)


def features(query: GpuQuery, profile: Profile | None = None) -> np.ndarray:
    """The feature vector of one query (float64, in ``FEATURE_NAMES`` order).

    ``profile`` overrides the query's profile name (for custom profiles)."""
    key = profile if profile is not None else query.profile
    xs, ys, c, _ = _consts(key)
    return features_packed(pack(query, key), xs, ys, c)


def pack(query: GpuQuery, key) -> np.ndarray:
    """One query as a flat vector for ``features_packed``: its scalars, then its rates."""
    v = _scalars(query, key) + query.rates
    return np.fromiter(v, dtype=np.float64, count=len(v))


def features_many(queries: Sequence[GpuQuery], profile: Profile | None = None) -> np.ndarray:
    """Feature vectors of many queries, one row each (float64, shape (len(queries), len(FEATURE_NAMES)))."""
    out = np.empty((len(queries), len(FEATURE_NAMES)), dtype=np.float64)
    groups: dict[Any, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault(profile if profile is not None else q.profile, []).append(i)
    for key, idx in groups.items():
        qs = [queries[i] for i in idx] if len(groups) > 1 else queries
        xs, ys, c, _ = _consts(key)
        sizes = [len(q.rates) for q in qs]
        offsets = np.zeros(len(qs) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        total = int(offsets[-1])
        rates = np.fromiter(chain.from_iterable(map(_RATES, qs)), dtype=np.float64, count=total)
        S = np.array([_scalars(q, key) for q in qs], dtype=np.float64).reshape(len(qs), _S_N)
        block = np.empty((len(qs), len(FEATURE_NAMES)), dtype=np.float64) if len(groups) > 1 else out
        _features_kernel(S, offsets, rates, xs, ys, c, block)
        if len(groups) > 1:
            out[idx] = block
    return out


def _scalars(q: GpuQuery, key) -> tuple:
    s, L, arr = q.server, q.lengths, q.arrivals
    kind = arr.kind
    if kind == "bursty":
        a = (arr.cv, arr.multiplier_sigma, arr.period_s)
    elif kind == "trace":
        a = TRACE_AS_BURSTY
    else:
        a = (1.0, 0.0, 0.0)
    A, R, util, lora = s.max_loras, s.max_lora_rank, s.gpu_memory_utilization, s.enable_lora
    return (A, R, s.max_num_seqs, s.max_num_batched_tokens, util, lora, L.input_mean, L.output_mean,
            _LENGTH_CODES.get(L.distribution, 0.0), a[0], a[1], a[2], _kv_tokens(key, A, R, util, lora)
            ) + _rank_stats(q.ranks)


@lru_cache(maxsize=65536)
def _rank_stats(ranks: tuple[int, ...]) -> tuple[float, float, float]:
    """(max, mean, population std) of the ranks (cached: rank sets repeat across queries)."""
    n = len(ranks)
    mean = sum(ranks) / n
    return float(max(ranks)), mean, math.sqrt(max(sum(k * k for k in ranks) / n - mean * mean, 0.0))
