"""Python API of the twin: scenario in, ``SimulationResult`` out.

The engine checks start-up memory, draws the requests, packs the profile into an engine state
(``state.py``: the kernel's plain arrays), runs the numba step loop (``kernel.py``) over it and
summarises what it returns.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..model import Scenario, parse_scenario
from ..errors import InputError
from ..profile import MIN_STEP_MS, Profile, load_profile
from . import kernel as K
from .state import EngineState
from .result import AdapterStats, RequestLog, SimulationResult
from .workload_gen import Requests, generate_requests

__all__ = ["simulate", "Twin", "summarise_run", "refused_run", "client_output_len", "warm_up", "STARVED_RATIO", "SERIES_BUCKET_S"]

SERIES_BUCKET_S = 10.0
# A queue "diverges" when, over the second half of the run, it grows by more than this fraction of
# the requests that arrived in that half, and by at least DIVERGE_MIN requests.
DIVERGE_FRACTION = 0.05
DIVERGE_MIN = 200
STARVED_RATIO = 0.9


@dataclass(frozen=True)
class Twin:
    """A digital twin of one vLLM server: a profile and a server config, run on many workloads.

    ``Twin(profile, server).run(workload)`` is what ``simulate(scenario)`` does; keep a ``Twin`` to
    simulate many workloads on the same server.
    """

    scenario: Scenario
    profile: Profile

    @classmethod
    def from_scenario(cls, scenario: Scenario | Mapping[str, Any], profile: Profile | str | None = None) -> "Twin":
        sc = parse_scenario(scenario)
        return cls(sc, load_profile(profile if profile is not None else sc.profile))

    def kv_capacity_tokens(self) -> int:
        s = self.scenario.server
        return self.profile.memory.kv_tokens(s.max_loras, s.max_lora_rank, s.gpu_memory_utilization, s.enable_lora)

    def memory_error(self) -> str | None:
        s = self.scenario.server
        return self.profile.memory.startup_error(s.max_loras, s.max_lora_rank, s.gpu_memory_utilization,
                                                 s.enable_lora)

    def run(self, requests: Requests | None = None, keep_requests: bool = False) -> SimulationResult:
        """Simulate the scenario, on pre-drawn ``requests`` if given (else drawn from the workload).

        ``keep_requests`` attaches a per-request ``RequestLog``. Wall time excludes JIT compilation."""
        warm_up()
        t0 = time.perf_counter()
        sc, prof = self.scenario, self.profile
        kv_tokens = self.kv_capacity_tokens()
        err = self.memory_error()
        if requests is None:
            requests = generate_requests(sc.workload)
        output_len = client_output_len(requests.output_len, prof.client.output_len_scale)
        if err is not None:  # the server does not start; the load it was offered is still reported
            return refused_run(sc, prof, kv_tokens, requests, output_len, err, t0)
        st = self.engine_state(len(requests.arrival_s), kv_tokens)
        delay_s = self.admission_delay_s()
        # The engine sees a request when it is admitted; latencies count from when it was sent.
        admitted_s = requests.arrival_s + delay_s if delay_s else requests.arrival_s
        st.add_requests(admitted_s, requests.adapter, requests.prompt_len, output_len)
        K.run_to_end(*st.args())
        out = _outputs(st)
        _check_steps(prof, out[0])
        result = summarise_run(sc, prof, kv_tokens, requests, output_len, out, t0)
        if keep_requests:
            _, first_tok, finish, *_, state = out
            log = RequestLog(requests.arrival_s, requests.adapter, requests.prompt_len, output_len,
                             first_tok, finish, state)
            result = dataclasses.replace(result, requests=log)
        return result

    def admission_delay_s(self) -> float:
        """Seconds between a request being sent and its entry into the waiting queue (the profile's
        ``client.admission_delay_ms`` for the adapters this server serves; 0 without LoRA)."""
        if not self.scenario.server.enable_lora:
            return 0.0
        return self.profile.client.admission_delay_ms(len(self.scenario.workload.adapters)) / 1e3

    def engine_state(self, n_requests: int, kv_tokens: int | None = None, *, online: bool = False) -> EngineState:
        """A fresh engine for this server with room for ``n_requests``. ``online``: no window (the clock
        runs until stopped) and no series, for requests that arrive as it runs (``packer serve-twin``)."""
        prof = self.profile
        kv = self.kv_capacity_tokens() if kv_tokens is None else kv_tokens
        cost = self._cost_vector()
        if online:
            cost[K.F_DURATION] = math.inf
        n_buckets = 0 if online else int(np.ceil(cost[K.F_DURATION] / cost[K.F_BUCKET_S]))
        ranks = np.array([a.rank for a in self.scenario.workload.adapters], dtype=np.float64)
        return EngineState.new(self._cfg_vector(kv), cost, np.asarray(prof.step.decode_batch, dtype=np.float64),
                               np.asarray(prof.step.decode_ms, dtype=np.float64),
                               prof.loading.cpu_to_gpu(ranks), prof.loading.disk_to_cpu(ranks), n_requests, n_buckets)

    def _cfg_vector(self, kv_tokens: int) -> np.ndarray:
        s, mem = self.scenario.server, self.profile.memory
        cfg = np.zeros(K.I_N_CFG, dtype=np.int64)
        cfg[K.I_MAX_LORAS] = s.max_loras
        cfg[K.I_CPU_LORAS] = self.scenario.cpu_loras
        cfg[K.I_MAX_SEQS] = s.max_num_seqs
        cfg[K.I_MAX_BATCHED] = s.max_num_batched_tokens
        cfg[K.I_KV_BLOCKS] = kv_tokens // mem.block_size
        cfg[K.I_BLOCK] = mem.block_size
        cfg[K.I_MAX_WAITING] = self.profile.client.max_waiting
        cfg[K.I_LORA_ON] = int(s.enable_lora)
        return cfg

    def _cost_vector(self) -> np.ndarray:
        st, sch = self.profile.step, self.profile.scheduler
        rf = st.rank_factor(self.scenario.server.max_lora_rank)
        c = np.zeros(K.F_N_COST, dtype=np.float64)
        slots = self.scenario.server.max_loras
        c[K.F_PREFILL_TOK] = st.prefill_ms_per_token
        c[K.F_LORA_BASE] = st.lora_ms_base * rf
        c[K.F_LORA_TOK] = (st.lora_ms_per_token + st.lora_ms_per_token_slot * slots) * rf
        c[K.F_LORA_ADAPTER] = st.lora_ms_per_adapter
        c[K.F_ATTN_KV_TOK] = st.attention_ms_per_kv_token
        c[K.F_CTX_REF] = st.decode_ctx_ref
        c[K.F_SCHED_BASE] = sch.ms_base
        c[K.F_SCHED_RUNNING] = sch.ms_per_running
        c[K.F_SCHED_WAITING] = sch.ms_per_waiting
        c[K.F_DURATION] = self.scenario.workload.horizon_s
        c[K.F_BUCKET_S] = SERIES_BUCKET_S
        c[K.F_MIN_STEP_MS] = MIN_STEP_MS
        return c


def simulate(scenario: Scenario | Mapping[str, Any], *, profile: Profile | str | None = None) -> SimulationResult:
    """Simulate one vLLM server serving the scenario's adapters; see ``SimulationResult``.

    ``scenario`` is a ``Scenario`` or a dict in the scenario-file format; ``profile`` overrides the
    scenario's profile (a name or a ``Profile``).
    """
    return Twin.from_scenario(scenario, profile).run()


@functools.cache
def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel once per process, outside any timing."""
    one = np.ones(1)
    st = EngineState.new(np.array([1, 1, 1, 16, 8, 16, 10, 1], np.int64),
                         np.array([0.0] * (K.F_N_COST - 3) + [1.0, 1.0, 0.0]), np.array([1.0, 2.0]),
                         np.array([1.0, 1.0]), one, one, 1, 1)
    st.add_requests(np.zeros(1), np.zeros(1, np.int32), np.ones(1, np.int32), np.ones(1, np.int32))
    K.run_to_end(*st.args())
    st.abort(0)


