"""`packer calibrate` in a closed loop: the short plan (24 points, 6 servers, about 60-80 s at time scale 2)
measured on `packer serve-twin` (a real server process on loopback, started through the launch template)
recovers the served profile: the issue's target, throughput within 3 % and the same starvation and memory
verdicts on 20 scenarios the plan never measured."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import LLAMA, packer_cli
from packer.calibration.live_plan import compare_profiles, loop_scenarios, plan_points, read_state
from packer.profile import load_profile

SERVE = f"{sys.executable} -m packer.cli serve-twin --profile {LLAMA} --max-loras {{max_loras}} " \
        "--max-cpu-loras {max_cpu_loras} --max-lora-rank {max_lora_rank} --max-num-seqs {max_num_seqs} " \
        "--port {port} --time-scale {time_scale} --lora-modules {lora_modules}"
ARGS = ["calibrate", "--launch", SERVE, "--model-name", "llama-3.1-8b-instruct", "--gpu-name", "h100-64gb",
        "--time-scale", "2", "--budget-minutes", "0.5"]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    out = tmp_path_factory.mktemp("cal") / "measured.json"
    r = packer_cli(None, *ARGS, "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out, r


def test_recovers_the_served_profile(calibrated):
    out, r = calibrated
    assert "provenance: measured" in r.stdout and "[1/" in r.stderr  # progress lines
    got, want = load_profile(out), load_profile(LLAMA)
    assert got.provenance == "measured" and json.loads(out.read_text())["fit_report"]["memory"]["rows_used"] >= 3
    m, w = got.memory, want.memory
    assert abs(m.non_kv_gib - w.non_kv_gib) < 0.05
    assert abs(m.slot_mib(16) - w.slot_mib(16)) / w.slot_mib(16) < 0.02
    assert abs(got.step.lora_ms_per_adapter - want.step.lora_ms_per_adapter) / want.step.lora_ms_per_adapter < 0.25
    # the twin's decode step (table, attention at 300 tokens of context, scheduler, LoRA terms with the rank
    # factor) at the probes' corner and at many slots and a high rank, where the rank factor matters: within 5 %
    def step(p, n, slots, rank, ctx=300):
        s = p.step
        return float(np.interp(n, s.decode_batch, s.decode_ms)) + p.scheduler.ms_per_running * n \
            + s.attention_ms_per_kv_token * n * (ctx - s.decode_ctx_ref) \
            + s.rank_factor(rank) * (s.lora_ms_base + n * (s.lora_ms_per_token + s.lora_ms_per_token_slot * slots))
    for n, slots, rank in ((16, 1, 8), (200, 1, 8), (128, 96, 32), (64, 128, 16)):
        assert abs(step(got, n, slots, rank) - step(want, n, slots, rank)) / step(want, n, slots, rank) < 0.05, \
            (n, slots, rank)
    # disk -> CPU grows with the rank, as in the served profile
    assert got.loading.disk_to_cpu(32) > got.loading.disk_to_cpu(8)


def test_throughput_on_unseen_scenarios(calibrated):
    out, _ = calibrated
    d = json.loads(out.read_text())
    c = load_profile(LLAMA).client  # the client (EOS behaviour, load generator) is no server property
    d["client"] = {"max_waiting": c.max_waiting, "output_len_scale": c.output_len_scale}
    d_path = out.with_name("with-client.json")
    d_path.write_text(json.dumps(d))
    rep = compare_profiles(LLAMA, d_path, loop_scenarios(20, seed=1))  # the closed-loop target
    assert rep["memory_agree"] == 20 and rep["starvation_agree"] == 20, rep
    assert rep["throughput_max_err_pct"] <= 3 and rep["throughput_mape_pct"] < 1.5, rep


def test_rerun_resumes_and_bad_input(calibrated, tmp_path):
    out, _ = calibrated
    state = out.with_suffix(".state.jsonl")
    assert len(read_state(state)) == len(plan_points(0.5, 2.0))
    r = packer_cli(None, *ARGS, "--out", str(out))  # every point is in the state file: no server started
    assert r.returncode == 0 and "already measured" in r.stderr and "[1/" not in r.stderr
    for extra, word in ((["--time-scale", "0"], "--time-scale"), (["--gpu-name", "nosuchgpu"], "nosuchgpu"),
                        (["--launch", "x {nope}"], "placeholder")):
        args = list(ARGS)
        i = args.index(extra[0])
        args[i + 1] = extra[1]
        r = packer_cli(None, *args, "--out", str(tmp_path / "x.json"))
        assert r.returncode == 2 and word in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
