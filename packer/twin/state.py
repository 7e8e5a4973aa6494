"""The twin's engine state in one object: the plain arrays the numba step (``kernel.py``) works on.

``EngineState.new`` sizes the tables for a number of requests; ``add_requests`` makes requests known
and grows the tables when they are full (the online engine learns of requests as they arrive).
``args()`` is the argument tuple of ``kernel.advance`` and ``kernel.run_to_end``: the fields in
their declared order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from . import kernel as K

__all__ = ["EngineState", "ring_capacity"]

# Per-request fields: (name, dtype, initial value).
_REQUEST_FIELDS = (
    ("arrival_s", np.float64, 0.0), ("adapter", np.int32, 0), ("prompt_len", np.int32, 0),
    ("output_len", np.int32, 0), ("state", np.int8, K.S_FUTURE), ("computed", np.int64, 0),
    ("generated", np.int64, 0), ("blocks", np.int64, 0), ("qkey", np.int64, 0), ("nxt", np.int64, -1),
    ("prv", np.int64, -1), ("first_token_s", np.float64, np.nan), ("finish_s", np.float64, np.nan),
    ("itl_sum_s", np.float64, 0.0), ("itl_count", np.int64, 0), ("last_token_s", np.float64, 0.0))

# Per-adapter fields (one more entry than adapters: the base model's queue): (name, initial value).
_ADAPTER_FIELDS = (("a_head", -1), ("a_tail", -1), ("in_step", 0), ("gpu_slot", -1), ("gpu_used", 0),
                   ("cpu_slot", -1), ("cpu_used", 0))


def ring_capacity(n_requests: int, max_seqs: int) -> int:
    """Size of the waiting queue's ring: live entries plus stale ones (admitted from the middle, or the old
    entry of a preempted request) stay below 2 n + 4096 between compactions, and one step adds at most
    ``max_seqs`` preemptions."""
    cap = 1
    while cap < 2 * n_requests + 4096 + max_seqs:
        cap *= 2
    return cap


@dataclass(eq=False)
class EngineState:
    """One server's engine: config and costs, per-request and per-adapter tables, queues and counters."""

    cfg: np.ndarray            # int64[I_N_CFG]
    cost: np.ndarray           # float64[F_N_COST]
    decode_xs: np.ndarray      # the decode step cost over batch size
    decode_ys: np.ndarray
    gpu_load_ms: np.ndarray    # per adapter: CPU -> GPU slot
    disk_load_ms: np.ndarray   # per adapter: disk -> CPU cache
    # Per request.
    arrival_s: np.ndarray
    adapter: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    state: np.ndarray          # S_*
    computed: np.ndarray       # tokens whose KV is computed
    generated: np.ndarray      # output tokens emitted so far
    blocks: np.ndarray         # KV blocks held
    qkey: np.ndarray           # waiting-queue order
    nxt: np.ndarray            # per-adapter waiting list links
    prv: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    itl_sum_s: np.ndarray
    itl_count: np.ndarray
    last_token_s: np.ndarray
    # Per adapter, and last the base model (index = number of adapters).
    a_head: np.ndarray         # its waiting list
    a_tail: np.ndarray
    in_step: np.ndarray        # step stamp when the adapter joined the step's set
    gpu_slot: np.ndarray       # GPU slot holding it, -1 if none
    gpu_used: np.ndarray       # LRU stamps
    cpu_slot: np.ndarray
    cpu_used: np.ndarray
    gpu_slots: np.ndarray      # adapter in each GPU slot
    cpu_slots: np.ndarray      # adapter in each CPU cache slot
    # Queues, the last step, counters.
    ring: np.ndarray           # the global waiting queue (ring buffer, lazy deletion)
    running: np.ndarray        # running requests in admission order
    sched: np.ndarray          # the requests of the last step
    sched_tok: np.ndarray      # their scheduled tokens
    sched_emit: np.ndarray     # whether each emitted a token
    step_set: np.ndarray       # the adapters of the last step (room for all: without LoRA, or with running
                               # requests left out of a step, a step can hold more than max_loras)
    counters: np.ndarray       # float64[C_N]
    series: np.ndarray         # float64[SR_N, buckets]: time-weighted waiting, running, KV blocks
    sv: np.ndarray             # int64[V_N]: the engine's integer scalars
    fv: np.ndarray             # float64[T_N]: its clock and last step time

    @classmethod
    def new(cls, cfg: np.ndarray, cost: np.ndarray, decode_xs: np.ndarray, decode_ys: np.ndarray,
            gpu_load_ms: np.ndarray, disk_load_ms: np.ndarray, n_requests: int, n_buckets: int) -> "EngineState":
        """An empty engine (no request known yet) with room for ``n_requests``."""
        max_loras, cpu_loras, max_seqs = int(cfg[K.I_MAX_LORAS]), int(cfg[K.I_CPU_LORAS]), int(cfg[K.I_MAX_SEQS])
        n_adapters = len(gpu_load_ms)
        per_request = {name: np.full(n_requests, init, dtype=dt) for name, dt, init in _REQUEST_FIELDS}
        per_adapter = {name: np.full(n_adapters + 1, init, dtype=np.int64)  # + the base model
                       for name, init in _ADAPTER_FIELDS}
        seqs = max(max_seqs, 1) + 1
        sv = np.zeros(K.V_N, dtype=np.int64)
        sv[K.V_FREE_BLOCKS] = cfg[K.I_KV_BLOCKS]
        return cls(
            cfg=np.ascontiguousarray(cfg, dtype=np.int64), cost=np.ascontiguousarray(cost, dtype=np.float64),
            decode_xs=np.ascontiguousarray(decode_xs, dtype=np.float64),
            decode_ys=np.ascontiguousarray(decode_ys, dtype=np.float64),
            gpu_load_ms=np.ascontiguousarray(gpu_load_ms, dtype=np.float64),
            disk_load_ms=np.ascontiguousarray(disk_load_ms, dtype=np.float64),
            **per_request, **per_adapter,
            gpu_slots=np.full(max(max_loras, 1), -1, dtype=np.int64),
            cpu_slots=np.full(max(cpu_loras, 1), -1, dtype=np.int64),
            ring=np.empty(ring_capacity(n_requests, max_seqs), dtype=np.int64),
            running=np.empty(seqs, dtype=np.int64), sched=np.empty(seqs, dtype=np.int64),
            sched_tok=np.empty(seqs, dtype=np.int64), sched_emit=np.zeros(seqs, dtype=np.int8),
            step_set=np.empty(max(max_loras, n_adapters, 1), dtype=np.int64),  # a step's distinct adapters
            counters=np.zeros(K.C_N, dtype=np.float64), series=np.zeros((K.SR_N, n_buckets), dtype=np.float64),
            sv=sv, fv=np.zeros(K.T_N, dtype=np.float64))

    def args(self) -> tuple:
        """The arguments of ``kernel.run_to_end`` (and of ``kernel.advance``, before its ``max_steps``)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))

    @property
    def capacity(self) -> int:
        return len(self.arrival_s)

    @property
    def n_known(self) -> int:
        return int(self.sv[K.V_N_KNOWN])

    @property
    def now(self) -> float:
        return float(self.fv[K.T_NOW])

    def add_requests(self, arrival_s, adapter, prompt_len, output_len) -> int:
        """Make requests known to the engine (arrival times sorted, none before the last known one);
        returns the index of the first. Grows the tables when they are full."""
        m = len(arrival_s)
        i = self.n_known
        if i + m > self.capacity:
            self._grow(max(2 * self.capacity, i + m))
        self.arrival_s[i:i + m] = arrival_s
        self.adapter[i:i + m] = adapter
        self.prompt_len[i:i + m] = prompt_len
        self.output_len[i:i + m] = output_len
        self.sv[K.V_N_KNOWN] = i + m
        return i

    def abort(self, r: int) -> bool:
        """Remove request ``r`` if it is waiting or running (its client went away); whether it was."""
        return bool(K.abort_request(r, self.adapter, self.state, self.blocks, self.nxt, self.prv, self.a_head,
                                    self.a_tail, self.running, self.sv))

    @property
    def n_adapters(self) -> int:
        return len(self.gpu_load_ms)

    def add_adapter(self, gpu_load_ms: float, disk_load_ms: float) -> int:
        """Serve one more adapter (vLLM's load_lora_adapter); returns its index. The base model's queue
        moves up one index with its requests."""
        a = self.n_adapters
        self.gpu_load_ms = np.append(self.gpu_load_ms, gpu_load_ms)
        self.disk_load_ms = np.append(self.disk_load_ms, disk_load_ms)
        for name, init in _ADAPTER_FIELDS:
            old = getattr(self, name)
            setattr(self, name, np.insert(old, a, init))
        self.adapter[:self.n_known][self.adapter[:self.n_known] == a] = a + 1
        if len(self.step_set) < self.n_adapters:
            self.step_set = np.empty(self.n_adapters, dtype=np.int64)
        return a

    def evict_adapter(self, a: int) -> None:
        """Drop adapter ``a`` from its GPU slot and the CPU cache (vLLM's unload_lora_adapter); requests
        for it still in flight load it again when they run."""
        for slots, slot_of, used in ((self.gpu_slots, self.gpu_slot, K.V_N_ON_GPU),
                                     (self.cpu_slots, self.cpu_slot, K.V_N_IN_CPU)):
            k = int(slot_of[a])
            if k < 0:
                continue
            last = int(self.sv[used]) - 1
            if k != last:  # the slots in use stay the first n: the last one moves into the hole
                moved = int(slots[last])
                slots[k] = moved
                slot_of[moved] = k
            slots[last] = -1
            slot_of[a] = -1
            self.sv[used] = last

    def _grow(self, n_requests: int) -> None:
        """Room for ``n_requests``: tables and ring copied, queue order and ring positions kept."""
        old = self.capacity
        for name, dt, init in _REQUEST_FIELDS:
            grown = np.full(n_requests, init, dtype=dt)
            grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        cap = ring_capacity(n_requests, int(self.cfg[K.I_MAX_SEQS]))
        if cap > len(self.ring):
            ring = np.empty(cap, dtype=np.int64)
            k = np.arange(self.sv[K.V_RING_HEAD], self.sv[K.V_RING_TAIL], dtype=np.int64)
            ring[k & (cap - 1)] = self.ring[k & (len(self.ring) - 1)]
            self.ring = ring