def _outputs(st: EngineState) -> tuple:
    """What a finished run reports, in the order ``_summarise`` reads it."""
    n = st.n_known
    return (st.counters, st.first_token_s[:n], st.finish_s[:n], st.itl_sum_s[:n], st.itl_count[:n],
            st.series[K.SR_WAITING], st.series[K.SR_RUNNING], st.series[K.SR_KV], st.state[:n])


def _check_steps(prof: Profile, counters: np.ndarray) -> None:
    """Refuse a run the kernel stopped because a step's cost was not a real step time."""
    if counters[K.C_BAD_STEP]:
        raise InputError("profile", f"{prof.name}: a step of {int(counters[K.C_BAD_STEP_SEQS])} requests costs "
                         f"{counters[K.C_BAD_STEP_MS]:.3g} ms, below the {MIN_STEP_MS:g} ms any engine step takes; "
                         "the profile's step costs must add up to a positive time (check attention_ms_per_kv_token "
                         "against decode_ctx_ref and decode_ms)")


def client_output_len(output_len: np.ndarray, scale: float) -> np.ndarray:
    """The output tokens requests get, given the drawn ones and the profile's ``client.output_len_scale``
    (the measured mean generated / requested; ``packer bench`` asks for these as ``max_tokens``)."""
    if scale == 1.0:
        return output_len
    return np.maximum(1, np.rint(output_len * scale)).astype(output_len.dtype)


