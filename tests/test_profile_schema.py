"""Profiles are checked against one schema on load (types, finiteness, signs, plausible ranges), and a twin
run can never hang: the kernel refuses a step that does not advance the clock (issue 19, defect 3)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import packer
from packer.errors import InputError
from packer.model import parse_scenario
from packer.profile import Profile, load_profile
from packer.twin import Twin

from conftest import scenario, tiny_profile

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
SHIPPED = json.loads((Path(packer.__file__).parent / "profiles" / f"{LLAMA}.json").read_text())
ROOT = Path(packer.__file__).resolve().parents[1]

# (section, field, value, the field the error must name, words the message must contain)
BAD = [
    ("step", "decode_ms", [float("nan"), 17.6, 50.8], "profile.step.decode_ms[0]", "finite"),
    ("step", "decode_ms", [11.8, 17.6, float("inf")], "profile.step.decode_ms[2]", "finite"),
    ("step", "decode_ms", [11.8, 5.0, 50.8], "profile.step.decode_ms", "must not decrease"),
    ("step", "decode_ms", [11.8, 17.6], "profile.step.decode_ms", "3 of decode_batch"),
    ("step", "decode_batch", [1.0, 1.0, 1024.0], "profile.step.decode_batch", "increasing"),
    ("step", "decode_ms", [1e-9, 17.6, 50.8], "profile.step.decode_ms[0]", ">= 0.05"),
    ("step", "prefill_ms_per_token", -0.01, "profile.step.prefill_ms_per_token", ">= 0"),
    ("step", "prefill_ms_per_token", "0.02", "profile.step.prefill_ms_per_token", "must be a number"),
    ("step", "lora_ms_base", None, "profile.step.lora_ms_base", "must be a number"),
    ("step", "lora_ms_per_token", True, "profile.step.lora_ms_per_token", "must be a number"),
    ("step", "lora_rank_slope", -0.9, "profile.step.lora_rank_slope", "positive"),
    ("step", "lora_rank_ref", 0, "profile.step.lora_rank_ref", "> 0"),
    ("step", "unknown_term", 1.0, "profile.step.unknown_term", "unknown field"),
    ("memory", "kv_bytes_per_token", 0, "profile.memory.kv_bytes_per_token", ">= 1"),
    ("memory", "kv_bytes_per_token", 131072.5, "profile.memory.kv_bytes_per_token", "whole number"),
    ("memory", "block_size", 0, "profile.memory.block_size", ">= 1"),
    ("memory", "gpu_memory_gib", 1e308, "profile.memory.gpu_memory_gib", "implausible"),
    ("memory", "non_kv_gib", 80.0, "profile.memory.non_kv_gib", "below gpu_memory_gib"),
    ("memory", "max_model_len", -1, "profile.memory.max_model_len", ">= 1"),
    ("scheduler", "ms_per_running", float("nan"), "profile.scheduler.ms_per_running", "finite"),
    ("scheduler", "ms_base", -1.0, "profile.scheduler.ms_base", ">= 0"),
    ("loading", "cpu_to_gpu_ms", [1.0, -2.0, 3.0], "profile.loading.cpu_to_gpu_ms[1]", ">= 0"),
    ("loading", "ranks", [8, 16], "profile.loading.cpu_to_gpu_ms", "2 of ranks"),
    ("loading", "ranks", "8,16,32", "profile.loading.ranks", "list of"),
    ("client", "max_waiting", 0, "profile.client.max_waiting", ">= 1"),
    ("client", "output_len_scale", 0.0, "profile.client.output_len_scale", "> 0"),
]


@pytest.mark.parametrize("section,key,value,field,words", BAD, ids=[f"{s}.{k}={v!r}" for s, k, v, *_ in BAD])
def test_every_bad_coefficient_is_named(section, key, value, field, words):
    d = copy.deepcopy(SHIPPED)
    d[section][key] = value
    with pytest.raises(InputError) as e:
        Profile.from_dict(d, source="p.json")
    assert e.value.field == field
    assert words in str(e.value) and "p.json" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("doc,field", [
    ([1, 2], "profile"),
    ("llama", "profile"),
    ({k: v for k, v in SHIPPED.items() if k != "memory"}, "profile.memory"),
    ({**SHIPPED, "step": [1, 2]}, "profile.step"),
    ({**SHIPPED, "memory": {k: v for k, v in SHIPPED["memory"].items() if k != "kv_bytes_per_token"}},
     "profile.memory.kv_bytes_per_token"),
    ({**SHIPPED, "name": ""}, "profile.name"),
    ({**SHIPPED, "name": 7}, "profile.name"),
    ({**SHIPPED, "extra": 1}, "profile.extra"),
])
def test_malformed_documents_are_named(doc, field):
    with pytest.raises(InputError) as e:
        Profile.from_dict(doc)
    assert e.value.field == field


def test_shipped_profiles_pass_and_keep_their_fingerprints():
    for name in packer.list_profiles():
        p = load_profile(name)
        again = Profile.from_dict(json.loads(json.dumps(SHIPPED if name == LLAMA else
                                                        json.loads((ROOT / "packer" / "profiles" / f"{name}.json").read_text()))))
        assert again == p and again.fingerprint() == p.fingerprint() and hash(again) == hash(p)


def test_sections_built_in_code_are_checked_too():
    p = load_profile(LLAMA)
    with pytest.raises(InputError, match="profile.step.prefill_ms_per_token"):
        dataclasses.replace(p.step, prefill_ms_per_token=float("nan"))
    with pytest.raises(InputError, match="profile.memory.block_size"):
        dataclasses.replace(p.memory, block_size=0)


def test_a_step_that_does_not_advance_the_clock_stops_the_run_at_once():
    # valid coefficients whose sum is negative: a huge context correction below the reference context
    prof = tiny_profile(attention_ms_per_kv_token=1.0, decode_ctx_ref=1e6)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match="below the 0.05 ms any engine step takes"):
        Twin(parse_scenario(scenario(2, 2, duration_s=3600.0)), prof).run()
    assert time.perf_counter() - t0 < 30  # includes a possible kernel compilation; the loop itself stops at step 1


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PACKER_CACHE_DIR=str(cwd / "cache"))
    return subprocess.run([sys.executable, "-m", "packer.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def test_cli_names_the_bad_coefficient_in_one_line(tmp_path):
    d = copy.deepcopy(SHIPPED)
    d["step"]["decode_ms"][1] = float("nan")
    (tmp_path / "nan.json").write_text(json.dumps(d))  # Python writes NaN, which json.loads accepts
    d = copy.deepcopy(SHIPPED)
    d["memory"]["block_size"] = 0
    (tmp_path / "zero.json").write_text(json.dumps(d))
    for prof, field in (("nan.json", "step.decode_ms[1]"), ("zero.json", "profile.memory.block_size")):
        sc = {"profile": str(tmp_path / prof), "server": {"max_loras": 2, "max_lora_rank": 8}, "duration_s": 60,
              "adapters": [{"id": "a", "rank": 8, "rate": 1.0}]}
        (tmp_path / "s.json").write_text(json.dumps(sc))
        wl = {"profile": str(tmp_path / prof), "adapters": [{"id": "a", "rank": 8, "rate": 1.0}]}
        (tmp_path / "w.json").write_text(json.dumps(wl))
        for args in (("simulate", "s.json"), ("predict", "s.json", "--predictor", "twin"), ("solve", "w.json")):
            r = _cli(*args, cwd=tmp_path)
            assert r.returncode == 2, (args, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], (args, r.stderr)
            assert r.stdout == ""
