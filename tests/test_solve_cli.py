"""``packer solve`` and ``packer demo`` end to end, as a user runs them (a real process, the real twin)."""

from __future__ import annotations

import json

import pytest

from conftest import packer_cli as cli
LLAMA = "llama-3.1-8b-instruct@h100-64gb"


def write(tmp_path, data, name="wl.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def workload(**over) -> dict:
    wl = {"profile": LLAMA, "lengths": {"input_mean": 222.7, "output_mean": 196.1},
          "adapters": [{"id": f"a{i}", "rank": 8 if i % 3 else 16, "rate": 0.5 + 2.0 * (i % 4)} for i in range(12)]}
    wl.update(over)
    return wl


def test_solve_json_is_one_object_with_the_documented_keys(env, tmp_path):
    path = write(tmp_path, workload())
    out = cli(env, "solve", path, "--solver", "greedy", "--json")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert {"status", "num_gpus", "lower_bound", "gap", "verified", "wall_seconds", "gpus"} <= set(r)
    assert r["verified"] is True and r["num_gpus"] == len(r["gpus"]) >= r["lower_bound"]
    ids = sorted(a["id"] for g in r["gpus"] for a in g["adapters"])
    assert ids == sorted(a["id"] for a in workload()["adapters"])
    for g in r["gpus"]:
        assert {"adapters", "max_loras", "max_cpu_loras", "max_lora_rank"} <= set(g)
        assert g["max_lora_rank"] >= max(a["rank"] for a in g["adapters"])


def test_solve_table_and_exact_solver(env, tmp_path):
    path = write(tmp_path, workload())
    out = cli(env, "solve", path, "--solver", "cpsat", "--time-limit", "5")
    assert out.returncode == 0, out.stderr
    assert "GPU" in out.stdout and "max-loras" in out.stdout and "verified" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["--gpus", "0"], "--gpus"),
    (["--time-limit", "-1"], "--time-limit"),
    (["--objective", "cheapest"], "--objective"),
    (["--solver", "simplex"], "valid: colgen, cpsat, dlora, greedy, greedy-split, ladder, loraserve, milp"),
    (["--predictor", "oracle"], "valid: forest, tree, twin"),
])
def test_bad_flags_are_one_line(env, tmp_path, args, needle):
    path = write(tmp_path, workload())
    out = cli(env, "solve", path, *args)
    assert out.returncode == 2 and out.stdout == ""
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize("change, needle", [
    ({"adapters": [{"id": "x", "rank": 8, "rate": float("nan")}]}, "adapters[0].rate"),
    ({"adapters": [{"id": "x", "rank": 1024, "rate": 1.0}]}, "adapters[0].rank"),
    ({"gpu": 4}, "gpu: unknown field"),
    ({"server": {"max_num_seqs": 0}}, "server.max_num_seqs"),
    ({"profile": "nope"}, "known profiles"),
])
def test_bad_workloads_are_one_line(env, tmp_path, change, needle):
    path = write(tmp_path, workload(**change))
    out = cli(env, "solve", path, "--json")
    assert out.returncode == 2 and out.stdout == ""
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_demo_places_the_example_workload(env):
    out = cli(env, "demo", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["verified"] and r["num_gpus"] >= 1
    assert sum(len(g["adapters"]) for g in r["gpus"]) >= 120