def summarise_run(sc: Scenario, prof: Profile, kv_tokens: int, req: Requests, output_len: np.ndarray,
                  out: tuple, t0: float) -> SimulationResult:
    """A run's ``SimulationResult`` from its per-request outcomes and series (``out``, in the order
    ``_outputs`` gives them): the one summary of a twin run and of a live benchmark (``packer bench``),
    so both apply the same window, the same latency statistics and the same starvation rule."""
    counters, first_tok, finish, itl_sum, itl_cnt, waiting_s, running_s, kv_s, state = out
    T, W = sc.workload.duration_s, sc.workload.warmup_s
    # The measured window is [W, W + T) (the whole run when W = 0): requests finished in it, arrivals
    # in it, its series buckets. Requests still in the future when the run stopped were never sent.
    done = np.isfinite(finish) & (finish >= W)
    in_window = req.arrival_s >= W
    k0 = min(len(waiting_s), int(round(W / SERIES_BUCKET_S)))
    waiting_s, running_s, kv_s = waiting_s[k0:], running_s[k0:], kv_s[k0:]
    generated, offered, offered_rps = _offered(sc, req, output_len)
    not_sent = int(np.count_nonzero(in_window & (state == K.S_DROPPED)))
    arrived = int(np.count_nonzero(in_window & (state != K.S_DROPPED) & (state != K.S_FUTURE)))
    in_tok = float(req.prompt_len[done].sum())
    out_tok = float(output_len[done].sum())

    ttft = (first_tok[done] - req.arrival_s[done]) * 1e3
    tokens_itl = float(itl_cnt[done].sum())
    mean_itl = float(itl_sum[done].sum()) / tokens_itl * 1e3 if tokens_itl else float("nan")
    multi = done & (itl_cnt > 0)
    tpot = itl_sum[multi] / itl_cnt[multi] * 1e3

    growth, diverging = _queue_trend(waiting_s, req.arrival_s[in_window] - W, T)
    thr = (in_tok + out_tok) / T
    ratio = thr / offered if offered > 0 else 1.0
    starved_thr = bool(ratio < STARVED_RATIO)
    steps = int(counters[K.C_STEPS])
    adapters = _per_adapter(sc, req, first_tok, np.isfinite(finish), in_window & (state != K.S_DROPPED), W + T)
    worst = max((a.p99_ttft_ms for a in adapters if np.isfinite(a.p99_ttft_ms)), default=float("nan"))
    return SimulationResult(
        profile=prof.name, memory_error=None, kv_capacity_tokens=kv_tokens,
        throughput_tps=thr, input_tps=in_tok / T, output_tps=out_tok / T,
        offered_tps=offered, offered_rps=offered_rps, throughput_ratio=ratio,
        generated=generated, arrived=arrived, not_sent=not_sent, finished=int(done.sum()),
        mean_ttft_ms=_stat(ttft, np.mean), p50_ttft_ms=_pct(ttft, 50), p99_ttft_ms=_pct(ttft, 99),
        mean_itl_ms=mean_itl, p50_tpot_ms=_pct(tpot, 50), p99_tpot_ms=_pct(tpot, 99),
        mean_running=float(running_s.mean()) if len(running_s) else 0.0,
        max_running=int(counters[K.C_MAX_RUNNING]),
        mean_waiting=float(waiting_s.mean()) if len(waiting_s) else 0.0,
        max_waiting=int(counters[K.C_MAX_WAITING]), end_waiting=int(counters[K.C_END_WAITING]),
        waiting_growth_rps=growth, queue_diverging=diverging,
        mean_kv_usage=float(kv_s.mean()) * prof.memory.block_size / kv_tokens if len(kv_s) else 0.0,
        max_kv_usage=counters[K.C_MAX_KV_USED] * prof.memory.block_size / kv_tokens,
        mean_distinct_adapters=counters[K.C_SUM_DISTINCT] / steps if steps else 0.0,
        preemptions=int(counters[K.C_PREEMPTIONS]), gpu_adapter_loads=int(counters[K.C_GPU_LOADS]),
        disk_adapter_loads=int(counters[K.C_DISK_LOADS]), steps=steps,
        worst_adapter_p99_ttft_ms=worst,
        starved_by_throughput=starved_thr, starved=starved_thr or diverging,
        sim_seconds=W + T, wall_seconds=time.perf_counter() - t0,
        adapters=adapters, waiting_series=tuple(float(x) for x in waiting_s), series_bucket_s=SERIES_BUCKET_S,
    )


