"""The twin's engine fed by requests as they arrive (``packer serve-twin``): the same kernel, scheduler
and cost model as ``packer simulate``, advanced one step at a time.

``OnlineTwin.submit`` makes a request known at a clock time, ``step`` runs one engine step and says
which requests emitted a token; the caller (the HTTP server) keeps the clock in step with the wall
clock. Adapters can be added and evicted while it runs, as vLLM's load/unload endpoints do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Scenario
from ..profile import Profile
from . import kernel as K
from .engine import Twin, warm_up

__all__ = ["OnlineTwin", "StepOutcome", "BASE_MODEL"]

BASE_MODEL = -1  # ``submit(adapter=BASE_MODEL)``: a request for the base model, which needs no LoRA slot


@dataclass(frozen=True)
class StepOutcome:
    """What one ``step`` did: its ``STEP_*`` code, the clock after it (s), its cost (ms), the requests
    that emitted a token (with their tokens so far and whether that was the last) and those the
    waiting cap dropped at admission."""

    code: int
    now_s: float
    step_ms: float
    emitted: np.ndarray      # request ids
    generated: np.ndarray    # their output tokens so far
    finished: np.ndarray     # bool: the token was the request's last
    dropped: np.ndarray      # request ids refused at admission (the waiting queue was full)


_warm = False


def _warm_up_stepping(twin: Twin) -> None:
    """Compile (or load from numba's cache) the stepping kernel once per process, before serving: compiling
    it at the first request would stall the server's clock for seconds."""
    global _warm
    if _warm:
        return
    warm_up()
    st = twin.engine_state(1, online=True)
    st.add_requests(np.zeros(1), np.zeros(1, np.int64), np.ones(1, np.int64), np.ones(1, np.int64))
    for _ in range(1000):
        if K.advance(*st.args(), 1) not in (K.STEP_RAN, K.STEP_WAITED):
            break
    st.abort(0)
    _warm = True


class OnlineTwin:
    """One simulated vLLM server that learns of requests as they arrive."""

    def __init__(self, scenario: Scenario, profile: Profile, capacity: int = 4096):
        self.twin = Twin(scenario, profile)
        self.state = self.twin.engine_state(capacity, online=True)
        _warm_up_stepping(self.twin)

    @property
    def now(self) -> float:
        """The engine's clock (simulated seconds since start)."""
        return self.state.now

    @property
    def kv_capacity_tokens(self) -> int:
        return int(self.state.cfg[K.I_KV_BLOCKS] * self.state.cfg[K.I_BLOCK])

    def add_adapter(self, rank: int) -> int:
        """Serve an adapter of ``rank``; returns its index for ``submit``."""
        ld = self.twin.profile.loading
        return self.state.add_adapter(ld.cpu_to_gpu(rank), ld.disk_to_cpu(rank))

    def evict_adapter(self, adapter: int) -> None:
        self.state.evict_adapter(adapter)

    def submit(self, adapter: int, prompt_len: int, output_len: int, at_s: float) -> int:
        """A request arriving at ``at_s`` (not before the last one); returns its id. It joins the waiting
        queue at the first step that starts at or after ``at_s`` (or is dropped there if the queue is
        at the profile's waiting cap: ``StepOutcome.dropped``), after the profile's admission delay for
        the adapters served so far."""
        st = self.state
        if self.twin.scenario.server.enable_lora:
            at_s += self.twin.profile.client.admission_delay_ms(st.n_adapters) / 1e3
        n = st.n_known
        if n and at_s < st.arrival_s[n - 1]:
            at_s = float(st.arrival_s[n - 1])
        a = st.n_adapters if adapter == BASE_MODEL else adapter
        return st.add_requests(np.array([at_s]), np.array([a]), np.array([max(1, prompt_len)]),
                               np.array([max(1, output_len)]))

    def abort(self, request: int) -> bool:
        """Remove a waiting or running request (its client went away); whether it was in the engine."""
        return self.state.abort(request)

    def pending(self) -> bool:
        """Whether anything is running, waiting or known but not yet admitted."""
        sv = self.state.sv
        return bool(sv[K.V_N_RUNNING] or sv[K.V_N_WAITING] or sv[K.V_NEXT_ARRIVAL] < sv[K.V_N_KNOWN])

    def step(self) -> StepOutcome:
        """Run one engine step (admitting the known arrivals up to the clock first)."""
        st = self.state
        before = int(st.sv[K.V_NEXT_ARRIVAL])
        code = K.advance(*st.args(), 1)
        after = int(st.sv[K.V_NEXT_ARRIVAL])
        admitted = np.arange(before, after)
        dropped = admitted[st.state[before:after] == K.S_DROPPED]
        if code == K.STEP_BAD:
            raise RuntimeError(f"the profile's step cost is not a step time ({st.counters[K.C_BAD_STEP_MS]:.3g} ms)")
        if code != K.STEP_RAN:
            empty = np.zeros(0, dtype=np.int64)
            return StepOutcome(code, st.now, 0.0, empty, empty, np.zeros(0, dtype=bool), dropped)
        n = int(st.sv[K.V_N_SCHED])
        ran = st.sched[:n]
        emitted = ran[st.sched_emit[:n] != 0].copy()
        return StepOutcome(code, st.now, float(st.fv[K.T_STEP_MS]), emitted, st.generated[emitted].copy(),
                           st.state[emitted] == K.S_DONE, dropped)

    # ---- what /metrics reports ------------------------------------------------------------------
    def status(self, request: int) -> int:
        """The request's state (``kernel.S_*``)."""
        return int(self.state.state[request])

    def counts(self) -> dict[str, float]:
        st = self.state
        blocks = int(st.cfg[K.I_KV_BLOCKS])
        return {"running": int(st.sv[K.V_N_RUNNING]), "waiting": int(st.sv[K.V_N_WAITING]),
                "kv_usage": (blocks - int(st.sv[K.V_FREE_BLOCKS])) / blocks if blocks else 0.0,
                "preemptions": int(st.counters[K.C_PREEMPTIONS])}

    def adapters_in_flight(self) -> tuple[list[int], list[int]]:
        """Adapter indices with running requests, and with waiting ones (the base model excluded)."""
        st = self.state
        n_lora = st.n_adapters
        run = np.unique(st.adapter[st.running[:int(st.sv[K.V_N_RUNNING])]])
        wait = np.flatnonzero(st.a_head[:n_lora] >= 0)
        return [int(a) for a in run if a < n_lora], [int(a) for a in wait]
