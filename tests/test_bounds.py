"""Bounds that catch unit mistakes and absurd numbers at the boundary: through the real CLI (a
subprocess, as a user runs it) and the parsers behind it. Each refusal is one ``error:`` line, exit
code 2, and comes back in seconds, before anything proportional to the mistake is allocated."""

from __future__ import annotations

import json
import math
import os
import pty
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from conftest import LLAMA, llama_scenario
from packer.errors import InputError
from packer.model import (BURSTY_RANGES, MAX_ADAPTER_RATE, MAX_FLEET_GPUS, MAX_REQUEST_TOKENS, MAX_TWIN_REQUESTS,
                          UNITS_HINT, BurstyArrivals, check_placement_load, gpu_token_ceiling, parse_scenario)
from packer.planner import parse_workload
from packer.predictors.training import SweepSpec, sample_query
from packer.profile import load_profile
from packer.twin import Twin

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
QUICK_S = 30.0  # a refusal takes an import and a parse; a unit mistake that got through would take minutes


def cli(*args: str, cwd=None) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "packer.cli", *args], capture_output=True, text=True, timeout=300,
                         env=ENV, cwd=cwd)
    return out, time.perf_counter() - t0


def refused(*args: str) -> str:
    """Run the CLI, check it refused with one ``error:`` line, quickly; return that line."""
    out, wall = cli(*args)
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert wall < QUICK_S, f"took {wall:.1f} s to refuse"
    return lines[0]


