"""The twin's hot loop: vLLM V1's engine step for one server, compiled with numba.

``advance`` runs an engine state (``packer.twin.state.EngineState``: plain arrays, passed one
by one) for a number of steps: ``run_to_end`` over a whole pre-drawn workload (``packer simulate``),
and the online engine (``packer.twin.online``) one step at a time as requests arrive over HTTP. Both
run the same code, so the server behind ``packer serve-twin`` schedules exactly as ``packer simulate``
does. The step follows
vLLM 0.8.5's V1 scheduler (``vllm/v1/core/sched/scheduler.py``):

1. Running requests, in admission order, each take their remaining prompt chunk or one decode
   token from the token budget. When a KV block is missing, the most recently admitted running
   request is preempted (KV freed, progress reset, pushed to the head of the waiting queue).
2. Only if nothing was preempted: waiting requests in queue order. A request whose adapter is not
   in the step's adapter set while the set already holds ``max_loras`` adapters is *skipped* and
   the scan goes on; the scan stops at the sequence cap, at an exhausted budget, or at the first
   request whose KV blocks do not fit.

The waiting queue keeps vLLM's order with integer keys (arrivals get increasing keys, head
insertions decreasing ones) and a per-adapter linked list, so that when the adapter set is full the
admissible requests are found by merging the set's adapter lists instead of scanning tens of
thousands of skipped requests; the global queue is a ring buffer with lazy deletion. Requests for
the base model (adapter index = the number of adapters) need no slot: vLLM admits them whatever the
step's adapter set.

Every step advances the clock by at least ``cost[F_MIN_STEP_MS]``: a step whose cost is shorter, or not
a number, stops the run and is reported in ``C_BAD_STEP`` (its cost in ``C_BAD_STEP_MS``), so a run
takes at most duration / min step + 1 steps whatever the profile's numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Indices into the integer config vector.
I_MAX_LORAS, I_CPU_LORAS, I_MAX_SEQS, I_MAX_BATCHED, I_KV_BLOCKS, I_BLOCK, I_MAX_WAITING, I_LORA_ON, I_N_CFG = range(9)
# Indices into the float cost vector.
(F_PREFILL_TOK, F_LORA_BASE, F_LORA_TOK, F_LORA_ADAPTER, F_ATTN_KV_TOK, F_CTX_REF,
 F_SCHED_BASE, F_SCHED_RUNNING, F_SCHED_WAITING, F_DURATION, F_BUCKET_S, F_MIN_STEP_MS, F_N_COST) = range(13)
# Indices into the counter output.
(C_STEPS, C_PREEMPTIONS, C_GPU_LOADS, C_DISK_LOADS, C_BUSY_MS,
 C_SUM_RUNNING, C_SUM_DISTINCT, C_MAX_WAITING, C_MAX_RUNNING, C_END_WAITING, C_END_RUNNING,
 C_MAX_KV_USED, C_SUM_KV_USED, C_BAD_STEP, C_BAD_STEP_MS, C_BAD_STEP_SEQS, C_N) = range(17)
# The engine's scalars: integers in ``sv``, times in ``fv``.
(V_N_KNOWN, V_NEXT_ARRIVAL, V_N_WAITING, V_N_RUNNING, V_RING_HEAD, V_RING_TAIL, V_TAIL_KEY, V_HEAD_KEY,
 V_FREE_BLOCKS, V_STEP, V_N_ON_GPU, V_N_IN_CPU, V_N_SCHED, V_N_SET, V_N) = range(15)
T_NOW, T_STEP_MS, T_N = range(3)
# Rows of the time-weighted series (one column per bucket).
SR_WAITING, SR_RUNNING, SR_KV, SR_N = range(4)

# Request states.
S_FUTURE, S_WAITING, S_RUNNING, S_DONE, S_DROPPED, S_ABORTED = 0, 1, 2, 3, 4, 5
# How a call of ``advance`` ended.
STEP_RAN = 0      # a step ran: its tokens are emitted, the clock is at its end
STEP_WAITED = 1   # nothing could be scheduled: the clock moved to the next known arrival
STEP_IDLE = 2     # nothing running or waiting and no known arrival left
STEP_CLOSED = 3   # the window closed (before the step, or during it: its tokens are not counted)
STEP_BAD = 4      # the step's cost was not a real step time (see C_BAD_STEP)


@njit(cache=True)
def _interp(x, xs, ys):
    """Piecewise-linear interpolation with linear extrapolation on both ends."""
    n = xs.shape[0]
    if n == 1:
        return ys[0]
    if x <= xs[0]:
        j = 0
    elif x >= xs[n - 1]:
        j = n - 2
    else:
        j = 0
        while xs[j + 1] < x:
            j += 1
    return ys[j] + (ys[j + 1] - ys[j]) * (x - xs[j]) / (xs[j + 1] - xs[j])


@njit(cache=True)
def _cdiv(a, b):
    return (a + b - 1) // b


@njit(cache=True)
def _lru_take(slots, n_used, slot_of, last_used, in_step, step):
    """A slot for a new adapter: a free one, else the least recently used one not in this step."""
    if n_used < slots.shape[0]:
        return n_used
    victim = -1
    for k in range(slots.shape[0]):
        b = slots[k]
        if in_step[b] != step and (victim < 0 or last_used[b] < last_used[slots[victim]]):
            victim = k
    slot_of[slots[victim]] = -1
    return victim


@njit(cache=True)
def _unlink_waiting(r, a, nxt, prv, a_head, a_tail):
    """Take request ``r`` out of adapter ``a``'s waiting list."""
    if prv[r] >= 0:
        nxt[prv[r]] = nxt[r]
    else:
        a_head[a] = nxt[r]
    if nxt[r] >= 0:
        prv[nxt[r]] = prv[r]
    else:
        a_tail[a] = prv[r]


