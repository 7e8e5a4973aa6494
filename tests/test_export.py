"""``packer solve --export DIR``: a plan as deployable files (issue 16, section 2), on real solves of small
workloads with a hot adapter split across GPUs. Every YAML file is re-parsed; the Kubernetes objects are
checked against the Kubernetes schema with kubernetes-validate (in the ``dev`` extra) where it is installed."""

from __future__ import annotations

import json
import math
import os
import shlex
from pathlib import Path

import pytest
import yaml

from conftest import packer_cli as cli
from packer.deploy.export import MARKER, export_plan
from packer.errors import InputError
from packer.planner import parse_workload
from packer.planner import solve as run_solve
from packer.solvers.result import read_plan

LLAMA = "llama-3.1-8b-instruct@h100-64gb"
K8S_VERSION = "1.30"
WORKLOAD = {"profile": LLAMA, "lengths": {"input_mean": 222.7, "output_mean": 196.1},
            "adapters": [{"id": "hot", "rank": 16, "rate": 100.0}]
            + [{"id": f"a{i}", "rank": 8 if i % 3 else 16, "rate": 0.5 + (i % 4)} for i in range(9)]}


@pytest.fixture(scope="module")
def plan(cache_env):
    wl = parse_workload(WORKLOAD)
    result = run_solve(wl, solver="greedy", verify=False, executor="serial")
    assert any(len(w) > 1 for w in result.placement().values()), "the hot adapter should be split"
    return wl, result


@pytest.fixture()
def exported(plan, tmp_path):
    wl, result = plan
    manifest = export_plan(result, wl, tmp_path / "deploy")
    return wl, result, manifest, tmp_path / "deploy"


def _serve_args(script: Path) -> list[str]:
    line = [ln for ln in script.read_text().splitlines() if ln.startswith("exec ")]
    assert len(line) == 1
    words = shlex.split(line[0])
    assert words[:3] == ["exec", "vllm", "serve"]
    return words[3:]


def _flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, name
    return args[args.index(name) + 1]


def _lora_modules(args: list[str]) -> dict[str, str]:
    i = args.index("--lora-modules")
    mods = {}
    for w in args[i + 1:]:
        if w.startswith("--"):
            break
        name, _, path = w.partition("=")
        mods[name] = path
    return mods


def test_files_and_routing_agree_with_the_plan(exported):
    wl, result, manifest, out = exported
    names = [f"gpu-{g}" for g in range(result.num_gpus)]
    assert [s.name for s in manifest.servers] == names
    expected = {MARKER, "README.md", "compose.yaml", "routing.json", "plan.json"} | {f"servers/{n}.sh" for n in names} \
        | {f"k8s/{n}.yaml" for n in names}
    assert set(manifest.files) == expected
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == expected
    assert not [p for p in out.parent.iterdir() if p.name != "deploy"]  # no temporary directory left behind
    for rel in expected:
        if rel.endswith(".yaml"):
            assert all(doc is not None for doc in yaml.safe_load_all((out / rel).read_text()))

    routing = json.loads((out / "routing.json").read_text())
    placement = result.placement()
    assert set(routing["adapters"]) == set(placement) == {a.id for a in wl.adapters}
    for aid, where in placement.items():
        entries = routing["adapters"][aid]
        assert [e["server"] for e in entries] == [f"gpu-{g}" for g, _ in where]
        assert sum(e["weight"] for e in entries) == pytest.approx(1.0, abs=1e-12)
        total = sum(s for _, s in where)
        for e, (_, share) in zip(entries, where):
            assert e["weight"] == pytest.approx(share / total, abs=1e-8)
    assert set(routing["servers"]) == set(names)
    for g, gp in enumerate(result.gpus):
        srv = routing["servers"][f"gpu-{g}"]
        assert srv["url"] == f"http://gpu-{g}:8000"
        assert srv["adapters"] == [a.id for a in gp.adapters]
    readme = (out / "README.md").read_text()
    assert "routing.json" in readme and "weight" in readme and "`model`" in readme and "/adapters/<id>" in readme


