"""Scheduler semantics of the twin on small hand-checkable cases (1 ms per step, exact KV blocks)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import run, scenario, tiny_profile

STEP = 1e-3


def first_token_steps(res) -> np.ndarray:
    """First-token time of each request, in whole steps from t=0."""
    return np.rint(res.requests.first_token_s / STEP)


def test_single_request_timeline():
    # Prompt 16 fits one step: the prefill step emits token 1, then 3 decode steps for tokens 2..4.
    res = run(scenario(1, 1), [(0.0, 0, 16, 4)])
    assert first_token_steps(res)[0] == 1
    assert res.requests.finish_s[0] == pytest.approx(4 * STEP)
    assert res.finished == 1
    assert res.mean_itl_ms == pytest.approx(1.0)
    assert res.mean_ttft_ms == pytest.approx(1.0)


def test_token_budget_chunks_prefill():
    # A 40-token prompt under a 16-token budget is prefilled in chunks 16 + 16 + 8.
    res = run(scenario(1, 1, max_num_batched_tokens=16), [(0.0, 0, 40, 2)])
    assert first_token_steps(res)[0] == 3


def test_token_budget_shared_between_requests():
    # Budget 20: step 1 takes request 0's 16 prompt tokens and 4 of request 1's; request 1 finishes
    # its prefill in step 2 (its decode budget comes after request 0's decode token).
    res = run(scenario(1, 1, max_num_batched_tokens=20), [(0.0, 0, 16, 3), (0.0, 0, 16, 3)])
    assert list(first_token_steps(res)) == [1, 2]


def test_skip_semantics_lets_loaded_adapters_overtake():
    # max_loras=1. Queue: r0 (adapter 0), r1 (adapter 1), r2 (adapter 0). r0 takes the only slot;
    # r1 is skipped, r2 (same adapter as r0) overtakes it; r1 starts only after adapter 0 leaves the batch.
    rows = [(0.0, 0, 16, 5), (0.0, 1, 16, 5), (0.0, 0, 16, 5)]
    res = run(scenario(2, 1), rows)
    ft = first_token_steps(res)
    assert ft[0] == 1 and ft[2] == 1
    assert ft[1] > res.requests.finish_s[0] / STEP - 0.5
    # With two slots nobody waits.
    res2 = run(scenario(2, 2), rows)
    assert list(first_token_steps(res2)) == [1, 1, 1]


def test_hot_adapter_starves_cold_one():
    # A steady stream on adapter 0 keeps the single slot; adapter 1's request waits until the stream stops.
    rows = [(i * 0.002, 0, 16, 5) for i in range(50)]
    rows.insert(1, (0.001, 1, 16, 5))
    res = run(scenario(2, 1), rows)
    cold = res.requests.adapter == 1
    hot_finish = res.requests.finish_s[~cold].max()
    assert res.requests.first_token_s[cold][0] > hot_finish
    ids = {a.id: a for a in res.adapters}
    assert ids["a1"].mean_ttft_ms > 50 * ids["a0"].mean_ttft_ms


def test_max_num_seqs_caps_the_batch():
    res = run(scenario(1, 1, max_num_seqs=2), [(0.0, 0, 16, 10)] * 5)
    assert res.max_running == 2
    assert res.finished == 5
    # Batches of 2 (10 steps each) then 1: the last request starts after two batches.
    assert first_token_steps(res)[4] == 21


def test_kv_exhaustion_preempts_latest_request():
    # 4 blocks (64 tokens). Two requests of 16 + 40 tokens grow to 4 blocks each: they cannot both
    # fit, so the later-admitted one is preempted (recomputed later) and both still finish.
    rows = [(0.0, 0, 16, 40), (0.0, 0, 16, 40)]
    res = run(scenario(1, 1), rows, tiny_profile(kv_blocks=4))
    assert res.preemptions >= 1
    assert res.finished == 2
    assert res.requests.finish_s[0] < res.requests.finish_s[1]
    assert res.max_kv_usage <= 1.0


def test_kv_limit_blocks_admission_without_preemption():
    # 4 blocks; request 0 needs 3 blocks at admission, request 1 needs 2: request 1 must wait.
    rows = [(0.0, 0, 48, 2), (0.0, 0, 32, 2)]
    res = run(scenario(1, 1), rows, tiny_profile(kv_blocks=4))
    ft = first_token_steps(res)
    assert ft[0] == 1 and ft[1] > 1
    assert res.preemptions == 0


def test_gpu_slots_are_lru():
    # max_loras=2, requests one at a time to adapters 0,1,0,2,0: loads 0, 1, (0 hit), 2 evicts 1, (0 hit).
    rows = [(0.1 * i, a, 16, 2) for i, a in enumerate([0, 1, 0, 2, 0])]
    res = run(scenario(3, 2), rows, tiny_profile(load_ms=5.0))
    assert res.gpu_adapter_loads == 3
    # Loading stalls the step: the first request's first token comes after 1 ms + 5 ms.
    assert res.requests.first_token_s[0] == pytest.approx(0.006)
    assert res.requests.first_token_s[2] - 0.2 == pytest.approx(0.001)


def test_cpu_cache_reloads_from_disk_when_too_small():
    rows = [(0.1 * i, a, 16, 2) for i, a in enumerate([0, 1, 2, 0, 1, 2])]
    small = run(scenario(3, 1, max_cpu_loras=2), rows, tiny_profile(disk_ms=50.0))
    big = run(scenario(3, 1, max_cpu_loras=3), rows, tiny_profile(disk_ms=50.0))
    assert big.disk_adapter_loads == 3
    assert small.disk_adapter_loads == 6
    assert small.gpu_adapter_loads == big.gpu_adapter_loads == 6


def test_lora_cost_terms_add_up():
    # Two requests on two adapters, two slots: base 1 + lora_base 2 + per token (0.01 + 0.005 * 2 slots)
    # + 3 per adapter. Step 1 prefills 32 tokens: 1 + 2 + 32 * 0.02 + 6 = 9.64 ms; step 2 decodes 2
    # tokens (contexts 17 each, 1 ms per 100 context tokens above 10): 1 + 0.14 + 2 + 0.04 + 6 = 9.18 ms.
    prof = tiny_profile(lora_ms_base=2.0, lora_ms_per_token=0.01, lora_ms_per_token_slot=0.005,
                        lora_ms_per_adapter=3.0, attention_ms_per_kv_token=0.01, decode_ctx_ref=10.0)
    res = run(scenario(2, 2), [(0.0, 0, 16, 2), (0.0, 1, 16, 2)], prof)
    assert res.requests.first_token_s[0] == pytest.approx(0.00964)
    assert res.requests.finish_s[0] == pytest.approx(0.00964 + 0.00918)


def test_lora_rank_factor_scales_lora_cost():
    # Rank 16 slots with slope 1 and reference 8: the LoRA token terms double.
    prof = tiny_profile(lora_ms_base=2.0, lora_rank_ref=8, lora_rank_slope=1.0)
    sc = scenario(1, 1, max_lora_rank=16)
    res = run(sc, [(0.0, 0, 16, 1)], prof)
    assert res.requests.first_token_s[0] == pytest.approx(0.005)


def test_conservation_and_window():
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 2.0, 400))
    rows = [(float(x), int(rng.integers(0, 4)), int(rng.integers(4, 200)), int(rng.integers(1, 60))) for x in t]
    res = run(scenario(4, 2, duration_s=2.0, max_num_seqs=16), rows, tiny_profile(kv_blocks=64, max_model_len=64))
    log = res.requests
    assert res.arrived == len(rows) - res.not_sent
    assert res.finished + res.end_waiting + int((log.status == 2).sum()) == res.arrived
    assert np.all(log.finish_s[np.isfinite(log.finish_s)] <= 2.0)
    assert np.all(log.first_token_s[np.isfinite(log.first_token_s)] >= log.arrival_s[np.isfinite(log.first_token_s)])
    # The throughput counts exactly the finished requests' tokens.
    fin = np.isfinite(log.finish_s)
    assert res.throughput_tps == pytest.approx((log.prompt_len[fin].sum() + log.output_len[fin].sum()) / 2.0)


def test_queue_cap_drops_arrivals():
    prof = tiny_profile()
    prof = type(prof)(**{**prof.__dict__, "client": type(prof.client)(max_waiting=3)})
    rows = [(0.0, 0, 16, 50)] * 10
    res = run(scenario(1, 1, max_num_seqs=1), rows, prof)
    assert res.not_sent == 7 and res.arrived == 3
    assert int((res.requests.status == 4).sum()) == 7


def test_idle_gaps_are_skipped():
    # Two requests an hour apart: the twin jumps over the idle time (few steps, exact timing).
    res = run(scenario(1, 1, duration_s=3600.0), [(0.0, 0, 16, 2), (3000.0, 0, 16, 2)])
    assert res.steps == 4
    assert res.requests.finish_s[1] == pytest.approx(3000.002)
    assert math.isclose(res.mean_ttft_ms, 1.0)
