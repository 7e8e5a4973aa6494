"""Real vLLM on a real GPU: `packer bench` launches `vllm serve` with the model at $PACKER_VLLM_MODEL (a local
directory: nothing is downloaded) and dummy adapters shaped from its config.json, runs a 60 s benchmark
and stops the server. Skipped without vllm, a GPU or the model; CI installs none of them."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from packer.live.session import launch_and_bench
from packer.model import parse_scenario
from packer.profile import load_profile
from packer.twin import simulate

MODEL = os.environ.get("PACKER_VLLM_MODEL")


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (packer[live])"),
    pytest.mark.skipif(not _has_gpu(), reason="no NVIDIA GPU"),
    pytest.mark.skipif(not MODEL or not (Path(MODEL or ".") / "config.json").is_file(),
                       reason="PACKER_VLLM_MODEL is not a local model directory with a config.json"),
]

TEMPLATE = ("vllm serve {model} --enable-lora --max-loras {{max_loras}} --max-cpu-loras {{max_cpu_loras}} "
            "--max-lora-rank {{max_lora_rank}} --max-num-seqs {{max_num_seqs}} "
            "--max-num-batched-tokens {{max_num_batched_tokens}} --gpu-memory-utilization {{gpu_memory_utilization}} "
            "--port {{port}} --disable-log-requests --lora-modules {{lora_modules}}")


def test_a_60_second_bench_on_real_vllm(tmp_path):
    profile = os.environ.get("PACKER_VLLM_PROFILE", "llama-3.1-8b-instruct@h100-64gb")
    sc = parse_scenario({"profile": profile, "server": {"max_loras": 4, "max_lora_rank": 16, "max_num_seqs": 256},
                         "adapters": [{"id": f"a{i}", "rank": 8 if i % 2 else 16, "rate": 0.5} for i in range(8)],
                         "duration_s": 60, "warmup_s": 20, "seed": 0})
    config = json.loads((Path(MODEL) / "config.json").read_text())
    res = launch_and_bench(sc, load_profile(profile), TEMPLATE.format(model=MODEL), model_config=config,
                           adapters_dir=tmp_path / "adapters", log_path=tmp_path / "vllm.log", health_timeout_s=900)
    assert not res.partial, res.error
    r, twin = res.result, simulate(sc)
    assert r.memory_error is None and r.finished > 0 and r.throughput_tps > 0
    print(f"real vLLM: {r.throughput_tps:,.0f} tok/s, mean ITL {r.mean_itl_ms:.1f} ms, p50 TTFT {r.p50_ttft_ms:.0f} ms; "
          f"twin: {twin.throughput_tps:,.0f} tok/s, {twin.mean_itl_ms:.1f} ms, {twin.p50_ttft_ms:.0f} ms")
