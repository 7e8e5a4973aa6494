"""Latency SLOs in the workload (issue 18, section 2): the capacity model's criterion and verification
demand them, the result reports each GPU's predicted latency against each target, a predictor that
does not predict a metric falls back to the twin, and bad SLOs are one clear error."""

from __future__ import annotations

import json

import pytest

from conftest import LLAMA
from conftest import packer_cli as cli
from packer.errors import InputError
from packer.planner import parse_workload, solve
from packer.predictors import TwinPredictor
from packer.predictors.base import GpuQuery
from packer.predictors.slo import SloPredictor, check_slo
from packer.model import LengthSpec, ServerConfig, Slo

WL = {"profile": LLAMA, "lengths": {"input_mean": 222.7, "output_mean": 196.1},
      "adapters": [{"id": f"a{i}", "rank": 8, "rate": 1.0 + i} for i in range(6)]}


def _twin_of_gpu(r, g, seed=0):
    """The twin's own run of GPU ``g`` of result ``r``, as verification simulates it."""
    gpu = r.gpus[g]
    q = GpuQuery(LLAMA, ServerConfig(max_loras=gpu.max_loras, max_cpu_loras=gpu.max_cpu_loras,
                                     max_lora_rank=gpu.max_lora_rank, max_num_seqs=2048, max_num_batched_tokens=2048),
                 tuple(a.rank for a in gpu.adapters), tuple(a.rate for a in gpu.adapters),
                 LengthSpec(input_mean=222.7, output_mean=196.1))
    return TwinPredictor(seed=seed).predict(q)


@pytest.fixture(scope="module")
def plain(cache_env):
    return solve(WL, executor="serial")


def test_an_itl_target_takes_more_gpus_and_every_gpu_meets_it(plain):
    r = solve({**WL, "slo": {"itl_mean_ms": 20}}, executor="serial")
    assert r.verified and r.num_gpus > plain.num_gpus  # one GPU runs the lot at a slower ITL
    assert max(g.predicted_itl_ms for g in plain.gpus) > 20
    for g, gpu in enumerate(r.gpus):
        (c,) = gpu.slo
        assert c.metric == "itl_mean_ms" and c.target_ms == 20 and c.met
        assert c.predicted_ms == pytest.approx(_twin_of_gpu(r, g).mean_itl_ms)  # the twin's own number
        assert c.margin == pytest.approx((20 - c.predicted_ms) / 20)
    d = r.to_dict()
    assert d["slo"] == {"itl_mean_ms": 20.0, "per_adapter": False}
    assert d["gpus"][0]["slo"][0]["metric"] == "itl_mean_ms" and d["gpus"][0]["predicted_ttft_p99_ms"] > 0


def test_per_adapter_reads_the_worst_adapters_tail(plain):
    twin = TwinPredictor()
    q = GpuQuery(LLAMA, ServerConfig(max_loras=6, max_lora_rank=8), (8,) * 6, (0.5,) * 6)
    p = twin.predict(q)
    whole = check_slo(Slo(ttft_p99_ms=1e4), p)[0]
    worst = check_slo(Slo(ttft_p99_ms=1e4, per_adapter=True), p)[0]
    assert whole.predicted_ms == pytest.approx(p.p99_ttft_ms)
    assert worst.predicted_ms == pytest.approx(p.worst_adapter_p99_ttft_ms)
    assert worst.predicted_ms >= whole.predicted_ms * 0.999
    # a target between the two: the GPU passes as a whole, fails for its worst adapter
    mid = (whole.predicted_ms + worst.predicted_ms) / 2
    if worst.predicted_ms > whole.predicted_ms * 1.01:
        assert SloPredictor(twin, Slo(ttft_p99_ms=mid)).predict(q).ok
        assert not SloPredictor(twin, Slo(ttft_p99_ms=mid, per_adapter=True)).predict(q).ok


def test_a_missed_target_fails_the_gpu_and_says_why():
    q = GpuQuery(LLAMA, ServerConfig(max_loras=6, max_lora_rank=8), (8,) * 6, (3.0,) * 6)
    p = SloPredictor(TwinPredictor(), Slo(itl_mean_ms=5)).predict(q)
    assert not p.ok and not p.keeps_up and not p.starved and p.memory_error is None
    assert len(p.slo_misses) == 1 and p.slo_misses[0].startswith("itl_mean_ms ") and "> 5 ms" in p.slo_misses[0]
    # the SLO is part of what the capacity cache is keyed on
    assert SloPredictor(TwinPredictor(), Slo(itl_mean_ms=5)).describe() != TwinPredictor().describe()


