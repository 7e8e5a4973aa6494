"""The contract every registered predictor meets (a guard test keeps new backends under it)."""

from __future__ import annotations

import pytest

from packer.errors import InputError
from packer.model import LengthSpec, ServerConfig
from packer.predictors import PREDICTORS, GpuQuery, Prediction, TwinPredictor, get_predictor
from packer.predictors.base import DEFAULT_DURATION_S, DEFAULT_WARMUP_S
from packer.twin import simulate

CONTRACT_PREDICTORS = ["twin", "tree", "forest"]
PROFILE = "llama-3.1-8b-instruct@h100-64gb"
FAST = {"twin": {"duration_s": 120.0}}


def make(name: str):
    return get_predictor(name, **FAST.get(name, {}))


def query(n: int = 8, rate: float = 1.0, max_loras: int = 8, rank: int = 16) -> GpuQuery:
    return GpuQuery(PROFILE, ServerConfig(max_loras=max_loras, max_lora_rank=rank, max_num_seqs=2048),
                    (rank,) * n, (rate,) * n, LengthSpec())


def test_every_registered_predictor_is_under_contract():
    assert set(PREDICTORS.names()) == set(CONTRACT_PREDICTORS)


@pytest.mark.parametrize("name", CONTRACT_PREDICTORS)
def test_light_load_keeps_up(name):
    p = make(name).predict(query(rate=0.5))
    assert isinstance(p, Prediction) and p.predictor == name
    assert p.ok and not p.starved and p.memory_error is None
    # the twin reports the offered load it drew (Poisson counts, sampled lengths) over its window
    assert p.offered_tps == pytest.approx(8 * 0.5 * (222.7 + 196.1), rel=0.2)
    if p.throughput_tps is not None:
        assert p.throughput_ratio > 0.9


@pytest.mark.parametrize("name", CONTRACT_PREDICTORS)
def test_overload_starves(name):
    p = make(name).predict(query(rate=12.0))  # about 40,000 tokens/s offered: several GPUs' worth
    assert p.starved and not p.ok


@pytest.mark.parametrize("name", CONTRACT_PREDICTORS)
def test_memory_error_is_reported(name):
    p = make(name).predict(query(n=4, rate=0.1, max_loras=400, rank=512))
    assert p.memory_error and not p.ok


@pytest.mark.parametrize("name", CONTRACT_PREDICTORS)
def test_deterministic_and_batch_equals_single(name):
    qs = [query(rate=r) for r in (0.5, 2.0, 0.5)]
    a = make(name).predict_many(qs)
    b = [make(name).predict(q) for q in qs]
    assert a == b
    assert a[0] == a[2]


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


def test_unknown_predictor_lists_the_valid_ones():
    with pytest.raises(InputError, match=r"unknown predictor .oracle.; valid: forest, tree, twin"):
        get_predictor("oracle")


def test_query_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        GpuQuery(PROFILE, ServerConfig(max_loras=1, max_lora_rank=8), (8, 8), (1.0,))