def write(tmp_path, data, name="s.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data))  # NaN is written as NaN, which the CLI's JSON reader accepts
    return str(p)


def one_adapter(rate) -> list[dict]:
    return [{"id": "a0", "rank": 8, "rate": rate}]


def workload(**over) -> dict:
    wl = {"profile": LLAMA, "adapters": [{"id": f"a{i}", "rank": 8, "rate": 0.5} for i in range(8)]}
    wl.update(over)
    return wl


# ---- rates ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", ["inf", "nan", "-inf", "Infinity", "1e400", float("nan"), 1e308])
def test_simulate_refuses_a_non_finite_or_absurd_rate(tmp_path, rate):
    line = refused("simulate", "--json", write(tmp_path, llama_scenario(adapters=one_adapter(rate))))
    if isinstance(rate, float) and rate != rate:  # a NaN literal is refused by the JSON reader, by its field
        assert "adapters[0].rate is NaN" in line and "finite" in line
        return
    assert "adapters[0].rate:" in line and "requests per second" in line
    if isinstance(rate, float) and rate == 1e308:
        assert f"{MAX_ADAPTER_RATE:.0e}" in line and UNITS_HINT in line and "1e+308" in line
    else:
        assert "must be a finite number of requests per second" in line


@pytest.mark.parametrize("command", ["predict", "solve"])
@pytest.mark.parametrize("rate", ["inf", 1e308])
def test_predict_and_solve_refuse_the_same_rates(tmp_path, command, rate):
    data = llama_scenario(adapters=one_adapter(rate)) if command == "predict" else workload(adapters=one_adapter(rate))
    line = refused(command, write(tmp_path, data), "--json")
    assert "adapters[0].rate:" in line and "requests per second" in line


def test_a_nan_rate_is_named_once():
    with pytest.raises(InputError) as e:
        parse_scenario(llama_scenario(adapters=one_adapter(float("nan"))))
    assert str(e.value) == "adapters[0].rate: must be a finite number of requests per second (got nan)"


def test_a_nan_duration_is_not_a_finite_number_rather_than_too_long(tmp_path):
    line = refused("simulate", write(tmp_path, llama_scenario(duration_s="nan")))
    assert line.endswith("duration_s: must be a finite number (got 'nan')"), line
    line = refused("simulate", write(tmp_path, llama_scenario(duration_s=float("nan"))))  # a NaN literal
    assert "duration_s is NaN" in line and "finite" in line and "2592000" not in line
    for field in ("warmup_s", "duration_s"):
        with pytest.raises(InputError, match=f"^{field}: must be a finite number"):
            parse_scenario(llama_scenario(**{field: "inf"}))


def test_every_float_field_refuses_non_finite_strings():
    for over, field in (({"lengths": {"input_mean": "nan"}}, "lengths.input_mean"),
                        ({"arrivals": {"kind": "bursty", "cv": "inf"}}, "arrivals.cv"),
                        ({"server": {"max_loras": 4, "max_lora_rank": 16, "gpu_memory_utilization": "nan"}},
                         "server.gpu_memory_utilization")):
        with pytest.raises(InputError, match=f"^{field}: must be a finite number"):
            parse_scenario(llama_scenario(**over))


def test_request_lengths_beyond_any_context_are_refused():
    # 5e9-token prompts overflowed the twin's int32 lengths: a negative offered load that "keeps up"
    huge = {"input_mean": 5e9, "output_mean": 100, "max_input": 10 ** 10, "max_total": 2 * 10 ** 10}
    with pytest.raises(InputError, match=f"^lengths.max_input: must be at most {MAX_REQUEST_TOKENS:,} tokens"):
        parse_scenario(llama_scenario(lengths=huge))
    long = {"input_mean": 100_000, "output_mean": 1000, "max_input": 200_000, "max_total": MAX_REQUEST_TOKENS}
    assert parse_scenario(llama_scenario(lengths=long)).workload.lengths.max_total == MAX_REQUEST_TOKENS


# ---- units mistakes -------------------------------------------------------------------------------

def test_a_units_mistake_in_a_twin_run_is_refused_before_any_allocation(tmp_path):
    # tokens/s typed as req/s: 1e6 req/s for an hour would be 3.6e9 requests (hundreds of GB)
    line = refused("simulate", write(tmp_path, llama_scenario(adapters=one_adapter(1e6), duration_s=3600)))
    assert "adapters: expected 3.6e+09 requests" in line and "1e+06 req/s x 3,600 s" in line
    assert UNITS_HINT in line
    line = refused("predict", "--predictor", "twin",
                   write(tmp_path, llama_scenario(adapters=one_adapter(1e5), duration_s=600, warmup_s=300)))
    assert "expected 9e+07 requests" in line and "(warmup_s 300 + duration_s 600) s" in line


def test_the_request_cap_sits_where_a_run_still_fits_in_memory():
    ok = llama_scenario(adapters=one_adapter(MAX_TWIN_REQUESTS / 3600 * 0.99), duration_s=3600)
    assert parse_scenario(ok).workload.expected_requests < MAX_TWIN_REQUESTS
    with pytest.raises(InputError, match="^adapters: expected 2.02e\\+07 requests"):
        parse_scenario(llama_scenario(adapters=one_adapter(MAX_TWIN_REQUESTS / 3600 * 1.01), duration_s=3600))


def test_an_unscaled_trace_replay_is_bounded_too(tmp_path):
    # the trace's own rate (5.5 req/s) over 60 days: its count is only known from the trace
    sc = llama_scenario(arrivals={"kind": "trace", "trace": "azure-conv", "scale_to_rates": False},
                        duration_s=30 * 86400, warmup_s=30 * 86400)
    parse_scenario(sc)  # valid as a file: the bound needs the trace
    line = refused("simulate", write(tmp_path, sc))
    assert "arrivals.trace: expected 2.87e+07 requests" in line and "azure-conv" in line


def test_a_placement_beyond_the_largest_fleet_is_refused(tmp_path):
    prof = load_profile(LLAMA)
    ceiling = MAX_FLEET_GPUS * gpu_token_ceiling(prof, 2048)
    # every adapter within the single-adapter bound, the total beyond any fleet
    tokens = 222.7 + 196.1
    n = math.ceil(ceiling / tokens / MAX_ADAPTER_RATE) + 1
    big = workload(adapters=[{"id": f"a{i}", "rank": 8, "rate": MAX_ADAPTER_RATE} for i in range(n)])
    line = refused("solve", write(tmp_path, big), "--json")
    assert "adapters: the offered load" in line and f"{MAX_FLEET_GPUS:,} GPUs of {LLAMA}" in line
    assert UNITS_HINT in line
    # the ceiling is generous: far above what a GPU serves (the calibration runs peak near 10k tokens/s)
    assert gpu_token_ceiling(prof, 2048) > 100_000
    example = json.loads((resources.files("packer") / "examples" / "workload.json").read_text(encoding="utf-8"))
    wl = parse_workload(example)
    check_placement_load(wl, prof)  # a real workload passes
    under = workload(adapters=[{"id": f"a{i}", "rank": 8, "rate": ceiling / tokens * 0.99 / n} for i in range(n)])
    assert parse_workload(under).total_rate * tokens < ceiling


# ---- bursty arrivals ------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [("cv", 1e308), ("cv", 1e-300), ("period_s", 1e-300),
                                          ("multiplier_sigma", 50.0)])
