"""The contract every registered predictor meets: the public kit (``packer.testing.check_predictor``) and the
points it leaves open, for each name in ``PREDICTORS``, so a new backend cannot skip them; then what is
particular to one backend (the twin's window, cache and processes) or to the registry."""

from __future__ import annotations

import os
import re
import sys

import pytest

from packer.errors import InputError
from packer.model import LengthSpec, ServerConfig
from packer.predictors import PREDICTORS, GpuQuery, Prediction, TwinPredictor, get_predictor
from packer.predictors.base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S
from packer.testing import check_predictor
from packer.twin import simulate

PROFILE = "llama-3.1-8b-instruct@h100-64gb"
# options that keep a backend quick here: the twin and the live benchmark a shorter window; the live one
# benchmarks `packer serve-twin` through the same launch path as real vLLM, at twenty times real time (the twin's window)
SERVE_TWIN = (f"{sys.executable} -m packer.cli serve-twin --profile {{profile}} --max-loras {{max_loras}} "
              "--max-cpu-loras {max_cpu_loras} --max-lora-rank {max_lora_rank} --max-num-seqs {max_num_seqs} "
              "--max-num-batched-tokens {max_num_batched_tokens} --gpu-memory-utilization {gpu_memory_utilization} "
              "--port {port} --time-scale {time_scale} --lora-modules {lora_modules}")
FAST = {"twin": {"duration_s": 120.0},
        "vllm": {"launch": SERVE_TWIN, "duration_s": 120.0, "warmup_s": 30.0, "time_scale": 20.0, "health_timeout_s": 60}}


@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    """The live backend caches its benchmarks on disk: this module's, not the user's."""
    old = os.environ.get("PACKER_CACHE_DIR")
    os.environ["PACKER_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("PACKER_CACHE_DIR")
    else:
        os.environ["PACKER_CACHE_DIR"] = old


def make(name: str):
    if not PREDICTORS.available(name):
        pytest.skip(f"{name}'s libraries are not installed")
    return get_predictor(name, **FAST.get(name, {}))


def query(n: int = 8, rate: float = 1.0, max_loras: int = 8, rank: int = 16) -> GpuQuery:
    return GpuQuery(PROFILE, ServerConfig(max_loras=max_loras, max_lora_rank=rank, max_num_seqs=2048),
                    (rank,) * n, (rate,) * n, LengthSpec())


# ---- every registered backend ---------------------------------------------------------------------

@pytest.mark.parametrize("name", PREDICTORS.names())
def test_meets_the_contract_kit(name):
    check_predictor(make(name))


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_light_load_keeps_up_and_counts_the_offered_load(name):
    p = make(name).predict(query(rate=0.5))
    assert isinstance(p, Prediction) and p.predictor == name
    assert p.ok and not p.starved and p.memory_error is None
    # the twin reports the offered load it drew (Poisson counts, sampled lengths) over its window
    assert p.offered_tps == pytest.approx(8 * 0.5 * (222.7 + 196.1), rel=0.2)
    if p.throughput_tps is not None:
        assert p.throughput_ratio > 0.9


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_overload_starves_and_memory_errors_near_the_limit(name):
    # the kit's cases at another point: 8 adapters with 2,048 sequences, and a config just past the memory limit
    p = make(name).predict(query(rate=12.0))  # about 40,000 tokens/s offered: several GPUs' worth
    assert p.starved and not p.ok
    m = make(name).predict(query(n=4, rate=0.1, max_loras=400, rank=512))
    assert m.memory_error and not m.ok


@pytest.mark.parametrize("name", PREDICTORS.names())
def test_answers_depend_on_the_query_alone(name):
    # fresh instances, and a query repeated within one batch, give the same answers
    qs = [query(rate=r) for r in (0.5, 2.0, 0.5)]
    a = make(name).predict_many(qs)
    b = [make(name).predict(q) for q in qs]
    assert a == b
    assert a[0] == a[2]


# ---- the twin ---------------------------------------------------------------------------------------

def test_twin_predictor_measures_a_steady_state_window_by_default():
    twin = TwinPredictor()
    assert (twin.warmup_s, twin.duration_s) == (DEFAULT_WARMUP_S, DEFAULT_DURATION_S) == (300.0, 600.0)
    assert twin.describe()["warmup_s"] == 300.0
    q = query(rate=1.0)
    r = simulate(q.scenario(600.0, 0, warmup_s=300.0))
    p = twin.predict(q)
    assert (p.throughput_tps, p.offered_tps, p.mean_itl_ms) == (r.throughput_tps, r.offered_tps, r.mean_itl_ms)
    assert TwinPredictor(warmup_s=0.0).describe() != twin.describe()  # a cache key that tells them apart


def test_twin_caches_repeated_queries():
    twin = TwinPredictor(duration_s=60.0)
    q = query(rate=1.0)
    first = twin.predict(q)
    assert twin.predict(q) is first
    assert (twin.calls, twin.cache_hits) == (1, 1)


def test_twin_predict_many_in_processes_matches_one_process():
    qs = [query(rate=r) for r in (0.5, 1.5, 2.5)]
    assert TwinPredictor(duration_s=60.0, workers=2).predict_many(qs) == TwinPredictor(duration_s=60.0).predict_many(qs)


# ---- the registry and the query -------------------------------------------------------------------

def test_the_shipped_backends_are_registered():
    assert {"twin", "tree", "forest"} <= set(PREDICTORS.names())


def test_unknown_predictor_lists_the_valid_ones():
    valid = ", ".join(PREDICTORS.names())
    with pytest.raises(InputError, match=rf"unknown predictor .oracle.; valid: {re.escape(valid)}"):
        get_predictor("oracle")


def test_query_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        GpuQuery(PROFILE, ServerConfig(max_loras=1, max_lora_rank=8), (8, 8), (1.0,))