def test_each_server_command_has_the_plans_flags_and_its_adapters(exported):
    wl, result, manifest, out = exported
    model = manifest.servers[0].args[0]
    assert model == "llama-3.1-8b-instruct"  # the profile's model name by default
    for g, gp in enumerate(result.gpus):
        script = out / "servers" / f"gpu-{g}.sh"
        assert os.access(script, os.X_OK)
        args = _serve_args(script)
        assert args[0] == model and "--enable-lora" in args
        assert int(_flag(args, "--max-loras")) == gp.max_loras
        assert int(_flag(args, "--max-cpu-loras")) == gp.max_cpu_loras
        assert int(_flag(args, "--max-lora-rank")) == gp.max_lora_rank
        assert int(_flag(args, "--max-num-seqs")) == wl.server.max_num_seqs
        assert int(_flag(args, "--max-num-batched-tokens")) == wl.server.max_num_batched_tokens
        assert float(_flag(args, "--gpu-memory-utilization")) == wl.server.gpu_memory_utilization
        assert _flag(args, "--port") == "8000"
        assert "--tensor-parallel-size" not in args
        assert _lora_modules(args) == {a.id: f"/adapters/{a.id}" for a in gp.adapters}


def test_compose_has_one_service_per_server_with_its_gpu(exported):
    _, result, manifest, out = exported
    compose = yaml.safe_load((out / "compose.yaml").read_text())
    assert list(compose["services"]) == [s.name for s in manifest.servers]
    for s in manifest.servers:
        svc = compose["services"][s.name]
        assert svc["image"] == "vllm/vllm-openai:latest"
        assert svc["entrypoint"] == ["vllm", "serve"]
        assert svc["command"] == _serve_args(out / "servers" / f"{s.name}.sh")
        assert all(isinstance(w, str) for w in svc["command"])
        assert svc["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "device_ids": [str(s.gpu)], "capabilities": ["gpu"]}]
        assert svc["ports"] == [f"{8000 + s.gpu}:8000"]


def test_kubernetes_objects_are_valid_and_ask_for_one_gpu(exported):
    _, result, manifest, out = exported
    try:
        import kubernetes_validate
    except ImportError:  # not installed: the fields that matter are checked below all the same
        kubernetes_validate = None
    for s in manifest.servers:
        docs = list(yaml.safe_load_all((out / "k8s" / f"{s.name}.yaml").read_text()))
        assert [d["kind"] for d in docs] == ["Deployment", "Service"]
        for d in docs:
            if kubernetes_validate is not None:
                try:
                    kubernetes_validate.validate(d, K8S_VERSION, strict=True)
                except kubernetes_validate.ValidationError as e:
                    pytest.fail(f"{s.name} {d['kind']}: {e.message}")
        dep, svc = docs
        assert dep["apiVersion"] == "apps/v1" and svc["apiVersion"] == "v1"
        assert dep["metadata"]["name"] == svc["metadata"]["name"] == s.name
        pod = dep["spec"]["template"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (c,) = pod["spec"]["containers"]
        assert c["resources"]["requests"]["nvidia.com/gpu"] == c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert c["command"] == ["vllm", "serve"] and c["args"] == _serve_args(out / "servers" / f"{s.name}.sh")
        assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
        assert svc["spec"]["ports"][0]["port"] == 8000 == c["ports"][0]["containerPort"]


def test_adapter_map_and_model_path(plan, tmp_path):
    wl, result = plan
    paths = {a.id: f"/mnt/lora dir/{a.id}" for a in wl.adapters}  # a space: quoted in the scripts
    m = export_plan(result, wl, tmp_path / "d", adapter_paths=paths, model_path="/models/llama 8b")
    assert not m.placeholders
    for g, gp in enumerate(result.gpus):
        args = _serve_args(tmp_path / "d" / "servers" / f"gpu-{g}.sh")
        assert args[0] == "/models/llama 8b"
        assert _lora_modules(args) == {a.id: paths[a.id] for a in gp.adapters}
    assert "/adapters/<id>" not in (tmp_path / "d" / "README.md").read_text()
    with pytest.raises(InputError, match=r"no path for 1 of the plan's 10 adapters: 'a3'"):
        export_plan(result, wl, tmp_path / "e", adapter_paths={k: v for k, v in paths.items() if k != "a3"})
    assert not (tmp_path / "e").exists()


def test_a_non_empty_directory_is_refused_and_a_previous_export_replaced(plan, tmp_path):
    wl, result = plan
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and not a previous packer export"):
        export_plan(result, wl, busy)
    assert [p.name for p in busy.iterdir()] == ["notes.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        export_plan(result, wl, tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    export_plan(result, wl, empty)
    assert (empty / MARKER).is_file()
    (empty / "servers" / "gpu-99.sh").write_text("stale")
    export_plan(result, wl, empty)  # a previous export: replaced as a whole
    assert not (empty / "servers" / "gpu-99.sh").exists() and (empty / "routing.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "empty", "file"]


def test_cli_export(cache_env, tmp_path):
    wl_path = tmp_path / "wl.json"
    wl_path.write_text(json.dumps(WORKLOAD))
    paths = {a["id"]: f"/lora/{a['id']}" for a in WORKLOAD["adapters"]}
    map_path = tmp_path / "map.json"
    map_path.write_text(json.dumps({k: v for k, v in paths.items() if k not in ("a2", "a7")}))
    out = cli(cache_env, "solve", str(wl_path), "--no-verify", "--export", str(tmp_path / "d"),
               "--adapter-paths", str(map_path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: --adapter-paths: ")
    assert "'a2', 'a7'" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists()

    map_path.write_text(json.dumps(paths))
    out = cli(cache_env, "solve", str(wl_path), "--no-verify", "--executor", "serial", "--json",
               "--export", str(tmp_path / "d"), "--adapter-paths", str(map_path), "--model-path", "/models/m")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)  # --json is one object, as without --export
    assert len(out.stdout.strip().splitlines()) == 1
    assert str(tmp_path / "d") in out.stderr
    routing = json.loads((tmp_path / "d" / "routing.json").read_text())
    assert set(routing["servers"]) == {f"gpu-{g}" for g in range(r["num_gpus"])}
    for entries in routing["adapters"].values():
        assert math.isclose(sum(e["weight"] for e in entries), 1.0, abs_tol=1e-12)
    assert _serve_args(tmp_path / "d" / "servers" / "gpu-0.sh")[0] == "/models/m"

    out = cli(cache_env, "solve", str(wl_path), "--export", str(tmp_path / "d2"), "--solver", "greedy",
               "--model-path", "x", "--adapter-paths", str(tmp_path / "nope.json"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nope.json" in out.stderr, out.stderr
    out = cli(cache_env, "solve", str(wl_path), "--model-path", "x")
    assert out.returncode == 2 and "go with --export" in out.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    out = cli(cache_env, "solve", str(wl_path), "--export", str(tmp_path / "busy"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--export:" in out.stderr, out.stderr


def test_the_plan_reads_back_from_the_export_and_from_solve_json(exported, tmp_path):
    wl, result, _, out = exported
    for source in (out, out / "plan.json"):
        loaded = read_plan(source)
        assert loaded.profile == result.profile == LLAMA
        assert loaded.placement() == result.placement()
        assert [(g.max_loras, g.max_cpu_loras, g.max_lora_rank) for g in loaded.gpus] == \
            [(g.max_loras, g.max_cpu_loras, g.max_lora_rank) for g in result.gpus]
        assert loaded.data["num_gpus"] == result.num_gpus
    printed = tmp_path / "solve.json"
    printed.write_text(json.dumps(result.to_dict()))
    assert read_plan(printed).gpus == read_plan(out).gpus


@pytest.mark.parametrize("text, where", [
    ("[1, 2]", "top level"),
    ('{"gpus": [{"adapters": [{"id": "a", "rank": 0}]}]}', "gpus[0].adapters[0].rank"),
    ('{"gpus": [{"adapters": [{"id": "a", "rank": 8, "share": 1.5}]}]}', "gpus[0].adapters[0].share"),
    ('{"gpus": [{"adapters": [{"id": "a", "rank": 8}, {"id": "a", "rank": 8}]}]}', "listed twice"),
    ('{"gpus": [{"adapters": []}], "profile": 3}', "profile"),
])
def test_a_bad_plan_is_one_clear_error(tmp_path, text, where):
    bad = tmp_path / "plan.json"
    bad.write_text(text)
    with pytest.raises(InputError) as e:
        read_plan(bad)
    assert e.value.field == "plan" and where in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(InputError, match="without plan.json"):
        read_plan(tmp_path / "..")