def test_extreme_bursty_parameters_are_refused(tmp_path, field, value):
    sc = llama_scenario(arrivals={"kind": "bursty", field: value})
    line = refused("simulate", "--json", write(tmp_path, sc))
    lo, hi, _ = BURSTY_RANGES[field]
    assert f"arrivals.{field}: must be" in line and f"{lo:g}" in line and f"(got {value!r})" in line


def test_sigma_50_was_silent_no_traffic_and_sigma_2_still_has_traffic():
    sc = parse_scenario(llama_scenario(arrivals={"kind": "bursty", "multiplier_sigma": 2.0, "period_s": 60},
                                       duration_s=1800))
    r = Twin.from_scenario(sc).run()
    assert r.generated > 0 and r.offered_tps > 0


def test_the_operational_clock_has_a_bounded_number_of_periods():
    sc = llama_scenario(adapters=one_adapter(0.001), arrivals={"kind": "bursty", "period_s": 1.0},
                        duration_s=30 * 86400, warmup_s=30 * 86400)
    with pytest.raises(InputError, match="^arrivals.period_s: .* rate periods, more than 1,000,000; use a longer"):
        parse_scenario(sc)
    parse_scenario({**sc, "arrivals": {"kind": "bursty", "period_s": 60.0}})


def test_the_training_sweep_lies_inside_the_bursty_ranges():
    spec = SweepSpec(profile=LLAMA)
    for field, (lo, hi) in (("cv", spec.bursty_cv_range), ("multiplier_sigma", spec.bursty_sigma_range),
                            ("period_s", (min(spec.bursty_periods), max(spec.bursty_periods)))):
        r_lo, r_hi, _ = BURSTY_RANGES[field]
        assert r_lo <= lo <= hi <= r_hi, field
    corners = [BurstyArrivals(cv=c, multiplier_sigma=s, period_s=p) for c in spec.bursty_cv_range
               for s in spec.bursty_sigma_range for p in spec.bursty_periods]
    assert len(corners) == 12
    bursty = [q for q in (sample_query(spec, i) for i in range(400)) if q.arrivals.kind == "bursty"]
    assert len(bursty) > 40  # sampling builds each BurstyArrivals, so it would raise outside the ranges


# ---- reported values ------------------------------------------------------------------------------

def test_a_memory_error_still_reports_the_offered_load(tmp_path):
    memory = {"server": {"max_loras": 384, "max_cpu_loras": 384, "max_lora_rank": 256}}
    out, _ = cli("simulate", "--json", write(tmp_path, llama_scenario(duration_s=300, **memory)))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["memory_error"] and r["finished"] == 0 and r["throughput_tps"] == 0
    # the same workload on a server that starts draws the same requests: the same offered load
    starts = Twin.from_scenario(llama_scenario(duration_s=300)).run()
    assert r["offered_tps"] == pytest.approx(starts.offered_tps) and r["offered_tps"] > 0
    assert r["generated"] == starts.generated and r["offered_rps"] == pytest.approx(starts.offered_rps)
    nominal = 24 * 0.2 * (222.7 + 196.1 * load_profile(LLAMA).client.output_len_scale)
    assert r["offered_tps"] == pytest.approx(nominal, rel=0.15)


def test_the_sweep_progress_goes_to_stderr_and_only_to_a_terminal(tmp_path):
    args = [sys.executable, "-m", "packer.predictors.training", "--profile", LLAMA, "--samples", "3", "--duration",
            "20", "--warmup", "0", "--workers", "1", "--executor", "serial"]
    piped = subprocess.run(args + ["--out", str(tmp_path / "a")], capture_output=True, text=True, timeout=300,
                           env=ENV)
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout)["rows"] == 3  # stdout is the result alone
    assert "twin sweep" not in piped.stderr  # no bar into a pipe
    master, slave = pty.openpty()
    with subprocess.Popen(args + ["--out", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=slave,
                          env={**ENV, "COLUMNS": "100"}) as proc:
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        stdout = proc.stdout.read().decode()
        assert proc.wait(timeout=300) == 0
    os.close(master)
    assert "twin sweep" in seen.decode(errors="replace")  # the bar is on the terminal (stderr)
    assert json.loads(stdout)["rows"] == 3 and "twin sweep" not in stdout
