"""The calibration stages (packer.calibration) on small synthetic measurements made from known
coefficients: each stage recovers them. No shared data needed (the real-data fit: test_calibration.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy", reason="the fit needs scipy")

from packer.calibration.e2e import E2E_DEFAULTS, merge_e2e_params  # noqa: E402
from packer.calibration.fitting import error_stats, group_mean, interp_linear, select  # noqa: E402
from packer.calibration.io import load_e2e_params, read_table, table_from_records  # noqa: E402
from packer.calibration.loading import fit_loading  # noqa: E402
from packer.calibration.lora import expected_distinct_adapters, fit_lora_overhead  # noqa: E402
from packer.calibration.memory import fit_memory  # noqa: E402
from packer.calibration.report import print_profile  # noqa: E402
from packer.calibration.scheduler import SchedulerFit, fit_scheduler, scheduler_scale_by_model  # noqa: E402
from packer.calibration.step import DecodeFit, fit_decode, fit_prefill_per_token, prefill_rows  # noqa: E402
from packer.files import read_json  # noqa: E402
from packer.profile import GIB, MemoryModel  # noqa: E402

RNG = np.random.default_rng(7)
NO_SCHEDULER = SchedulerFit(0.0, 0.0, 0.0)
KNOTS, TABLE = (1.0, 200.0, 1024.0), (10.0, 16.0, 48.0)       # a known decode table (monotone)
E2E = E2E_DEFAULTS["llama-3.1-8b-instruct"]


# ---- tables -------------------------------------------------------------------------------------

def test_csv_and_records_give_the_same_typed_table(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("model,max_loras,kv,status\nm,8,1.5,ok\nm,16,,oom\n")
    table = read_table(path)
    assert table["max_loras"].dtype == np.int64 and table["kv"].dtype == float
    assert np.isnan(table["kv"][1]) and list(table["status"]) == ["ok", "oom"]
    records = table_from_records([{"model": "m", "max_loras": 8, "kv": 1.5, "status": "ok"},
                                  {"model": "m", "max_loras": 16, "status": "oom"}])
    assert set(records) == set(table)
    for name in table:
        assert records[name].dtype == table[name].dtype
        np.testing.assert_array_equal(records[name], table[name])
    assert list(select(table, table["status"] == "ok")["max_loras"]) == [8]


def test_group_mean_skips_nan_and_sorts_keys():
    assert group_mean([3, 1, 3, 1], [1.0, 2.0, 5.0, float("nan")]) == {1: 2.0, 3: 3.0}


def test_interp_linear_extrapolates_both_ends():
    assert interp_linear([0.0, 100.5, 2048.0], KNOTS, TABLE).tolist() == pytest.approx(
        [10.0 - 6 / 199, 13.0, 48.0 + 32 / 824 * 1024])


def test_error_stats_of_a_perfect_fit():
    s = error_stats([1.0, 2.0, 4.0], [1.0, 2.0, 4.0])
    assert s["mae"] == 0 and s["r2"] == 1 and s["n"] == 3


# ---- scheduler ----------------------------------------------------------------------------------

def test_scheduler_recovers_its_coefficients_and_the_per_model_scale():
    truth = SchedulerFit(0.05, 0.004, 0.0002)
    running, waiting = RNG.uniform(1, 500, 60), RNG.uniform(0, 20000, 60)
    sched = {"sched_time_per_step_ms": truth.ms(running, waiting), "avg_batch_size": running,
             "avg_waiting_queue": waiting, "cpu_loras": RNG.integers(8, 300, 60).astype(float),
             "gpu_loras": np.full(60, 8.0)}
    fit, report = fit_scheduler(sched, model_note="synthetic")
    assert (fit.ms_base, fit.ms_per_running, fit.ms_per_waiting) == pytest.approx(
        (truth.ms_base, truth.ms_per_running, truth.ms_per_waiting), rel=1e-8)
    assert report["r2"] == pytest.approx(1.0) and report["rows_used"] == 60

    # decode probes of two models whose scheduler time is 0.4x and 0.5x the fit's prediction
    run, wait = RNG.uniform(100, 300, 8), RNG.uniform(1000, 3000, 8)
    lora = table_from_records(
        {"model": m, "experiment": "lora_decode", "mean_running": r, "mean_waiting": w,
         "sched_time_mean_ms": f * float(truth.ms(r, w))}
        for m, f in (("a", 0.4), ("b", 0.5)) for r, w in zip(run, wait))
    factors, scale = scheduler_scale_by_model(lora, fit, "a")
    assert factors == pytest.approx({"a": 1.0, "b": 1.25}, rel=1e-8)
    assert scale["measured_over_predicted"] == pytest.approx({"a": 0.4, "b": 0.5}, rel=1e-8)


# ---- decode and prefill -------------------------------------------------------------------------

def _decode_probe(ms_per_ctx: float) -> dict:
    records = []
    for seqs in (50, 100, 200, 400, 700, 1000):
        for output in (100, 200, 400):
            records.append({"probe": "decode", "max_num_seqs": seqs, "output_len": output,
                            "mean_running": seqs * RNG.uniform(0.85, 0.99), "mean_waiting": 0.0,
                            "input_tokens_per_req": 5, "output_tokens_per_req": output, "preemptions": 0})
    table = table_from_records(records)
    context = table["input_tokens_per_req"] + table["output_tokens_per_req"] / 2
    x = table["mean_running"]
    table["mean_itl_ms"] = interp_linear(x, KNOTS, TABLE) + ms_per_ctx * x * (context - context.mean())
    return table


def test_decode_recovers_the_table_and_the_context_term():
    fit, report = fit_decode(_decode_probe(5e-5), NO_SCHEDULER)
    assert fit.batch == KNOTS
    assert fit.ms == pytest.approx(TABLE, rel=1e-8)
    assert fit.ms_per_context_token == pytest.approx(5e-5, rel=1e-6)
    assert fit.ctx_ref == pytest.approx(5 + (100 + 200 + 400) / 3 / 2)
    assert report["fit_with_context_term"]["mae"] < 1e-9 and report["rows_excluded"] == []
    assert report["knots_chosen"] == list(KNOTS)          # the true knots win the cross-validation


def test_decode_leaves_out_preempted_runs():
    probe = _decode_probe(0.0)
    probe["preemptions"] = np.where(np.arange(len(probe["preemptions"])) == 0, 3, 0)
    probe["mean_itl_ms"] = np.where(probe["preemptions"] > 0, 999.0, probe["mean_itl_ms"])
    fit, report = fit_decode(probe, NO_SCHEDULER)
    assert fit.ms == pytest.approx(TABLE, rel=1e-8) and len(report["rows_excluded"]) == 1


def test_prefill_recovers_the_cost_per_token():
    decode = DecodeFit(KNOTS, TABLE, 0.0, 100.0)
    sched = SchedulerFit(0.1, 0.002, 0.0001)
    records = []
    for prompt in (111, 209, 407):
        for total in (200_000, 400_000):
            records.append({"probe": "prefill", "input_tokens_per_req": prompt, "total_input_tokens": total,
                            "mean_running": 3.0, "mean_waiting": 1500.0, "num_prompts": total // prompt})
    records.append({"probe": "prefill", "input_tokens_per_req": 200, "total_input_tokens": 12800,
                    "mean_running": 1.0, "mean_waiting": 10.0, "num_prompts": 64})   # < 20 steps
    steps = table_from_records(records)
    seqs = 2048 / steps["input_tokens_per_req"] + 1
    step_ms = decode.table_ms(seqs) + sched.ms(steps["mean_running"], steps["mean_waiting"]) + 0.025 * 2048
    steps["duration"] = step_ms * (steps["total_input_tokens"] / 2048) / 1000
    usable, unusable = prefill_rows(steps)
    assert len(usable["steps"]) == 6 and len(unusable["steps"]) == 1
    value, report = fit_prefill_per_token(usable, decode, sched)
    assert value == pytest.approx(0.025, rel=1e-9)
    assert report["step_ms_fit"]["mae"] < 1e-9
    assert report["per_token_by_prompt_len"] == pytest.approx({111: 0.025, 209: 0.025, 407: 0.025})


# ---- LoRA ---------------------------------------------------------------------------------------

def test_lora_recovers_the_cost_per_adapter_and_the_intercept():
    decode = DecodeFit(KNOTS, TABLE, 1e-5, 120.0)
    sched = SchedulerFit(0.1, 0.002, 0.0001)
    c0, per_adapter = 15.0, 0.33
    records = [{"experiment": "baseline_no_lora", "status": "ok", "preemptions": 0, "mean_running": 190.0,
                "mean_waiting": 1600.0, "input_tokens_per_req": 5, "output_tokens_per_req": 100,
                "n_adapters_used": 0, "output_len": 100, "max_loras": 0, "mean_loras_by_batch": 0.0}]
    for n in (1, 8, 32, 64, 128, 300):
        for output in (100, 200):
            running = RNG.uniform(190, 240)
            logged = not (n == 300 and output == 200)
            records.append({"experiment": "lora_decode", "status": "ok", "preemptions": 0, "mean_running": running,
                            "mean_waiting": 2000.0, "input_tokens_per_req": 5, "output_tokens_per_req": output,
                            "n_adapters_used": n, "output_len": output, "max_loras": 300,
                            "mean_loras_by_batch": float(expected_distinct_adapters(n, running)) if logged else None})
    lora = table_from_records(records)
    context = lora["input_tokens_per_req"] + lora["output_tokens_per_req"] / 2
    baseline = decode.gpu_ms(lora["mean_running"], context) + sched.ms(lora["mean_running"], lora["mean_waiting"])
    adapters = expected_distinct_adapters(np.maximum(lora["n_adapters_used"], 1), lora["mean_running"])
    lora["mean_itl_ms"] = baseline + np.where(lora["experiment"] == "lora_decode", c0 + per_adapter * adapters, 0.0)
    fitted, report = fit_lora_overhead(lora, decode, sched, E2E)
    assert fitted["lora_ms_per_adapter"] == pytest.approx(per_adapter, rel=1e-8)
    assert report["intercept_ms"] == pytest.approx(c0, rel=1e-8)
    assert report["rows_used"] == 11
    assert report["check_unlogged_rows_with_occupancy_estimate"]["mae"] < 1e-8   # the held-out row
    assert report["baseline_model_vs_no_lora_rows"]["mae"] < 1e-9


# ---- memory and loading -------------------------------------------------------------------------

def test_memory_recovers_non_kv_and_the_slot_cost_and_predicts_refused_starts():
    non_kv, base, per_rank, kv_bytes = 20.0, 6.0, 5.5, 131072
    truth = MemoryModel(64.0, non_kv, kv_bytes, base, per_rank, 131072)
    records = []
    for slots in (8, 16, 32, 64, 128):
        for rank in (8, 16, 32):
            tokens = truth.kv_bytes(slots, rank) / kv_bytes           # exact (no block rounding)
            ok = truth.startup_error(slots, rank) is None
            records.append({"max_loras": slots, "max_lora_rank": rank,
                            "status": "ok" if ok else "oom_kv_below_max_model_len",
                            "kv_cache_tokens": tokens if ok else None,
                            "kv_avail_gib_reported": None if ok else truth.kv_bytes(slots, rank) / GIB})
    memory, report = fit_memory(table_from_records(records), kv_bytes, 131072)
    assert (memory["non_kv_gib"], memory["slot_mib_base"], memory["slot_mib_per_rank"]) == pytest.approx(
        (non_kv, base, per_rank), rel=1e-8)
    check = report["startup_check"]
    assert check["failing_rows"] >= 1 and check["failing_predicted_failing"] == check["failing_rows"]
    assert check["ok_predicted_ok"] == check["ok_rows"] and check["mismatches"] == []
    assert report["reported_kv_gib_of_refused_starts"]["mae"] < 1e-3
    assert report["slot_mib_at_rank"]["8"] == pytest.approx(base + 8 * per_rank)


def test_loading_averages_over_the_slot_sizes_per_rank():
    records = [{"status": "ok", "adapter_rank": rank, "max_lora_rank": slot, "cpu_to_gpu_load_mean_ms": rank / 4 + slot / 8,
                "disk_load_median_ms": 3.0 * rank, "disk_load_mean_ms": 4.0 * rank, "disk_load_max_ms": 50.0 * rank}
               for rank in (8, 16) for slot in (16, 32) if slot >= rank]
    records.append(dict(records[0], status="failed", cpu_to_gpu_load_mean_ms=1e6))
    table, report = fit_loading(table_from_records(records))
    assert table == {"ranks": [8, 16], "cpu_to_gpu_ms": [2 + 3.0, 4 + 3.0], "disk_to_cpu_ms": [24.0, 48.0]}
    assert report["rows_used"] == 4 and report["disk_max_ms_by_rank"] == {"8": 400.0, "16": 800.0}


# ---- end-to-end parameters and the report -------------------------------------------------------

def test_e2e_params_merge_over_the_defaults(tmp_path):
    path = tmp_path / "e2e.json"
    path.write_text(json.dumps({"llama-3.1-8b-instruct": {"lora_ms_base": 2.5, "note": 1}}))
    e2e = load_e2e_params(path, relative_to=tmp_path)
    assert e2e.params["llama-3.1-8b-instruct"]["lora_ms_base"] == 2.5
    assert e2e.params["qwen-2.5-7b-instruct"] == E2E_DEFAULTS["qwen-2.5-7b-instruct"]
    assert e2e.extra["llama-3.1-8b-instruct"] == {"note": 1}
    assert e2e.source.startswith("e2e.json (defaults for ") and "llama-3.1-8b-instruct.lora_ms_base" not in e2e.source
    absent = load_e2e_params(tmp_path / "none.json")
    assert absent == merge_e2e_params(None, "defaults (none.json not found)")


def test_report_prints_every_part_of_a_shipped_profile():
    lines: list[str] = []
    name = "llama-3.1-8b-instruct@h100-64gb"
    print_profile(read_json(Path(__file__).resolve().parents[1] / "packer" / "profiles" / f"{name}.json"), lines.append)
    text = "\n".join(lines)
    assert f"=== {name} ===" in text
    for part in ("memory.non_kv_gib", "step.decode_ms", "scheduler.ms_base", "loading.cpu_to_gpu_ms",
                 "step.lora_ms_base", "client.max_waiting", "fit errors:"):
        assert part in text, part
