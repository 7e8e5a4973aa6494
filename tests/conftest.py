"""Shared fixtures: a transparent test profile (1 ms per step, exact KV block counts) and helpers to run
the real twin on hand-written requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Modules whose every test measures wall-clock time: run alone (``make test``), never beside other tests.
_REALTIME_MODULES = {"test_live.py", "test_time_limits.py", "test_worker_lifetime.py",
                     "test_calibrate_live.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in _REALTIME_MODULES or (item.path.name == "test_predictors.py" and "[vllm]" in item.name):
            item.add_marker(pytest.mark.realtime)


# Property tests draw the same examples on every run (CI included): a failure is reproducible, never luck.
settings.register_profile("packer", derandomize=True, database=None)
settings.load_profile("packer")

from packer.profile import Profile
from packer.twin import Twin
from packer.twin.workload_gen import Requests

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_profile(kv_blocks: int = 1024, step_ms: float = 1.0, load_ms: float = 0.0, disk_ms: float = 0.0,
                 max_model_len: int = 64, **step_overrides) -> Profile:
    """A profile whose every step costs ``step_ms`` and whose KV cache holds exactly ``kv_blocks`` blocks
    (with gpu_memory_utilization=1.0 and no LoRA slot cost)."""
    assert (1 << 30) % (kv_blocks * 16) == 0, "kv_blocks must divide 2**26"
    step = {"decode_batch": [1.0, 2.0], "decode_ms": [step_ms, step_ms], "prefill_ms_per_token": 0.0,
            "lora_ms_base": 0.0, "lora_ms_per_token": 0.0, "lora_ms_per_adapter": 0.0}
    step.update(step_overrides)
    return Profile.from_dict({
        "name": "test@tiny", "model": "test", "gpu": "tiny", "description": "hand-checkable test profile",
        "memory": {"gpu_memory_gib": 1.0, "non_kv_gib": 0.0, "kv_bytes_per_token": (1 << 30) // (kv_blocks * 16),
                   "slot_mib_base": 0.0, "slot_mib_per_rank": 0.0, "max_model_len": max_model_len, "block_size": 16},
        "step": step,
        "scheduler": {"ms_base": 0.0, "ms_per_running": 0.0, "ms_per_waiting": 0.0},
        "loading": {"ranks": [8, 16], "cpu_to_gpu_ms": [load_ms, load_ms], "disk_to_cpu_ms": [disk_ms, disk_ms]},
        "client": {"max_waiting": 1_000_000, "output_len_scale": 1.0},
    })


def scenario(n_adapters: int, max_loras: int, duration_s: float = 10.0, **server) -> dict:
    return {
        "profile": "test@tiny",
        "server": {"max_loras": max_loras, "max_lora_rank": 8, "max_num_seqs": 256,
                   "max_num_batched_tokens": 2048, "gpu_memory_utilization": 1.0, **server},
        "adapters": [{"id": f"a{i}", "rank": 8, "rate": 1.0} for i in range(n_adapters)],
        "lengths": {"distribution": "fixed", "input_mean": 16, "output_mean": 4},
        "duration_s": duration_s,
    }


LLAMA = "llama-3.1-8b-instruct@h100-64gb"


def llama_scenario(**over) -> dict:
    """A small scenario file on the shipped Llama profile: 24 adapters at 0.2 req/s, well under capacity."""
    sc = {
        "profile": LLAMA,
        "server": {"max_loras": 24, "max_cpu_loras": 24, "max_lora_rank": 16,
                   "max_num_seqs": 256, "max_num_batched_tokens": 2048},
        "adapters": [{"id": f"a{i}", "rank": 8 if i % 2 else 16, "rate": 0.2} for i in range(24)],
        "lengths": {"input_mean": 222.7, "output_mean": 196.1},
        "arrivals": "poisson", "duration_s": 600, "seed": 0,
    }
    sc.update(over)
    return sc


def requests(rows: list[tuple[float, int, int, int]]) -> Requests:
    """Requests from (arrival_s, adapter, prompt_len, output_len) rows (must be sorted by arrival)."""
    a = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return Requests(arrival_s=a[:, 0].copy(), adapter=a[:, 1].astype(np.int32),
                    prompt_len=a[:, 2].astype(np.int32), output_len=a[:, 3].astype(np.int32))


def run(sc: dict, rows, profile: Profile | None = None):
    """Run the real twin on hand-written requests, keeping the per-request log."""
    twin = Twin.from_scenario(sc, profile or tiny_profile())
    return twin.run(requests(rows), keep_requests=True)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "agullo-h100" / "real_runs.csv").is_file():
        pytest.skip("shared/data is not next to the repository")
    return SHARED_DATA


def packer_cli(env: dict | None, *args: str, cwd=None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m packer ARGS`` in a real process with ``env``."""
    return subprocess.run([sys.executable, "-m", "packer", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd, input=stdin)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    """An environment for CLI processes with a capacity cache of this module's own."""
    return {**os.environ, "PACKER_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def cache_env(env):
    """``env``, with this process's capacity cache pointed at the same directory for the module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PACKER_CACHE_DIR", env["PACKER_CACHE_DIR"])
    yield env
    mp.undo()