def test_a_predictor_without_ttft_falls_back_to_the_twin(cache_env):
    r = solve({**WL, "slo": {"ttft_p99_ms": 200}}, predictor="tree", executor="serial")
    assert r.predictor == "twin" and r.verified
    assert any("tree predictor does not predict ttft_p99_ms" in w for w in r.warnings)
    assert all(c.met for g in r.gpus for c in g.slo)


@pytest.mark.parametrize("slo, match", [
    ({}, "at least one"),
    ({"ttft_p99_ms": -1}, "ttft_p99_ms"),
    ({"ttft_p99": 100}, "ttft_p99"),
    ({"itl_mean_ms": "fast"}, "itl_mean_ms"),
])
def test_bad_slos_name_the_field(slo, match):
    with pytest.raises(InputError, match=match) as e:
        parse_workload({**WL, "slo": slo})
    assert e.value.field.startswith("slo")


def test_an_unreachable_slo_is_one_clear_error(cache_env):
    with pytest.raises(InputError, match="meets the SLO") as e:
        solve({**WL, "slo": {"ttft_p99_ms": 1}}, executor="serial")
    assert e.value.field == "slo"


def test_cli_slo_flag_table_and_json(env, tmp_path):
    (tmp_path / "w.json").write_text(json.dumps(WL))
    r = cli(env, "solve", str(tmp_path / "w.json"), "--slo", "itl_mean_ms=20", "--executor", "serial", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["slo"]["itl_mean_ms"] == 20 and all(g["slo"][0]["margin"] >= 0 for g in d["gpus"])
    r = cli(env, "solve", str(tmp_path / "w.json"), "--slo", "itl_mean_ms=20", "--executor", "serial")
    assert r.returncode == 0 and "≤20" in r.stdout and "margin to the target" in r.stdout
    for bad, needle in (("itl_mean_ms=-2", "itl_mean_ms"), ("speed=3", "not METRIC=MS"), ("per_adapter", "at least one")):
        r = cli(env, "solve", str(tmp_path / "w.json"), "--slo", bad)
        assert r.returncode == 2 and r.stderr.startswith("error: --slo:") and needle in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_the_twin_run_of_a_gpu_gives_the_verified_latencies(plain):
    p = _twin_of_gpu(plain, 0)
    assert plain.gpus[0].predicted_ttft_p99_ms == pytest.approx(p.p99_ttft_ms)
    assert plain.gpus[0].slo == () and plain.slo is None


# ---- min_latency on the twin's latency ------------------------------------------------------------

def test_min_latency_on_the_twins_itl_reports_that_latency(cache_env):
    wl = {**WL, "objective": "min_latency", "gpus": 2, "latency_metric": "itl_mean_ms"}
    r = solve(wl, executor="serial")
    assert r.objective_metric == "itl_mean_ms" and r.num_gpus <= 2 and r.verified
    assert r.objective_value == pytest.approx(max(g.predicted_itl_ms for g in r.gpus))
    assert r.lower_bound is None and r.gap is None  # the capacity model's bound is on utilisation, not on ITL
    util = solve({**wl, "latency_metric": "utilisation"}, executor="serial")
    assert util.objective_metric == "utilisation" and r.objective_value <= max(g.predicted_itl_ms for g in util.gpus)


def test_the_latency_search_moves_adapters_off_the_worst_gpu(cache_env):
    from packer.planner import _latency, _lower_worst_latency, _query, build_problem
    from packer.solvers.base import Objective, bin_config

    twin = TwinPredictor()
    problem = build_problem(parse_workload(WL), twin, objective=Objective.MIN_LATENCY, gpus=2, time_limit_s=60,
                            seed=0, executor="serial")
    heavy = sorted(range(len(problem.items)), key=lambda i: -problem.items[i].units)
    bins = [heavy[:4], heavy[4:]]  # the four hottest adapters together: a slow GPU next to an idle one
    assert all(bin_config(problem, b) is not None for b in bins)
    before = max(_latency(p, "itl_mean_ms") for p in twin.predict_many([_query(problem, b, {}) for b in bins]))
    after_bins, preds, moves = _lower_worst_latency(problem, bins, {}, twin, "itl_mean_ms", 60.0)
    after = max(_latency(p, "itl_mean_ms") for p in preds)
    assert moves >= 1 and after < before * 0.99
    assert sorted(i for b in after_bins for i in b) == sorted(heavy)  # every adapter still placed once
    assert all(bin_config(problem, b) is not None for b in after_bins)
    with pytest.raises(InputError, match="latency_metric"):
        parse_workload({**WL, "latency_metric": "p50"})
