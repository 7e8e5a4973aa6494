"""Invariants of the twin on random small workloads (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run, scenario, tiny_profile


@st.composite
def workloads(draw):
    n_adapters = draw(st.integers(1, 6))
    max_loras = draw(st.integers(1, n_adapters))
    n = draw(st.integers(1, 60))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 0.5, n))
    rows = [(float(x), int(rng.integers(0, n_adapters)), int(rng.integers(1, 120)), int(rng.integers(1, 40)))
            for x in t]
    server = dict(max_num_seqs=draw(st.integers(1, 32)), max_num_batched_tokens=draw(st.sampled_from([16, 64, 256])),
                  max_cpu_loras=draw(st.integers(max_loras, n_adapters)))
    kv_blocks = draw(st.sampled_from([16, 32, 64]))
    return n_adapters, max_loras, rows, server, kv_blocks


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads())
def test_every_request_is_accounted_for_and_kv_respected(w):
    n_adapters, max_loras, rows, server, kv_blocks = w
    sc = scenario(n_adapters, max_loras, duration_s=1.0, **server)
    res = run(sc, rows, tiny_profile(kv_blocks=kv_blocks, max_model_len=kv_blocks * 16))
    log = res.requests
    status = np.asarray(log.status)
    # Conservation: arrived = finished + running + waiting; nothing lost, nothing invented.
    assert res.arrived == len(rows) - res.not_sent
    assert res.finished == int((status == 3).sum())
    assert res.finished + int((status == 2).sum()) + int((status == 1).sum()) == res.arrived
    assert res.end_waiting == int((status == 1).sum())
    # Memory and batch limits are never exceeded.
    assert res.max_kv_usage <= 1.0 + 1e-12
    assert res.max_running <= server["max_num_seqs"]
    assert res.mean_distinct_adapters <= max_loras
    # Causality: first token after arrival, finish after first token, all inside the window.
    fin = np.isfinite(log.finish_s)
    ft = np.isfinite(log.first_token_s)
    assert np.all(log.first_token_s[ft] > log.arrival_s[ft])
    assert np.all(log.finish_s[fin] >= log.first_token_s[fin])
    assert np.all(log.finish_s[fin] <= 1.0)
    # Determinism: the same input gives the same outcome.
    again = run(sc, rows, tiny_profile(kv_blocks=kv_blocks, max_model_len=kv_blocks * 16))
    assert np.array_equal(again.requests.finish_s, log.finish_s, equal_nan=True)
    assert again.preemptions == res.preemptions and again.gpu_adapter_loads == res.gpu_adapter_loads


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_more_slots_never_delay_the_first_request_of_each_adapter_when_load_is_tiny(n_adapters, seed):
    # With requests far apart (no contention), every request starts in the step it arrives, whatever max_loras.
    rng = np.random.default_rng(seed)
    rows = [(0.05 * i, int(rng.integers(0, n_adapters)), 16, 2) for i in range(10)]
    res = run(scenario(n_adapters, 1, duration_s=1.0), rows)
    assert np.allclose(res.requests.first_token_s - res.requests.arrival_s, 1e-3)
