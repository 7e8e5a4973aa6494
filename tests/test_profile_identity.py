"""The profile a user names is the profile used: capacity model, solver, verification and cache keys all
run on the file's numbers, whatever the file is called (issue 19, defect 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import packer
from packer.errors import InputError
from packer.predictors import GpuQuery, get_predictor
from packer.profile import load_profile

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
SHIPPED = Path(packer.__file__).parent / "profiles" / f"{LLAMA}.json"


def _slow_copy(path: Path, name: str | None = None) -> Path:
    """The shipped Llama profile with decode and prefill three times slower."""
    d = json.loads(SHIPPED.read_text())
    d["step"]["decode_ms"] = [3 * x for x in d["step"]["decode_ms"]]
    d["step"]["prefill_ms_per_token"] *= 3
    if name is not None:
        d["name"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(d))
    return path


def _workload(profile: str) -> dict:
    return {"profile": profile, "adapters": [{"id": f"a{i}", "rank": 8, "rate": 3.0} for i in range(8)]}


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("PACKER_CACHE_DIR", str(d))
    return d


def test_a_modified_copy_named_like_a_shipped_profile_changes_the_plan(tmp_path, cache_dir):
    slow = _slow_copy(tmp_path / "some" / "dir" / f"{LLAMA}.json")
    shipped_plan = packer.solve(_workload(LLAMA))
    slow_plan = packer.solve(_workload(str(slow)))
    assert shipped_plan.num_gpus == 1 and shipped_plan.verified
    assert slow_plan.num_gpus > shipped_plan.num_gpus and slow_plan.verified

    # the twin with the same file agrees with the verification, GPU by GPU
    for gpu in slow_plan.gpus:
        scenario = {"profile": str(slow), "duration_s": 600, "warmup_s": 300,
                    "server": {"max_loras": gpu.max_loras, "max_lora_rank": gpu.max_lora_rank,
                               "max_cpu_loras": gpu.max_cpu_loras, "max_num_seqs": 2048},
                    "adapters": [{"id": a.id, "rank": a.rank, "rate": a.rate} for a in gpu.adapters]}
        assert not packer.simulate(scenario).starved
    # the shipped plan's single GPU, simulated with the slow numbers, starves: the plans differ for a reason
    one = shipped_plan.gpus[0]
    scenario = {"profile": str(slow), "duration_s": 600, "warmup_s": 300,
                "server": {"max_loras": one.max_loras, "max_lora_rank": one.max_lora_rank, "max_num_seqs": 2048},
                "adapters": [{"id": a.id, "rank": a.rank, "rate": a.rate} for a in one.adapters]}
    assert packer.simulate(scenario).starved

    # the capacity table measured for the file is stored under the file's fingerprint, with its numbers
    tables = list((cache_dir / "capacity").glob("*.json"))
    assert len(tables) == 1
    slow_cap = max(r[3] for r in json.loads(tables[0].read_text())["entries"])
    shipped_cap = packer.planner.build_problem(
        packer.planner.parse_workload(_workload(LLAMA)), get_predictor("twin"), objective=packer.solvers.base.Objective.MIN_GPUS,
        gpus=None, time_limit_s=1.0, seed=0).capacity.capacity(8, 8)
    assert slow_cap < 0.6 * shipped_cap


def test_any_file_name_works_and_same_numbers_share_the_cache(tmp_path, cache_dir):
    a = _slow_copy(tmp_path / "a" / "first.json", name="slow-llama@h100")
    b = _slow_copy(tmp_path / "b" / "second.json", name="another-name@h100")
    ra, rb = packer.solve(_workload(str(a))), packer.solve(_workload(str(b)))
    assert ra.num_gpus == rb.num_gpus > 1 and ra.verified and rb.verified
    assert len(list((cache_dir / "capacity").glob("*.json"))) == 1  # keyed on the numbers, not the name


def test_queries_carry_the_profile_object(tmp_path):
    slow = load_profile(_slow_copy(tmp_path / f"{LLAMA}.json"))
    shipped = load_profile(LLAMA)
    assert slow.name == shipped.name and slow != shipped and slow.fingerprint() != shipped.fingerprint()
    server = {"max_loras": 8, "max_lora_rank": 8}
    q_slow = GpuQuery(slow, packer.ServerConfig(**server), (8,) * 8, (3.0,) * 8)
    q_path = GpuQuery(str(tmp_path / f"{LLAMA}.json"), packer.ServerConfig(**server), (8,) * 8, (3.0,) * 8)
    q_shipped = GpuQuery(LLAMA, packer.ServerConfig(**server), (8,) * 8, (3.0,) * 8)
    assert q_path.profile == slow and q_path == q_slow and q_slow != q_shipped
    twin = get_predictor("twin")
    assert twin.predict(q_slow).mean_itl_ms > 2 * twin.predict(q_shipped).mean_itl_ms
    # the tree was trained on the shipped numbers: it refuses the modified copy instead of answering for it
    with pytest.raises(InputError, match="another calibration"):
        get_predictor("tree").predict(q_slow)


def test_a_profile_file_is_reread_when_it_changes(tmp_path):
    path = _slow_copy(tmp_path / "p.json", name="one@h100")
    assert load_profile(path).name == "one@h100"
    d = json.loads(path.read_text())
    d["name"] = "two-with-a-longer-name@h100"
    path.write_text(json.dumps(d))
    assert load_profile(str(path)).name == "two-with-a-longer-name@h100"
