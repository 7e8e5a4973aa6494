"""The public API and the CLI, end to end on the shipped profiles: round trips, determinism, bad input."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest

import packer
from packer import InputError, simulate

from conftest import LLAMA
from conftest import llama_scenario as small_scenario


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "packer", *args], capture_output=True, text=True, input=stdin,
                          timeout=300)


def test_simulate_reports_a_sane_run():
    r = simulate(small_scenario())
    assert r.memory_error is None
    assert r.arrived > 0 and 0 < r.finished <= r.arrived
    # Light load: the server keeps up, so throughput is close to the offered load (requests still
    # in flight when the window closes are not counted, hence not exactly 1).
    assert not r.starved
    assert r.throughput_tps == pytest.approx(r.input_tps + r.output_tps)
    assert 0.95 < r.throughput_ratio <= 1.05
    assert 5 < r.mean_itl_ms < 200 and r.mean_ttft_ms > 0
    assert r.p50_ttft_ms <= r.p99_ttft_ms
    assert len(r.adapters) == 24 and sum(a.arrived for a in r.adapters) == r.arrived
    assert r.sim_seconds == 600 and r.wall_seconds > 0


def test_same_seed_same_result_and_input_untouched():
    sc = small_scenario()
    before = copy.deepcopy(sc)
    a, b = simulate(sc).to_dict(), simulate(sc).to_dict()
    assert sc == before
    for d in (a, b):
        d.pop("wall_seconds")
    assert a == b
    c = simulate(small_scenario(seed=1)).to_dict()
    assert c["arrived"] != a["arrived"] or c["throughput_tps"] != a["throughput_tps"]


def test_memory_error_is_reported_not_simulated():
    sc = small_scenario(server={"max_loras": 384, "max_lora_rank": 32, "max_cpu_loras": 384})
    r = simulate(sc)
    assert r.memory_error is not None and "kv" in r.memory_error
    assert r.finished == 0 and r.steps == 0


def test_cli_json_round_trip_in_order(tmp_path):
    paths = []
    for i, seed in enumerate((0, 1)):
        p = tmp_path / f"s{i}.json"
        p.write_text(json.dumps(small_scenario(seed=seed)))
        paths.append(str(p))
    bad_mem = tmp_path / "mem.json"
    bad_mem.write_text(json.dumps(small_scenario(server={"max_loras": 384, "max_lora_rank": 32})))
    paths.append(str(bad_mem))
    out = cli("simulate", *paths, "--json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3
    objs = [json.loads(x) for x in lines]
    required = {"throughput_tps", "input_tps", "output_tps", "offered_tps", "arrived", "finished", "mean_itl_ms",
                "mean_ttft_ms", "p99_ttft_ms", "starved", "memory_error", "sim_seconds", "wall_seconds"}
    for o in objs:
        assert required <= set(o)
    api = simulate(small_scenario(seed=0)).to_dict()
    assert objs[0]["arrived"] == api["arrived"] and math.isclose(objs[0]["throughput_tps"], api["throughput_tps"])
    assert objs[1]["arrived"] != objs[0]["arrived"]
    assert objs[2]["memory_error"] and objs[2]["throughput_tps"] == 0


def test_cli_summary_is_readable(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps(small_scenario()))
    out = cli("simulate", str(p))
    assert out.returncode == 0, out.stderr
    assert "throughput" in out.stdout and "TTFT" in out.stdout and "keeps up" in out.stdout


BAD = [
    ({"profile": "gpt-17@tpu"}, "profile", "llama-3.1-8b-instruct@h100-64gb"),
    ({"adapters": [{"id": "x", "rank": 64, "rate": 0.1}]}, "adapters[0].rank", "max_lora_rank"),
    ({"server": {"max_loras": 8, "max_cpu_loras": 4, "max_lora_rank": 16}}, "max_cpu_loras", "must be >="),
    ({"server": {"max_loras": 0, "max_lora_rank": 16}}, "server.max_loras", "greater than 0"),
    ({"adapters": [{"id": "x", "rank": 8, "rate": -1}]}, "adapters[0].rate", "greater than or equal to 0"),
    ({"adapters": [{"id": "x", "rank": 8, "rate": float("nan")}]}, "adapters[0].rate", "finite"),
    ({"adapters": []}, "adapters", "at least 1"),
    ({"adapters": [{"id": "x", "rank": 8, "rate": 0.1}, {"id": "x", "rank": 8, "rate": 0.1}]}, "duplicate", "x"),
    ({"server": {"max_loras": 8, "max_lora_rank": 16, "max_lora": 3}}, "server.max_lora", "unknown field"),
    ({"arrivals": "zipf"}, "arrivals", "poisson"),
    ({"lengths": {"input_mean": 1500, "output_mean": 700}}, "lengths", "max_input"),
    ({"duration_s": 0}, "duration_s", "greater than 0"),
]


@pytest.mark.parametrize("change,field,hint", BAD)
def test_bad_input_is_one_clear_error(change, field, hint, tmp_path):
    sc = small_scenario(**change)
    with pytest.raises(InputError) as e:
        simulate(sc)
    assert field in str(e.value) and hint in str(e.value)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(sc))
    out = cli("simulate", str(p), "--json")
    assert out.returncode == 2
    assert out.stdout == ""
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and field in err[0] and "Traceback" not in out.stderr


def test_cli_file_errors(tmp_path):
    out = cli("simulate", str(tmp_path / "missing.json"))
    assert out.returncode == 2 and "missing.json" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    p = tmp_path / "broken.json"
    p.write_text("{not json")
    out = cli("simulate", str(p))
    assert out.returncode == 2 and "not valid JSON" in out.stderr


def test_public_api_matches_all():
    for name in packer.__all__:
        assert hasattr(packer, name), name
    assert LLAMA in packer.list_profiles()
    assert "qwen-2.5-7b-instruct@h100-64gb" in packer.list_profiles()


def _raise_input_error(field: str) -> None:
    raise InputError(field, "bad value; use a good one")


def test_input_error_crosses_process_boundaries():
    from packer.executor import process_pool

    with process_pool(1) as pool:
        with pytest.raises(InputError) as info:
            pool.submit(_raise_input_error, "adapters[3].rate").result()
    assert info.value.field == "adapters[3].rate" and str(info.value) == "adapters[3].rate: bad value; use a good one"


def test_warmup_measures_a_steady_state_window():
    # 24 adapters at 0.2 req/s each, well under capacity: in steady state the server serves what arrives.
    cold = simulate(small_scenario(duration_s=300))
    warm = simulate(small_scenario(duration_s=300, warmup_s=300))
    assert cold.sim_seconds == 300 and warm.sim_seconds == 600
    # Arrivals and offered load are the window's: about 24 x 0.2 x 300 requests.
    assert warm.generated == pytest.approx(24 * 0.2 * 300, rel=0.15)
    assert warm.offered_rps == pytest.approx(warm.generated / 300)
    # Without a warm-up the requests in flight at the end are lost from a short window; with one,
    # those in flight at the start make up for them.
    assert cold.throughput_ratio < 1.0
    assert warm.throughput_ratio == pytest.approx(1.0, abs=0.03)
    assert sum(a.arrived for a in warm.adapters) == warm.arrived
    assert not warm.starved


def test_warmup_must_be_a_non_negative_number():
    with pytest.raises(InputError, match="warmup_s"):
        simulate(small_scenario(warmup_s=-1))
