"""``packer predict`` and ``packer train`` end to end, as a user runs them (a real process, real models)."""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from conftest import LLAMA, llama_scenario
from conftest import packer_cli as cli
from packer import simulate
KEYS = {"predictor", "throughput_tps", "offered_tps", "starved", "memory_error", "mean_itl_ms", "p99_ttft_ms",
        "throughput_ratio", "wall_seconds"}


def scenario(**over) -> dict:
    return llama_scenario(**{"duration_s": 60, **over})


HEAVY = {"adapters": [{"id": f"a{i}", "rank": 16, "rate": 3.0} for i in range(24)], "seed": 3}
MEMORY = {"server": {"max_loras": 384, "max_cpu_loras": 384, "max_lora_rank": 256}}


def write(tmp_path, data, name="s.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2 and out.stdout == "", out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_predict_json_tree_is_one_line_per_scenario_in_order(env, tmp_path):
    light, heavy = write(tmp_path, scenario(), "light.json"), write(tmp_path, scenario(**HEAVY), "heavy.json")
    out = cli(env, "predict", heavy, light, "--json")  # default predictor: tree
    assert out.returncode == 0, out.stderr
    objs = [json.loads(x) for x in out.stdout.strip().splitlines()]
    assert len(objs) == 2
    for o in objs:
        assert KEYS <= set(o) and o["predictor"] == "tree" and o["memory_error"] is None
        assert o["throughput_tps"] > 0 and o["mean_itl_ms"] > 0 and o["wall_seconds"] >= 0
        assert math.isclose(o["throughput_ratio"], o["throughput_tps"] / o["offered_tps"])
    h, l = objs  # in the order given: the heavy one (24 x 3 req/s at rank 16) starves, the light one does not
    assert h["starved"] and not l["starved"]
    assert h["offered_tps"] > 10 * l["offered_tps"]


def test_twin_predictor_gives_the_numbers_of_simulate(env, tmp_path):
    path = write(tmp_path, scenario(seed=5))
    pred = cli(env, "predict", path, "--predictor", "twin", "--json")
    sim = cli(env, "simulate", path, "--json")
    assert pred.returncode == 0 and sim.returncode == 0, pred.stderr + sim.stderr
    p, s = json.loads(pred.stdout), json.loads(sim.stdout)
    assert p["predictor"] == "twin"
    for k in ("throughput_tps", "offered_tps", "starved", "memory_error", "mean_itl_ms", "p99_ttft_ms"):
        assert p[k] == s[k], k


def test_memory_error_is_predicted_without_a_model(env, tmp_path):
    assert simulate(scenario(**MEMORY)).memory_error  # the twin refuses to start it
    path = write(tmp_path, scenario(**MEMORY))
    for name in ("tree", "twin"):
        out = cli(env, "predict", path, "--predictor", name, "--json")
        assert out.returncode == 0, out.stderr
        o = json.loads(out.stdout)
        assert o["memory_error"] and o["throughput_tps"] is None and o["throughput_ratio"] is None


def test_readable_output(env, tmp_path):
    out = cli(env, "predict", write(tmp_path, scenario(), "a.json"), write(tmp_path, scenario(**MEMORY), "m.json"))
    assert out.returncode == 0, out.stderr
    assert "throughput" in out.stdout and "keeps up" in out.stdout and "memory error" in out.stdout
    assert "a.json" in out.stdout and "m.json" in out.stdout


@pytest.mark.parametrize("args, needle", [
    (["--predictor", "oracle"], "valid: forest, tree, twin"),
    (["--model", "{tmp}/missing.json"], "--model"),
    (["--model", "{scenario}"], "--model"),  # a file that is not a model
    (["--predictor", "twin", "--model", "{scenario}"], "--model"),
])
def test_bad_flags_are_one_line(env, tmp_path, args, needle):
    path = write(tmp_path, scenario())
    args = [a.format(tmp=tmp_path, scenario=path) for a in args]
    line = one_error_line(cli(env, "predict", path, *args))
    assert needle in line
    if "oracle" in args:
        assert "--predictor" in line and "oracle" in line


def test_bad_scenario_files_are_one_line(env, tmp_path):
    good = write(tmp_path, scenario(), "good.json")
    assert "missing.json" in one_error_line(cli(env, "predict", good, str(tmp_path / "missing.json")))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert "not valid JSON" in one_error_line(cli(env, "predict", str(broken)))
    bad = write(tmp_path, scenario(adapters=[{"id": "x", "rank": 64, "rate": 0.1}]), "bad.json")
    assert "adapters[0].rank" in one_error_line(cli(env, "predict", good, bad, "--json"))


def test_train_then_predict_with_the_trained_model(env, tmp_path):
    model = tmp_path / "m.json"
    out = cli(env, "train", "--profile", LLAMA, "--samples", "160", "--duration", "60", "--warmup", "30", "--dataset",
              str(tmp_path / "ds"), "--out", str(model), "--no-capacity-check", "--workers", "2",
              "--extra-rows", "1000", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert model.is_file() and "Traceback" not in out.stderr
    assert "throughput MARE" in out.stdout and "F1" in out.stdout and "replicates:" in out.stdout
    assert f"--model {model}" in out.stdout  # how to use it
    path = write(tmp_path, scenario())
    pred = cli(env, "predict", path, "--model", str(model), "--json")
    assert pred.returncode == 0, pred.stderr
    o = json.loads(pred.stdout)
    assert KEYS <= set(o) and o["predictor"] == "tree" and o["throughput_tps"] > 0


def test_train_bad_flags_are_one_line(env, tmp_path):
    line = one_error_line(cli(env, "train", "--profile", "gpt-17@tpu", cwd=tmp_path))
    assert "--profile" in line and LLAMA in line
    assert "--out" in one_error_line(cli(env, "train", "--profile", LLAMA, "--out", "m.txt", cwd=tmp_path))
    assert "--samples" in one_error_line(cli(env, "train", "--profile", LLAMA, "--samples", "0", cwd=tmp_path))
    assert "--replicates" in one_error_line(cli(env, "train", "--profile", LLAMA, "--replicates", "-1", cwd=tmp_path))
    assert not any(tmp_path.iterdir())  # nothing was generated
