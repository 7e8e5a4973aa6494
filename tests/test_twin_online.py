"""The online twin (what ``packer serve-twin`` runs) schedules exactly as ``packer simulate``: fed the same
requests one by one as its clock reaches them, it gives every request the same first-token and finish
times as the batch run. Plus what only the online engine does: base-model requests, adapters added and
evicted at run time, aborted requests."""

from __future__ import annotations

import numpy as np
import pytest

from packer.model import parse_scenario
from packer.profile import load_profile
from packer.twin import Twin
from packer.twin import kernel as K
from packer.twin.engine import client_output_len
from packer.twin.online import BASE_MODEL, OnlineTwin
from packer.twin.workload_gen import generate_requests

LLAMA = "llama-3.1-8b-instruct@h100-64gb"


def _scenario(n, rate, slots, seqs=256, budget=2048, arrivals="poisson", duration=120.0, cpu=None, gmu=0.9,
              long=False):
    lengths = {"input_mean": 900, "output_mean": 800, "max_input": 4096, "max_total": 8192} if long else {}
    return parse_scenario({
        "profile": LLAMA, "server": {"max_loras": slots, "max_lora_rank": 32, "max_num_seqs": seqs,
                                     "max_num_batched_tokens": budget, "max_cpu_loras": cpu or max(slots, n),
                                     "gpu_memory_utilization": gmu},
        "adapters": [{"id": f"a{i}", "rank": (8, 16, 32)[i % 3], "rate": rate} for i in range(n)],
        "lengths": lengths, "arrivals": arrivals, "duration_s": duration, "seed": 3})


def _feed_online(sc, req, out_len):
    """Drive the online engine the way the server does: requests submitted when the clock reaches them."""
    eng = OnlineTwin(sc, load_profile(sc.profile), capacity=8)  # tiny: the tables must grow on the way
    horizon = sc.workload.horizon_s
    i, n = 0, len(req.arrival_s)
    while True:
        if not eng.pending():
            if i >= n or req.arrival_s[i] >= horizon:
                break
            eng.submit(int(req.adapter[i]), int(req.prompt_len[i]), int(out_len[i]), float(req.arrival_s[i]))
            i += 1
        while i < n and req.arrival_s[i] <= eng.now:
            eng.submit(int(req.adapter[i]), int(req.prompt_len[i]), int(out_len[i]), float(req.arrival_s[i]))
            i += 1
        if eng.now >= horizon:
            break
        eng.step()
    return eng


@pytest.mark.parametrize("case", [
    dict(n=8, rate=0.5, slots=8),                          # light
    dict(n=48, rate=0.4, slots=8),                         # LoRA-starved: skip-and-continue
    dict(n=16, rate=2.0, slots=16, gmu=0.7, long=True),    # KV pressure: preemptions
    dict(n=16, rate=2.0, slots=16, seqs=48, budget=512),   # the sequence cap, chunked prefill
    dict(n=64, rate=0.3, slots=16, arrivals="bursty", cpu=24),  # CPU cache churn
])
def test_online_engine_matches_the_batch_twin(case):
    sc = _scenario(**case)
    prof = load_profile(sc.profile)
    req = generate_requests(sc.workload)
    out_len = client_output_len(req.output_len, prof.client.output_len_scale)
    tw = Twin(sc, prof)
    batch = tw.engine_state(len(req.arrival_s))
    batch.add_requests(req.arrival_s, req.adapter, req.prompt_len, out_len)
    K.run_to_end(*batch.args())
    eng = _feed_online(sc, req, out_len)
    online = eng.state
    horizon = sc.workload.horizon_s
    done = np.isfinite(batch.finish_s[:batch.n_known])
    assert done.sum() > 50
    m = min(online.n_known, batch.n_known)
    fin_b, fin_o = batch.finish_s[:m], online.finish_s[:m]
    keep = np.isfinite(fin_b) & (fin_b <= horizon)
    np.testing.assert_array_equal(fin_o[keep], fin_b[keep])
    np.testing.assert_array_equal(online.first_token_s[:m][keep], batch.first_token_s[:m][keep])
    if case.get("long"):
        assert batch.counters[K.C_PREEMPTIONS] > 50
        assert online.counters[K.C_PREEMPTIONS] >= batch.counters[K.C_PREEMPTIONS]  # it runs on past the window


def _run_until_done(eng, limit=100000):
    for _ in range(limit):
        if not eng.pending():
            return
        eng.step()
    raise AssertionError("the engine did not drain")


def test_base_model_requests_need_no_slot():
    sc = _scenario(n=2, rate=0.1, slots=1)
    eng = OnlineTwin(sc, load_profile(sc.profile))
    a = eng.submit(0, 100, 20, 0.0)
    b = eng.submit(1, 100, 20, 0.0)      # a second adapter with one slot: waits for a to finish
    base = eng.submit(BASE_MODEL, 100, 20, 0.0)  # the base model: admitted at once beside a
    eng.step()
    assert eng.status(a) == K.S_RUNNING and eng.status(base) == K.S_RUNNING and eng.status(b) == K.S_WAITING
    _run_until_done(eng)
    st = eng.state
    assert st.first_token_s[b] >= st.finish_s[a] and st.finish_s[base] <= st.finish_s[a] + 1e-9


def test_adapters_added_and_evicted_at_run_time():
    sc = _scenario(n=1, rate=0.1, slots=2)
    eng = OnlineTwin(sc, load_profile(sc.profile))
    base = eng.submit(BASE_MODEL, 50, 5, 0.0)
    new = eng.add_adapter(16)
    assert new == 1 and eng.state.n_adapters == 2
    r = eng.submit(new, 50, 5, 0.0)
    _run_until_done(eng)
    st = eng.state
    assert np.isfinite(st.finish_s[base]) and np.isfinite(st.finish_s[r])
    assert st.gpu_slot[new] >= 0 and st.counters[K.C_GPU_LOADS] == 1
    eng.evict_adapter(new)
    assert st.gpu_slot[new] == -1 and st.cpu_slot[new] == -1 and st.sv[K.V_N_ON_GPU] == 0
    again = eng.submit(new, 50, 5, eng.now)
    _run_until_done(eng)
    assert np.isfinite(st.finish_s[again]) and st.counters[K.C_GPU_LOADS] == 2 and st.counters[K.C_DISK_LOADS] == 2


def test_aborted_requests_free_their_kv_and_leave_the_queue():
    sc = _scenario(n=1, rate=0.1, slots=1, seqs=1)
    eng = OnlineTwin(sc, load_profile(sc.profile))
    running = eng.submit(0, 500, 1000, 0.0)
    waiting = eng.submit(0, 500, 1000, 0.0)
    eng.step()
    assert eng.status(running) == K.S_RUNNING and eng.status(waiting) == K.S_WAITING
    free = int(eng.state.sv[K.V_FREE_BLOCKS])
    assert eng.abort(waiting) and eng.status(waiting) == K.S_ABORTED
    assert eng.abort(running) and int(eng.state.sv[K.V_FREE_BLOCKS]) > free
    assert not eng.abort(running) and not eng.pending()
    assert int(eng.state.sv[K.V_FREE_BLOCKS]) == int(eng.state.cfg[K.I_KV_BLOCKS])
