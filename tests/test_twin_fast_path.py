"""The kernel's fast path (the pool of plain decodes, ``kernel._run_fast``) gives the same results, to the bit,
as the per-request walk of every step (``run_to_end(..., fast=False)``): every engine array after the run and
every field of the twin's result, per-request log, per-adapter rows and series included."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from conftest import LLAMA, requests, scenario, tiny_profile
from packer.twin import Twin
from packer.twin import kernel as K
from packer.twin.engine import client_output_len
from packer.twin.workload_gen import generate_requests

QWEN = "qwen-2.5-7b-instruct@h100-64gb"
# Scratch arrays of the last step (the fast path does not fill them) and the ring (compared over its live part).
_SCRATCH = {"sched", "sched_tok", "sched_emit", "step_set", "ring", "running"}


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
    return a == b


def _engine(twin: Twin, req):
    out = client_output_len(req.output_len, twin.profile.client.output_len_scale)
    st = twin.engine_state(len(req.arrival_s))
    st.add_requests(req.arrival_s, req.adapter, req.prompt_len, out)
    return st


def assert_paths_agree(twin: Twin, req=None, monkeypatch=None) -> dict:
    """Run ``twin`` both ways on the same requests; assert equal engine states and results; return counters."""
    assert twin.memory_error() is None
    req = generate_requests(twin.scenario.workload) if req is None else req
    fast, slow = _engine(twin, req), _engine(twin, req)
    assert K.run_to_end(*fast.args()) == K.run_to_end(*slow.args(), False)
    for f in dataclasses.fields(fast):
        if f.name not in _SCRATCH:
            assert _same(getattr(fast, f.name), getattr(slow, f.name)), f.name
    n = int(slow.sv[K.V_N_RUNNING])
    assert np.array_equal(fast.running[:n], slow.running[:n])
    live = np.arange(slow.sv[K.V_RING_HEAD], slow.sv[K.V_RING_TAIL]) & (len(slow.ring) - 1)
    assert np.array_equal(fast.ring[live], slow.ring[live])
    if monkeypatch is not None:  # the twin's own result, through the engine, both ways
        got = twin.run(req, keep_requests=True)
        reference = K.run_to_end
        monkeypatch.setattr(K, "run_to_end", lambda *args: reference(*args, False))
        want = twin.run(req, keep_requests=True)
        monkeypatch.undo()
        assert _same(dataclasses.replace(got, wall_seconds=0.0).to_dict(per_adapter=True, series=True),
                     dataclasses.replace(want, wall_seconds=0.0).to_dict(per_adapter=True, series=True))
        for f in dataclasses.fields(got.requests):
            assert _same(np.asarray(getattr(got.requests, f.name)), np.asarray(getattr(want.requests, f.name))), f.name
    return {"steps": slow.counters[K.C_STEPS], "preemptions": slow.counters[K.C_PREEMPTIONS],
            "loads": slow.counters[K.C_GPU_LOADS]}


def _shipped(profile, n_adapters, rates, max_loras, *, rank=16, arrivals="poisson", duration=300, seed=0,
             seqs=2048, budget=2048, mem=0.9, lengths=None, lora=True, warmup=0):
    ranks = (8, 16) if rank == 16 else (8, 16, 32, 64)[:max(1, (8, 16, 32, 64).index(rank) + 1)]
    return {"profile": profile,
            "server": {"max_loras": max_loras, "max_cpu_loras": max(max_loras, n_adapters // 2), "max_lora_rank": rank,
                       "max_num_seqs": seqs, "max_num_batched_tokens": budget, "gpu_memory_utilization": mem,
                       "enable_lora": lora},
            "adapters": [{"id": f"a{i}", "rank": ranks[i % len(ranks)], "rate": rates[i % len(rates)]}
                         for i in range(n_adapters)],
            "lengths": lengths or {"input_mean": 222.7, "output_mean": 196.1},
            "arrivals": arrivals if arrivals == "poisson" else {"kind": arrivals},
            "duration_s": duration, "warmup_s": warmup, "seed": seed}


SHIPPED = [
    ("light", dict(n_adapters=8, rates=(0.1, 0.05), max_loras=8)),
    ("LoRA-starved", dict(n_adapters=192, rates=(0.1, 0.05, 0.025), max_loras=8, rank=32)),
    ("near capacity", dict(n_adapters=32, rates=(1.6, 0.8, 0.4), max_loras=32, warmup=30)),
    ("overload", dict(n_adapters=64, rates=(1.6, 0.8, 0.4), max_loras=16, duration=200)),
    ("heavy overload", dict(n_adapters=384, rates=(1.6, 0.8, 0.4), max_loras=32, duration=120)),
    ("bursty", dict(n_adapters=128, rates=(0.3,), max_loras=32, arrivals="bursty", seed=3)),
    ("trace", dict(n_adapters=96, rates=(0.2,), max_loras=32, arrivals="trace", seed=1)),
    ("low KV, preemptions", dict(n_adapters=32, rates=(1.5,), max_loras=16, mem=0.7, rank=64, duration=200,
                                 lengths={"input_mean": 400, "output_mean": 700})),
    ("chunked long prompts", dict(n_adapters=24, rates=(0.5,), max_loras=8, budget=512,
                                  lengths={"input_mean": 900, "output_mean": 300, "max_input": 4000,
                                           "max_total": 6000, "distribution": "azure-conv"})),
    ("small budget and seqs", dict(n_adapters=40, rates=(1.0,), max_loras=16, seqs=32, budget=256, seed=2)),
    ("no LoRA", dict(n_adapters=16, rates=(1.5,), max_loras=4, lora=False, duration=200)),
]


@pytest.mark.parametrize("profile", [LLAMA, QWEN])
@pytest.mark.parametrize("name,kw", SHIPPED, ids=[n for n, _ in SHIPPED])
def test_shipped_profiles(profile, name, kw, monkeypatch):
    twin = Twin.from_scenario(_shipped(profile, **kw))
    c = assert_paths_agree(twin, monkeypatch=monkeypatch if profile == LLAMA else None)
    assert c["steps"] > 100
    if name == "low KV, preemptions":
        assert c["preemptions"] > 0  # the slow path's preemptions, mixed with fast steps


def _rows(rng, n, n_adapters, horizon, prompt_max, output_max, base=True):
    t = np.sort(rng.uniform(0, horizon, n))
    top = n_adapters + 1 if base else n_adapters  # index n_adapters: the base model
    return [(float(x), int(rng.integers(0, top)), int(rng.integers(1, prompt_max)), int(rng.integers(1, output_max)))
            for x in t]


@pytest.mark.parametrize("seed", range(40))
def test_tiny_profile_random_workloads(seed, monkeypatch):
    """Hand-checkable profile, random knobs: tight KV (preemption storms), tiny budgets (chunked prefill),
    few slots (LoRA churn, loads), base-model requests, bursts, outputs of one token."""
    rng = np.random.default_rng(seed)
    n_adapters = int(rng.integers(1, 12))
    max_loras = int(rng.integers(1, n_adapters + 1))
    kv_blocks = int(rng.choice([16, 32, 64, 256, 1024]))
    server = dict(max_num_seqs=int(rng.choice([1, 4, 32, 256])),
                  max_num_batched_tokens=int(rng.choice([16, 64, 256, 2048])),
                  max_cpu_loras=int(rng.integers(max_loras, n_adapters + 1)))
    sc = scenario(n_adapters, max_loras, duration_s=float(rng.choice([1.0, 5.0])), **server)
    rows = _rows(rng, int(rng.integers(1, 400)), n_adapters, float(rng.choice([0.05, 0.5, 4.0])),
                 int(rng.choice([2, 40, 300])), int(rng.choice([2, 20, 200])), base=bool(seed % 2))
    prof = tiny_profile(kv_blocks=kv_blocks, max_model_len=kv_blocks * 16, step_ms=float(rng.choice([0.7, 1.0])),
                        load_ms=float(rng.choice([0.0, 3.0])), disk_ms=float(rng.choice([0.0, 10.0])),
                        decode_batch=[1.0, 64.0], decode_ms=[1.0, 9.0], prefill_ms_per_token=0.01,
                        attention_ms_per_kv_token=0.001, decode_ctx_ref=100.0)
    assert_paths_agree(Twin.from_scenario(sc, prof), requests(rows), monkeypatch if seed < 8 else None)


def test_tiny_profile_generated_workload(monkeypatch):
    sc = scenario(6, 2, duration_s=60.0, max_num_seqs=64, max_num_batched_tokens=64)
    sc["lengths"] = {"distribution": "sharegpt", "input_mean": 60, "output_mean": 40, "max_total": 512}
    sc["adapters"] = [{"id": f"a{i}", "rank": 8, "rate": 40.0} for i in range(6)]
    c = assert_paths_agree(Twin.from_scenario(sc, tiny_profile(kv_blocks=64, max_model_len=1024)),
                           monkeypatch=monkeypatch)
    assert c["preemptions"] > 0 and c["loads"] > 0