@njit(cache=True)
def advance(cfg, cost, decode_xs, decode_ys, gpu_load_ms, disk_load_ms,
            arrival_s, adapter, prompt_len, output_len, state, computed, generated, blocks, qkey, nxt, prv,
            first_token_s, finish_s, itl_sum_s, itl_count, last_token_s,
            a_head, a_tail, in_step, gpu_slot, gpu_used, cpu_slot, cpu_used, gpu_slots, cpu_slots,
            ring, running, sched, sched_tok, sched_emit, step_set, counters, series, sv, fv, max_steps):
    """Run engine steps (each first admits the known arrivals up to the clock) until one ends other than
    ``STEP_RAN`` / ``STEP_WAITED``, or ``max_steps`` calls of the step; returns the last ``STEP_*`` code.

    The loop lives here rather than in a per-step function because a call per step (40 array
    arguments) would cost more than the step itself at light load. After ``STEP_RAN``,
    ``sched[:sv[V_N_SCHED]]`` are the requests the last step ran and ``sched_emit`` says which of them
    emitted a token."""
    n = sv[V_N_KNOWN]
    max_loras = cfg[I_MAX_LORAS]
    cpu_loras = cfg[I_CPU_LORAS]
    max_seqs = cfg[I_MAX_SEQS]
    max_batched = cfg[I_MAX_BATCHED]
    kv_blocks = cfg[I_KV_BLOCKS]
    block = cfg[I_BLOCK]
    max_waiting = cfg[I_MAX_WAITING]
    lora_on = cfg[I_LORA_ON] != 0
    duration = cost[F_DURATION]
    bucket_s = cost[F_BUCKET_S]
    n_buckets = series.shape[1]
    mask = ring.shape[0] - 1
    n_lora = gpu_load_ms.shape[0]  # adapter index n_lora is the base model: no slot, always admissible

    nxt_arrival = sv[V_NEXT_ARRIVAL]
    n_waiting = sv[V_N_WAITING]
    n_running = sv[V_N_RUNNING]
    r_head = sv[V_RING_HEAD]
    r_tail = sv[V_RING_TAIL]
    tail_key = sv[V_TAIL_KEY]
    head_key = sv[V_HEAD_KEY]
    free_blocks = sv[V_FREE_BLOCKS]
    step = sv[V_STEP]
    n_on_gpu = sv[V_N_ON_GPU]
    n_in_cpu = sv[V_N_IN_CPU]
    now = fv[T_NOW]

    code = STEP_RAN
    n_sched = 0
    n_set = 0
    steps = 0
    while steps < max_steps:
        steps += 1
        # ---- arrivals up to now (the load generator stops sending at max_waiting) -----------
        if n_running == 0 and n_waiting == 0:
            if nxt_arrival >= n:
                code = STEP_IDLE
                break
            if arrival_s[nxt_arrival] >= duration:
                code = STEP_CLOSED
                break
            if arrival_s[nxt_arrival] > now:
                now = arrival_s[nxt_arrival]
        if now >= duration:
            code = STEP_CLOSED
            break
        while nxt_arrival < n and arrival_s[nxt_arrival] <= now:
            r = nxt_arrival
            nxt_arrival += 1
            if n_waiting >= max_waiting:
                state[r] = S_DROPPED
                continue
            state[r] = S_WAITING
            tail_key += 1
            qkey[r] = tail_key
            ring[r_tail & mask] = r
            r_tail += 1
            a = adapter[r]
            prv[r] = a_tail[a]
            nxt[r] = -1
            if a_tail[a] >= 0:
                nxt[a_tail[a]] = r
            else:
                a_head[a] = r
            a_tail[a] = r
            n_waiting += 1

        step += 1
        waiting_at_sched = n_waiting
        running_at_sched = n_running
        budget = max_batched
        n_sched = 0
        n_set = 0
        n_prefill_tok = 0
        n_decode = 0
        preempted = False

        # ---- 1. running requests ---------------------------------------------------------------
        i = 0
        while i < n_running and budget > 0:
            r = running[i]
            need_tokens = prompt_len[r] + generated[r] - computed[r]
            if need_tokens > budget:
                need_tokens = budget
            need_blocks = _cdiv(computed[r] + need_tokens, block) - blocks[r]
            scheduled = True
            while need_blocks > free_blocks:
                # Preempt the most recently admitted running request (recompute later).
                victim = running[n_running - 1]
                n_running -= 1
                free_blocks += blocks[victim]
                blocks[victim] = 0
                computed[victim] = 0
                state[victim] = S_WAITING
                head_key -= 1
                qkey[victim] = head_key
                r_head -= 1
                ring[r_head & mask] = victim
                a = adapter[victim]
                nxt[victim] = a_head[a]
                prv[victim] = -1
                if a_head[a] >= 0:
                    prv[a_head[a]] = victim
                else:
                    a_tail[a] = victim
                a_head[a] = victim
                n_waiting += 1
                counters[C_PREEMPTIONS] += 1
                preempted = True
                if victim == r:
                    scheduled = False
                    break
            if not scheduled:
                break
            free_blocks -= need_blocks
            blocks[r] += need_blocks
            sched[n_sched] = r
            sched_tok[n_sched] = need_tokens
            n_sched += 1
            budget -= need_tokens
            a = adapter[r]
            if a < n_lora and in_step[a] != step:
                in_step[a] = step
                step_set[n_set] = a
                n_set += 1
            i += 1

        # ---- 2. waiting requests (skipped entirely in a step that preempted) -------------------
        if not preempted:
            while n_waiting > 0 and budget > 0 and n_running < max_seqs:
                # Pick the next admissible request in queue order.
                if n_set < max_loras or not lora_on:
                    # Every request is admissible: take the queue head (dropping stale entries).
                    while state[ring[r_head & mask]] != S_WAITING:
                        r_head += 1
                    r = ring[r_head & mask]
                else:
                    # Set full: the first waiting request among the set's adapters and the base model's.
                    r = a_head[n_lora]
                    best = qkey[r] if r >= 0 else 0
                    for j in range(n_set):
                        h = a_head[step_set[j]]
                        if h >= 0 and (r < 0 or qkey[h] < best):
                            r = h
                            best = qkey[h]
                    if r < 0:
                        break
                num_tokens = prompt_len[r] + generated[r] - computed[r]
                if num_tokens > budget:
                    num_tokens = budget
                need_blocks = _cdiv(computed[r] + num_tokens, block) - blocks[r]
                if need_blocks > free_blocks:
                    break
                # Admit.
                free_blocks -= need_blocks
                blocks[r] += need_blocks
                state[r] = S_RUNNING
                a = adapter[r]
                _unlink_waiting(r, a, nxt, prv, a_head, a_tail)
                n_waiting -= 1
                running[n_running] = r
                n_running += 1
                sched[n_sched] = r
                sched_tok[n_sched] = num_tokens
                n_sched += 1
                budget -= num_tokens
                if a < n_lora and in_step[a] != step:
                    in_step[a] = step
                    step_set[n_set] = a
                    n_set += 1
            # Compact the ring when stale entries dominate (keeps the head scan amortised O(1)).
            if (r_tail - r_head) > 2 * n_waiting + 4096:
                w = r_head
                for k in range(r_head, r_tail):
                    rr = ring[k & mask]
                    if state[rr] == S_WAITING:
                        ring[w & mask] = rr
                        w += 1
                r_tail = w


        if n_sched == 0:
            # Nothing can run (cannot happen with a valid config, but never spin): wait for work.
            if nxt_arrival < n and arrival_s[nxt_arrival] < duration:
                now = max(now, arrival_s[nxt_arrival])
                code = STEP_WAITED
                continue
            code = STEP_IDLE
            break

        # ---- adapter activation: GPU slots and CPU cache as LRUs ---------------------------------
        load_ms = 0.0
        if lora_on:
            for j in range(n_set):
                a = step_set[j]
                gpu_used[a] = step
                cpu_used[a] = step
                if gpu_slot[a] < 0:
                    gpu_slot[a] = _lru_take(gpu_slots, n_on_gpu, gpu_slot, gpu_used, in_step, step)
                    n_on_gpu = min(n_on_gpu + 1, max_loras)
                    load_ms += gpu_load_ms[a]
                    counters[C_GPU_LOADS] += 1
                    if cpu_slot[a] < 0:
                        cpu_slot[a] = _lru_take(cpu_slots, n_in_cpu, cpu_slot, cpu_used, in_step, step)
                        n_in_cpu = min(n_in_cpu + 1, cpu_loras)
                        load_ms += disk_load_ms[a]
                        counters[C_DISK_LOADS] += 1
                    gpu_slots[gpu_slot[a]] = a
                    cpu_slots[cpu_slot[a]] = a

        # ---- step time ---------------------------------------------------------------------------
        ctx_tokens = 0
        for j in range(n_sched):
            r = sched[j]
            if sched_tok[j] == 1 and generated[r] > 0 and computed[r] + 1 == prompt_len[r] + generated[r]:
                n_decode += 1
                ctx_tokens += computed[r] + 1
            else:
                n_prefill_tok += sched_tok[j]
        gpu_ms = (_interp(float(n_sched), decode_xs, decode_ys) + cost[F_PREFILL_TOK] * n_prefill_tok
                  + cost[F_ATTN_KV_TOK] * (ctx_tokens - n_decode * cost[F_CTX_REF]))
        if lora_on:
            # F_LORA_TOK already folds in the per-slot term and the rank factor (see engine).
            gpu_ms += (cost[F_LORA_BASE] + cost[F_LORA_TOK] * (n_decode + n_prefill_tok)
                       + cost[F_LORA_ADAPTER] * n_set)
        sched_ms = (cost[F_SCHED_BASE] + cost[F_SCHED_RUNNING] * running_at_sched
                    + cost[F_SCHED_WAITING] * waiting_at_sched)
        step_ms = gpu_ms + sched_ms + load_ms
        if not step_ms >= cost[F_MIN_STEP_MS]:  # also NaN: the clock must move, or the run never ends
            counters[C_BAD_STEP] = 1
            counters[C_BAD_STEP_MS] = step_ms
            counters[C_BAD_STEP_SEQS] = n_sched
            code = STEP_BAD
            break
        t0 = now
        now += step_ms * 1e-3
        fv[T_STEP_MS] = step_ms

        # Time-weighted series (per bucket) and counters.
        kv_used = kv_blocks - free_blocks
        t = t0
        while t < now and t < duration:
            b = int(t / bucket_s)
            if b >= n_buckets:
                break
            t_end = min(now, (b + 1) * bucket_s, duration)
            dt = t_end - t
            series[SR_WAITING, b] += dt * n_waiting
            series[SR_RUNNING, b] += dt * n_running
            series[SR_KV, b] += dt * kv_used
            t = t_end
        counters[C_STEPS] += 1
        counters[C_BUSY_MS] += step_ms
        counters[C_SUM_RUNNING] += n_sched
        counters[C_SUM_DISTINCT] += n_set
        counters[C_SUM_KV_USED] += kv_used
        if n_waiting > counters[C_MAX_WAITING]:
            counters[C_MAX_WAITING] = n_waiting
        if n_running > counters[C_MAX_RUNNING]:
            counters[C_MAX_RUNNING] = n_running
        if kv_used > counters[C_MAX_KV_USED]:
            counters[C_MAX_KV_USED] = kv_used
        if now > duration:
            # The window closed during this step: its tokens are not counted.
            code = STEP_CLOSED
            break

        # ---- outputs: emit tokens, finish requests -------------------------------------------------
        any_done = False
        for j in range(n_sched):
            r = sched[j]
            computed[r] += sched_tok[j]
            sched_emit[j] = 0
            if computed[r] >= prompt_len[r] + generated[r]:
                sched_emit[j] = 1
                generated[r] += 1
                if generated[r] == 1:
                    first_token_s[r] = now
                else:
                    itl_sum_s[r] += now - last_token_s[r]
                    itl_count[r] += 1
                last_token_s[r] = now
                if generated[r] >= output_len[r]:
                    state[r] = S_DONE
                    finish_s[r] = now
                    free_blocks += blocks[r]
                    blocks[r] = 0
                    any_done = True
        if any_done:
            k = 0
            for j in range(n_running):
                r = running[j]
                if state[r] == S_RUNNING:
                    running[k] = r
                    k += 1
            n_running = k
        code = STEP_RAN

    sv[V_NEXT_ARRIVAL] = nxt_arrival
    sv[V_N_WAITING] = n_waiting
    sv[V_N_RUNNING] = n_running
    sv[V_RING_HEAD] = r_head
    sv[V_RING_TAIL] = r_tail
    sv[V_TAIL_KEY] = tail_key
    sv[V_HEAD_KEY] = head_key
    sv[V_FREE_BLOCKS] = free_blocks
    sv[V_STEP] = step
    sv[V_N_ON_GPU] = n_on_gpu
    sv[V_N_IN_CPU] = n_in_cpu
    sv[V_N_SCHED] = n_sched if code == STEP_RAN else 0
    sv[V_N_SET] = n_set
    fv[T_NOW] = now
    return code