def refused_run(sc: Scenario, prof: Profile, kv_tokens: int, req: Requests, output_len: np.ndarray, reason: str,
                t0: float) -> SimulationResult:
    """The result of a server that did not start (``memory_error`` = ``reason``): nothing served, the load
    it was offered still reported."""
    generated, offered_tps, offered_rps = _offered(sc, req, output_len)
    return SimulationResult(profile=prof.name, memory_error=reason, kv_capacity_tokens=kv_tokens,
                            offered_tps=offered_tps, offered_rps=offered_rps, generated=generated,
                            sim_seconds=0.0, wall_seconds=time.perf_counter() - t0)


def _offered(sc: Scenario, req: Requests, output_len: np.ndarray) -> tuple[int, float, float]:
    """The measured window's drawn load: requests that arrived in it, their tokens per second (prompt +
    output) and requests per second."""
    T, W = sc.workload.duration_s, sc.workload.warmup_s
    in_window = req.arrival_s >= W
    generated = int(np.count_nonzero(in_window))
    return generated, float(req.prompt_len[in_window].sum() + output_len[in_window].sum()) / T, generated / T


def _queue_trend(waiting_s: np.ndarray, arrival_s: np.ndarray, T: float) -> tuple[float, bool]:
    """Slope of the waiting queue over the run's second half (requests/s) and whether it diverges."""
    n = len(waiting_s)
    if n < 4:
        return 0.0, False
    half = waiting_s[n // 2:]
    t = (np.arange(n // 2, n) + 0.5) * SERIES_BUCKET_S
    slope = float(np.polyfit(t, half, 1)[0])
    growth = slope * (T / 2)
    arrived_second_half = float(np.count_nonzero(arrival_s >= T / 2))
    return slope, bool(growth > max(DIVERGE_MIN, DIVERGE_FRACTION * arrived_second_half))


def _per_adapter(sc: Scenario, req: Requests, first_tok: np.ndarray, done: np.ndarray, sent: np.ndarray,
                 end: float) -> tuple[AdapterStats, ...]:
    """Per adapter, over the ``sent`` requests (those that arrived in the measured window)."""
    n_ad = len(sc.workload.adapters)
    # Time to first token, or for requests without one yet, the wait so far at the window's end.
    wait = np.where(np.isfinite(first_tok), first_tok, end) - req.arrival_s
    sent_idx = np.flatnonzero(sent)
    order = sent_idx[np.argsort(req.adapter[sent_idx], kind="stable")]
    bounds = np.searchsorted(req.adapter[order], np.arange(n_ad + 1))
    stats = []
    for i, a in enumerate(sc.workload.adapters):
        idx = order[bounds[i]:bounds[i + 1]]
        fin = idx[done[idx]]
        ttft = (first_tok[fin] - req.arrival_s[fin]) * 1e3
        stats.append(AdapterStats(
            id=a.id, arrived=len(idx), finished=len(fin),
            mean_ttft_ms=_stat(ttft, np.mean), p99_ttft_ms=_pct(ttft, 99),
            max_wait_s=float(wait[idx].max()) if len(idx) else 0.0))
    return tuple(stats)


def _stat(x: np.ndarray, f) -> float:
    return float(f(x)) if len(x) else float("nan")


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if len(x) else float("nan")