# ---- the fast path of ``run_to_end`` ----------------------------------------------------------------------
# In a busy engine most running requests are plain decodes: one token each, no new KV block, no finish. The
# fast path keeps those in a *pool* whose counters advance implicitly with a global decode-step counter ``g``
# (a member's computed tokens are ``coff + g``), with its block-boundary steps counted per phase of ``g``
# modulo the block size and its finish steps in a heap, so a step costs what changes in it (plus one
# vectorised add per member: the inter-token time sums must add the same doubles in the same order). Running
# requests that are not plain decodes (a prefill still going on) sit in a short list and take the exact
# per-request code. A step whose running requests might not all get their tokens (the token budget or the
# free KV blocks could run out) or whose running adapters might need loading is run by ``advance`` itself on
# the materialised per-request state, and the pool is rebuilt after it: results are the same to the bit.


@njit(cache=True)
def _heap_push(heap, size, key):
    i = size
    heap[i] = key
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] <= key:
            break
        heap[i] = heap[p]
        i = p
    heap[i] = key
    return size + 1


@njit(cache=True)
def _heap_sift_down(heap, size, i):
    key = heap[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and heap[c + 1] < heap[c]:
            c += 1
        if heap[c] >= key:
            break
        heap[i] = heap[c]
        i = c
    heap[i] = key


@njit(cache=True)
def _heap_pop(heap, size):
    size -= 1
    if size > 0:
        heap[0] = heap[size]
        _heap_sift_down(heap, size, 0)
    return size


@njit(cache=True)
def _materialise(g, mid_step, block, prompt_len, computed, generated, blocks, itl_sum_s, itl_count, last_token_s,
                 state, p_rid, p_coff, p_acc, p_last, p_cnt, n_pool, run_l, n_ent, running):
    """Write the pool's implicit counters back to the per-request arrays and the running requests, compacted in
    admission order, into ``running``; returns their number. ``mid_step``: the run stopped inside step ``g + 1``
    after its KV blocks were allocated and before its tokens were counted."""
    for k in range(n_pool):
        r = p_rid[k]
        c = p_coff[k] + g
        computed[r] = c
        generated[r] = c + 1 - prompt_len[r]
        blocks[r] = _cdiv(c + 1, block) if mid_step else _cdiv(c, block)
        itl_sum_s[r] = p_acc[k]
        itl_count[r] = p_cnt[k]
        last_token_s[r] = p_last[k]
    m = 0
    for j in range(n_ent):
        r = run_l[j]
        if state[r] == S_RUNNING:
            running[m] = r
            m += 1
    return m


@njit(cache=True)
def _run_fast(cfg, cost, decode_xs, decode_ys, gpu_load_ms, disk_load_ms,
              arrival_s, adapter, prompt_len, output_len, state, computed, generated, blocks, qkey, nxt, prv,
              first_token_s, finish_s, itl_sum_s, itl_count, last_token_s,
              a_head, a_tail, in_step, gpu_slot, gpu_used, cpu_slot, cpu_used, gpu_slots, cpu_slots,
              ring, running, sched, sched_tok, sched_emit, step_set, counters, series, sv, fv):
    """``advance`` until a step ends other than ``STEP_RAN`` / ``STEP_WAITED``, with the pool of plain decodes
    (see above); leaves the engine state as ``advance`` would."""
    n = sv[V_N_KNOWN]
    max_loras = cfg[I_MAX_LORAS]
    cpu_loras = cfg[I_CPU_LORAS]
    max_seqs = cfg[I_MAX_SEQS]
    max_batched = cfg[I_MAX_BATCHED]
    kv_blocks = cfg[I_KV_BLOCKS]
    block = cfg[I_BLOCK]
    max_waiting = cfg[I_MAX_WAITING]
    lora_on = cfg[I_LORA_ON] != 0
    duration = cost[F_DURATION]
    bucket_s = cost[F_BUCKET_S]
    n_buckets = series.shape[1]
    mask = ring.shape[0] - 1
    n_lora = gpu_load_ms.shape[0]
    cap = running.shape[0] + 1
    key_mul = n + 1

    # The pool (dense, any order), its phases and finish heap; the running list with lazy deletion (admission
    # order); the other running requests; the running requests' adapters with their counts.
    p_rid = np.empty(cap, np.int64)
    p_coff = np.empty(cap, np.int64)
    p_ph = np.empty(cap, np.int64)
    p_acc = np.empty(cap, np.float64)
    p_last = np.empty(cap, np.float64)
    p_cnt = np.empty(cap, np.int64)
    pool_of = np.empty(max(n, 1), np.int32)  # 4 bytes a request: the only per-request table of the fast path
    heap = np.empty(cap, np.int64)
    cross = np.zeros(max(block, 1), np.int64)
    run_l = np.empty(2 * cap, np.int64)
    plist = np.empty(cap, np.int64)
    run_cnt = np.zeros(n_lora + 1, np.int64)
    act = np.empty(n_lora + 1, np.int64)
    act_pos = np.empty(n_lora + 1, np.int64)
    hq = np.empty(n_lora + 1, np.int64)  # the queue key of each adapter's first waiting request (kept in cache)

    g = 0
    n_pool = 0
    n_heap = 0
    sum_coff = 0
    n_ent = 0
    n_p = 0
    n_act = 0
    rebuild = True
    adapters_ok = True
    code = STEP_RAN
    n_set = 0
    while True:
        if rebuild:
            # ---- the pool from the per-request state (at the start, and after a step run by ``advance``) -------
            for j in range(n_act):
                run_cnt[act[j]] = 0
            n_act = 0
            n_pool = 0
            n_heap = 0
            sum_coff = 0
            n_p = 0
            cross[:] = 0
            n_ent = sv[V_N_RUNNING]
            adapters_ok = True
            for j in range(n_ent):
                r = running[j]
                run_l[j] = r
                a = adapter[r]
                if a < n_lora:
                    if run_cnt[a] == 0:
                        act_pos[a] = n_act
                        act[n_act] = a
                        n_act += 1
                        if lora_on and gpu_slot[a] < 0:
                            adapters_ok = False
                    run_cnt[a] += 1
                c = computed[r]
                if (generated[r] > 0 and prompt_len[r] + generated[r] - c == 1 and blocks[r] == _cdiv(c, block)):
                    coff = c - g
                    p_rid[n_pool] = r
                    p_coff[n_pool] = coff
                    ph = (1 - coff) % block
                    p_ph[n_pool] = ph
                    cross[ph] += 1
                    p_acc[n_pool] = itl_sum_s[r]
                    p_last[n_pool] = last_token_s[r]
                    p_cnt[n_pool] = itl_count[r]
                    pool_of[r] = n_pool
                    heap[n_heap] = (g + output_len[r] - generated[r]) * key_mul + r
                    n_heap += 1
                    sum_coff += coff
                    n_pool += 1
                else:
                    plist[n_p] = r
                    n_p += 1
            for j in range(n_heap // 2 - 1, -1, -1):
                _heap_sift_down(heap, n_heap, j)
            for a in range(n_lora + 1):
                h = a_head[a]
                hq[a] = qkey[h] if h >= 0 else 0
            rebuild = False

        # ---- can every running request take all its tokens, with no block missing and no adapter to load? ---
        gn = g + 1
        need_tok = n_pool
        need_blk = cross[gn % block] if n_pool > 0 else 0
        for j in range(n_p):
            r = plist[j]
            rem = prompt_len[r] + generated[r] - computed[r]
            need_tok += rem
            d = _cdiv(computed[r] + rem, block) - blocks[r]
            need_blk += d if d >= 0 else kv_blocks + 1  # (never negative; if it were, the exact walk decides)
        if not (adapters_ok and need_tok <= max_batched and need_blk <= sv[V_FREE_BLOCKS]):
            # ---- no: this step is ``advance``'s own, on the per-request state ----------------------------------
            sv[V_N_RUNNING] = _materialise(g, False, block, prompt_len, computed, generated, blocks, itl_sum_s,
                                           itl_count, last_token_s, state, p_rid, p_coff, p_acc, p_last, p_cnt,
                                           n_pool, run_l, n_ent, running)
            n_pool = 0
            n_ent = 0
            code = advance(cfg, cost, decode_xs, decode_ys, gpu_load_ms, disk_load_ms,
                           arrival_s, adapter, prompt_len, output_len, state, computed, generated, blocks, qkey, nxt,
                           prv, first_token_s, finish_s, itl_sum_s, itl_count, last_token_s,
                           a_head, a_tail, in_step, gpu_slot, gpu_used, cpu_slot, cpu_used, gpu_slots, cpu_slots,
                           ring, running, sched, sched_tok, sched_emit, step_set, counters, series, sv, fv, 1)
            n_set = sv[V_N_SET]
            if code != STEP_RAN and code != STEP_WAITED:
                return code
            rebuild = True
            continue

        # ---- yes: the step with the pool ---------------------------------------------------------------------
        nxt_arrival = sv[V_NEXT_ARRIVAL]
        n_waiting = sv[V_N_WAITING]
        n_running = n_pool + n_p
        r_head = sv[V_RING_HEAD]
        r_tail = sv[V_RING_TAIL]
        tail_key = sv[V_TAIL_KEY]
        head_key = sv[V_HEAD_KEY]
        free_blocks = sv[V_FREE_BLOCKS]
        step = sv[V_STEP]
        n_on_gpu = sv[V_N_ON_GPU]
        n_in_cpu = sv[V_N_IN_CPU]
        now = fv[T_NOW]
        mid_step = False

        # arrivals up to now (as in ``advance``)
        if n_running == 0 and n_waiting == 0:
            if nxt_arrival >= n:
                code = STEP_IDLE
                break
            if arrival_s[nxt_arrival] >= duration:
                code = STEP_CLOSED
                break
            if arrival_s[nxt_arrival] > now:
                now = arrival_s[nxt_arrival]
        if now >= duration:
            fv[T_NOW] = now
            code = STEP_CLOSED
            break
        while nxt_arrival < n and arrival_s[nxt_arrival] <= now:
            r = nxt_arrival
            nxt_arrival += 1
            if n_waiting >= max_waiting:
                state[r] = S_DROPPED
                continue
            state[r] = S_WAITING
            tail_key += 1
            qkey[r] = tail_key
            ring[r_tail & mask] = r
            r_tail += 1
            a = adapter[r]
            prv[r] = a_tail[a]
            nxt[r] = -1
            if a_tail[a] >= 0:
                nxt[a_tail[a]] = r
            else:
                a_head[a] = r
                hq[a] = tail_key
            a_tail[a] = r
            n_waiting += 1

        step += 1
        waiting_at_sched = n_waiting
        running_at_sched = n_running

        # 1. every running request takes all its tokens: the pool one each, the others their remaining prompt
        budget = max_batched - need_tok
        free_blocks -= need_blk
        n_sched = n_running
        n_ps = 0
        for j in range(n_p):
            r = plist[j]
            rem = prompt_len[r] + generated[r] - computed[r]
            blocks[r] = _cdiv(computed[r] + rem, block)
            sched[n_ps] = r
            sched_tok[n_ps] = rem
            n_ps += 1
        n_set = 0
        for j in range(n_act):
            a = act[j]
            in_step[a] = step
            step_set[n_set] = a
            n_set += 1

        # 2. waiting requests (as in ``advance``; the running list keeps finished entries until compacted)
        while n_waiting > 0 and budget > 0 and n_running < max_seqs:
            if n_set < max_loras or not lora_on:
                while state[ring[r_head & mask]] != S_WAITING:
                    r_head += 1
                r = ring[r_head & mask]
            else:
                r = a_head[n_lora]
                best = hq[n_lora]
                for j in range(n_set):
                    a = step_set[j]
                    h = a_head[a]
                    if h >= 0 and (r < 0 or hq[a] < best):
                        r = h
                        best = hq[a]
                if r < 0:
                    break
            num_tokens = prompt_len[r] + generated[r] - computed[r]
            if num_tokens > budget:
                num_tokens = budget
            need_blocks = _cdiv(computed[r] + num_tokens, block) - blocks[r]
            if need_blocks > free_blocks:
                break
            free_blocks -= need_blocks
            blocks[r] += need_blocks
            state[r] = S_RUNNING
            a = adapter[r]
            _unlink_waiting(r, a, nxt, prv, a_head, a_tail)
            h = a_head[a]
            if h >= 0:
                hq[a] = qkey[h]
            n_waiting -= 1
            if n_ent == run_l.shape[0]:
                m = 0
                for k in range(n_ent):
                    rr = run_l[k]
                    if state[rr] == S_RUNNING and rr != r:
                        run_l[m] = rr
                        m += 1
                n_ent = m
            run_l[n_ent] = r
            n_ent += 1
            n_running += 1
            sched[n_ps] = r
            sched_tok[n_ps] = num_tokens
            n_ps += 1
            n_sched += 1
            budget -= num_tokens
            if a < n_lora:
                if run_cnt[a] == 0:
                    act_pos[a] = n_act
                    act[n_act] = a
                    n_act += 1
                run_cnt[a] += 1
                if in_step[a] != step:
                    in_step[a] = step
                    step_set[n_set] = a
                    n_set += 1
        if (r_tail - r_head) > 2 * n_waiting + 4096:
            w = r_head
            for k in range(r_head, r_tail):
                rr = ring[k & mask]
                if state[rr] == S_WAITING:
                    ring[w & mask] = rr
                    w += 1
            r_tail = w

        sv[V_NEXT_ARRIVAL] = nxt_arrival
        sv[V_N_WAITING] = n_waiting
        sv[V_RING_HEAD] = r_head
        sv[V_RING_TAIL] = r_tail
        sv[V_TAIL_KEY] = tail_key
        sv[V_HEAD_KEY] = head_key
        sv[V_STEP] = step
        fv[T_NOW] = now
        mid_step = True
        if n_sched == 0:
            mid_step = False
            sv[V_FREE_BLOCKS] = free_blocks
            if nxt_arrival < n and arrival_s[nxt_arrival] < duration:
                fv[T_NOW] = max(now, arrival_s[nxt_arrival])
                code = STEP_WAITED
                continue
            code = STEP_IDLE
            break

        # adapter activation (as in ``advance``: only the adapters admitted in this step can need loading)
        load_ms = 0.0
        if lora_on:
            for j in range(n_set):
                a = step_set[j]
                gpu_used[a] = step
                cpu_used[a] = step
                if gpu_slot[a] < 0:
                    gpu_slot[a] = _lru_take(gpu_slots, n_on_gpu, gpu_slot, gpu_used, in_step, step)
                    n_on_gpu = min(n_on_gpu + 1, max_loras)
                    load_ms += gpu_load_ms[a]
                    counters[C_GPU_LOADS] += 1
                    if cpu_slot[a] < 0:
                        cpu_slot[a] = _lru_take(cpu_slots, n_in_cpu, cpu_slot, cpu_used, in_step, step)
                        n_in_cpu = min(n_in_cpu + 1, cpu_loras)
                        load_ms += disk_load_ms[a]
                        counters[C_DISK_LOADS] += 1
                    gpu_slots[gpu_slot[a]] = a
                    cpu_slots[cpu_slot[a]] = a
        sv[V_N_ON_GPU] = n_on_gpu
        sv[V_N_IN_CPU] = n_in_cpu
        sv[V_FREE_BLOCKS] = free_blocks

        # step time (the pool: n_pool decodes whose contexts add up to sum_coff + n_pool * gn)
        n_decode = n_pool
        ctx_tokens = sum_coff + n_pool * gn
        n_prefill_tok = 0
        for j in range(n_ps):
            r = sched[j]
            if sched_tok[j] == 1 and generated[r] > 0 and computed[r] + 1 == prompt_len[r] + generated[r]:
                n_decode += 1
                ctx_tokens += computed[r] + 1
            else:
                n_prefill_tok += sched_tok[j]
        gpu_ms = (_interp(float(n_sched), decode_xs, decode_ys) + cost[F_PREFILL_TOK] * n_prefill_tok
                  + cost[F_ATTN_KV_TOK] * (ctx_tokens - n_decode * cost[F_CTX_REF]))
        if lora_on:
            gpu_ms += (cost[F_LORA_BASE] + cost[F_LORA_TOK] * (n_decode + n_prefill_tok)
                       + cost[F_LORA_ADAPTER] * n_set)
        sched_ms = (cost[F_SCHED_BASE] + cost[F_SCHED_RUNNING] * running_at_sched
                    + cost[F_SCHED_WAITING] * waiting_at_sched)
        step_ms = gpu_ms + sched_ms + load_ms
        if not step_ms >= cost[F_MIN_STEP_MS]:
            counters[C_BAD_STEP] = 1
            counters[C_BAD_STEP_MS] = step_ms
            counters[C_BAD_STEP_SEQS] = n_sched
            code = STEP_BAD
            break
        t0 = now
        now += step_ms * 1e-3
        fv[T_NOW] = now
        fv[T_STEP_MS] = step_ms

        kv_used = kv_blocks - free_blocks
        t = t0
        while t < now and t < duration:
            b = int(t / bucket_s)
            if b >= n_buckets:
                break
            t_end = min(now, (b + 1) * bucket_s, duration)
            dt = t_end - t
            series[SR_WAITING, b] += dt * n_waiting
            series[SR_RUNNING, b] += dt * n_running
            series[SR_KV, b] += dt * kv_used
            t = t_end
        counters[C_STEPS] += 1
        counters[C_BUSY_MS] += step_ms
        counters[C_SUM_RUNNING] += n_sched
        counters[C_SUM_DISTINCT] += n_set
        counters[C_SUM_KV_USED] += kv_used
        if n_waiting > counters[C_MAX_WAITING]:
            counters[C_MAX_WAITING] = n_waiting
        if n_running > counters[C_MAX_RUNNING]:
            counters[C_MAX_RUNNING] = n_running
        if kv_used > counters[C_MAX_KV_USED]:
            counters[C_MAX_KV_USED] = kv_used
        if now > duration:
            code = STEP_CLOSED
            break
        mid_step = False

        # ---- outputs: the pool emits one token each; finishes come off the heap ---------------------------------
        g = gn
        for k in range(n_pool):
            p_acc[k] += now - p_last[k]
            p_last[k] = now
            p_cnt[k] += 1
        while n_heap > 0 and heap[0] // key_mul <= g:
            r = heap[0] % key_mul
            n_heap = _heap_pop(heap, n_heap)
            k = pool_of[r]
            c = p_coff[k] + g
            computed[r] = c
            generated[r] = c + 1 - prompt_len[r]
            itl_sum_s[r] = p_acc[k]
            itl_count[r] = p_cnt[k]
            last_token_s[r] = now
            state[r] = S_DONE
            finish_s[r] = now
            free_blocks += _cdiv(c, block)
            blocks[r] = 0
            cross[p_ph[k]] -= 1
            sum_coff -= p_coff[k]
            n_pool -= 1
            if k != n_pool:
                rl = p_rid[n_pool]
                p_rid[k] = rl
                p_coff[k] = p_coff[n_pool]
                p_ph[k] = p_ph[n_pool]
                p_acc[k] = p_acc[n_pool]
                p_last[k] = p_last[n_pool]
                p_cnt[k] = p_cnt[n_pool]
                pool_of[rl] = k
            a = adapter[r]
            if a < n_lora:
                run_cnt[a] -= 1
                if run_cnt[a] == 0:
                    n_act -= 1
                    last = act[n_act]
                    act[act_pos[a]] = last
                    act_pos[last] = act_pos[a]
            n_running -= 1
        # the others: as in ``advance``; a request left with one token to compute and one emitted joins the pool
        n_p = 0
        for j in range(n_ps):
            r = sched[j]
            computed[r] += sched_tok[j]
            if computed[r] >= prompt_len[r] + generated[r]:
                generated[r] += 1
                if generated[r] == 1:
                    first_token_s[r] = now
                else:
                    itl_sum_s[r] += now - last_token_s[r]
                    itl_count[r] += 1
                last_token_s[r] = now
                if generated[r] >= output_len[r]:
                    state[r] = S_DONE
                    finish_s[r] = now
                    free_blocks += blocks[r]
                    blocks[r] = 0
                    a = adapter[r]
                    if a < n_lora:
                        run_cnt[a] -= 1
                        if run_cnt[a] == 0:
                            n_act -= 1
                            last = act[n_act]
                            act[act_pos[a]] = last
                            act_pos[last] = act_pos[a]
                    n_running -= 1
                    continue
            c = computed[r]
            if generated[r] > 0 and prompt_len[r] + generated[r] - c == 1 and blocks[r] == _cdiv(c, block):
                coff = c - g
                p_rid[n_pool] = r
                p_coff[n_pool] = coff
                ph = (1 - coff) % block
                p_ph[n_pool] = ph
                cross[ph] += 1
                p_acc[n_pool] = itl_sum_s[r]
                p_last[n_pool] = last_token_s[r]
                p_cnt[n_pool] = itl_count[r]
                pool_of[r] = n_pool
                n_heap = _heap_push(heap, n_heap, (g + output_len[r] - generated[r]) * key_mul + r)
                sum_coff += coff
                n_pool += 1
            else:
                plist[n_p] = r
                n_p += 1
        sv[V_FREE_BLOCKS] = free_blocks
        code = STEP_RAN

    # ---- the run ended: leave the per-request state and the running list as ``advance`` leaves them --------------
    sv[V_N_RUNNING] = _materialise(g, mid_step, block, prompt_len, computed, generated, blocks, itl_sum_s,
                                   itl_count, last_token_s, state, p_rid, p_coff, p_acc, p_last, p_cnt, n_pool,
                                   run_l, n_ent, running)
    sv[V_N_SCHED] = 0
    sv[V_N_SET] = n_set
    return code


@njit(cache=True)
def run_to_end(cfg, cost, decode_xs, decode_ys, gpu_load_ms, disk_load_ms,
               arrival_s, adapter, prompt_len, output_len, state, computed, generated, blocks, qkey, nxt, prv,
               first_token_s, finish_s, itl_sum_s, itl_count, last_token_s,
               a_head, a_tail, in_step, gpu_slot, gpu_used, cpu_slot, cpu_used, gpu_slots, cpu_slots,
               ring, running, sched, sched_tok, sched_emit, step_set, counters, series, sv, fv, fast=True):
    """Step until the window closes or the work runs out; then close the counters and series. ``fast``: with
    the pool of plain decodes (``_run_fast``), else ``advance``'s per-request walk on every step (the reference
    the fast path is tested against: both give the same results, to the bit)."""
    if fast:
        code = _run_fast(cfg, cost, decode_xs, decode_ys, gpu_load_ms, disk_load_ms,
                         arrival_s, adapter, prompt_len, output_len, state, computed, generated, blocks, qkey, nxt,
                         prv, first_token_s, finish_s, itl_sum_s, itl_count, last_token_s,
                         a_head, a_tail, in_step, gpu_slot, gpu_used, cpu_slot, cpu_used, gpu_slots, cpu_slots,
                         ring, running, sched, sched_tok, sched_emit, step_set, counters, series, sv, fv)
    else:
        code = advance(cfg, cost, decode_xs, decode_ys, gpu_load_ms, disk_load_ms,
                       arrival_s, adapter, prompt_len, output_len, state, computed, generated, blocks, qkey, nxt, prv,
                       first_token_s, finish_s, itl_sum_s, itl_count, last_token_s,
                       a_head, a_tail, in_step, gpu_slot, gpu_used, cpu_slot, cpu_used, gpu_slots, cpu_slots,
                       ring, running, sched, sched_tok, sched_emit, step_set, counters, series, sv, fv, 1 << 62)
    counters[C_END_WAITING] = sv[V_N_WAITING]
    counters[C_END_RUNNING] = sv[V_N_RUNNING]
    # Idle time counts as zero: divide by the bucket's length, not by its busy time.
    bucket_s = cost[F_BUCKET_S]
    duration = cost[F_DURATION]
    for b in range(series.shape[1]):
        length = min(bucket_s, duration - b * bucket_s)
        for k in range(SR_N):
            series[k, b] /= length
    return code


@njit(cache=True)
def abort_request(r, adapter, state, blocks, nxt, prv, a_head, a_tail, running, sv):
    """Remove request ``r`` (waiting or running) from the engine, freeing its KV blocks (a client that
    went away); returns whether it was there. Its stale ring entry is skipped like any other."""
    s = state[r]
    if s == S_WAITING:
        _unlink_waiting(r, adapter[r], nxt, prv, a_head, a_tail)
        sv[V_N_WAITING] -= 1
    elif s == S_RUNNING:
        k = 0
        for j in range(sv[V_N_RUNNING]):
            if running[j] != r:
                running[k] = running[j]
                k += 1
        sv[V_N_RUNNING] = k
    else:
        return False
    sv[V_FREE_BLOCKS] += blocks[r]
    blocks[r] = 0
    state[r] = S_ABORTED
    return True
