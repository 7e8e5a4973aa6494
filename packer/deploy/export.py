"""Write a plan as something to deploy: per GPU server a ``vllm serve`` script, ``compose.yaml``,
Kubernetes manifests (a Deployment and a Service per server), ``routing.json`` and a README.

Everything is built in a temporary directory next to the target and renamed into place, so a reader
never sees half an export. A non-empty target is refused unless it is a previous export (it holds the
marker file ``.packer-export``), which is replaced.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .. import files
from ..errors import InputError

if TYPE_CHECKING:
    from ..model import PlacementWorkload
    from ..solvers.result import SolveResult

__all__ = ["ServerSpec", "ExportManifest", "MARKER", "IMAGE", "CONTAINER_PORT", "server_specs", "routing",
           "load_adapter_paths", "check_adapter_paths", "check_export_dir", "export_plan"]

MARKER = ".packer-export"
IMAGE = "vllm/vllm-openai:latest"
CONTAINER_PORT = 8000              # the port every server listens on inside its container / pod
PLACEHOLDER_ROOT = "/adapters"     # without a map, adapter ``a`` is looked for at /adapters/a
WEIGHT_DIGITS = 9


@dataclass(frozen=True)
class ServerSpec:
    """One GPU server of the plan: its name, GPU index, adapters and the ``vllm serve`` arguments
    (after ``vllm serve``: the model path first, then the flags)."""

    name: str
    gpu: int
    adapters: tuple[str, ...]
    args: tuple[str, ...]

    def command(self) -> str:
        """The shell command line, every word quoted."""
        return " ".join(shlex.quote(w) for w in ("vllm", "serve", *self.args))


@dataclass(frozen=True)
class ExportManifest:
    """What ``export_plan`` wrote: the directory, its files (relative paths, sorted) and the servers."""

    out_dir: Path
    files: tuple[str, ...]
    servers: tuple[ServerSpec, ...]
    placeholders: bool              # adapter paths are /adapters/<id> placeholders (no map given)


def server_name(gpu: int) -> str:
    return f"gpu-{gpu}"


def load_adapter_paths(path: str | os.PathLike) -> dict[str, str]:
    """MAP.json: a JSON object, adapter id -> the adapter's directory on the server."""
    data = files.read_json(path, field="adapter_paths")
    if not isinstance(data, dict):
        raise InputError("adapter_paths", f"{path}: expected a JSON object of adapter id -> path, got "
                         f"{type(data).__name__}")
    bad = [k for k, v in data.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise InputError("adapter_paths", f"{path}: the path of {_names(bad)} is not a non-empty string")
    return dict(data)


def _names(ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def check_adapter_paths(adapter_ids: list[str] | tuple[str, ...], adapter_paths: Mapping[str, str] | None) -> None:
    """Every adapter needs a path when a map is given; the missing ones are named in one line."""
    if adapter_paths is None:
        return
    missing = [a for a in adapter_ids if a not in adapter_paths]
    if missing:
        raise InputError("adapter_paths", f"no path for {len(missing)} of the plan's {len(adapter_ids)} adapters: "
                         f"{_names(missing)}; add them to the map")


def check_export_dir(out_dir: str | os.PathLike) -> Path:
    """``out_dir`` as a Path, refused (InputError) if it exists and is not an empty directory or a
    previous packer export."""
    p = Path(out_dir)
    if p.exists() or p.is_symlink():
        if not p.is_dir():
            raise InputError("export", f"{p} exists and is not a directory")
        if any(p.iterdir()) and not (p / MARKER).is_file():
            raise InputError("export", f"{p} is not empty and not a previous packer export (no {MARKER}); "
                             "choose a new or empty directory")
    return p


def routing(result: SolveResult) -> dict[str, Any]:
    """routing.json: adapter -> [{server, weight}] (the weights of a split adapter sum to 1), and
    server -> {url, adapters}."""
    adapters: dict[str, list[dict[str, Any]]] = {}
    for aid, where in result.placement().items():
        total = sum(s for _, s in where)
        if len(where) == 1 or not total > 0:
            ws = [1.0 / len(where)] * len(where) if len(where) > 1 else [1.0]
        else:
            ws = [round(s / total, WEIGHT_DIGITS) for _, s in where]
        ws[-1] = round(1.0 - sum(ws[:-1]), WEIGHT_DIGITS)  # the normalised weights sum to 1
        adapters[aid] = [{"server": server_name(g), "weight": w} for (g, _), w in zip(where, ws)]
    servers = {server_name(g): {"url": f"http://{server_name(g)}:{CONTAINER_PORT}",
                                "adapters": [a.id for a in plan.adapters]}
               for g, plan in enumerate(result.gpus)}
    return {"adapters": adapters, "servers": servers}


def server_specs(result: SolveResult, workload: PlacementWorkload, *, model_path: str,
                 adapter_paths: Mapping[str, str] | None = None, port: int = CONTAINER_PORT,
                 tensor_parallel_size: int = 1) -> tuple[ServerSpec, ...]:
    """The ``vllm serve`` arguments of each GPU of the plan."""
    srv = workload.server
    out = []
    for g, plan in enumerate(result.gpus):
        ids = tuple(dict.fromkeys(a.id for a in plan.adapters))
        args = [model_path, "--enable-lora", "--max-loras", str(plan.max_loras),
                "--max-cpu-loras", str(plan.max_cpu_loras), "--max-lora-rank", str(plan.max_lora_rank),
                "--max-num-seqs", str(srv.max_num_seqs), "--max-num-batched-tokens", str(srv.max_num_batched_tokens),
                "--gpu-memory-utilization", f"{srv.gpu_memory_utilization:g}"]
        if tensor_parallel_size > 1:
            args += ["--tensor-parallel-size", str(tensor_parallel_size)]
        args += ["--port", str(port)]
        if ids:
            paths = adapter_paths if adapter_paths is not None else {}
            args += ["--lora-modules", *(f"{a}={paths.get(a, f'{PLACEHOLDER_ROOT}/{a}')}" for a in ids)]
        out.append(ServerSpec(server_name(g), g, ids, tuple(args)))
    return tuple(out)


def _script(s: ServerSpec) -> str:
    return (f"#!/bin/sh\n# {s.name}: GPU {s.gpu} of the plan, {len(s.adapters)} adapters (written by packer)\n"
            f"exec {s.command()}\n")


def _compose(specs: tuple[ServerSpec, ...], port: int) -> dict[str, Any]:
    services = {}
    for s in specs:
        args = list(s.args)
        i = args.index("--port")
        args[i + 1] = str(CONTAINER_PORT)
        services[s.name] = {
            "image": IMAGE,
            "entrypoint": ["vllm", "serve"],
            "command": args,
            "ipc": "host",
            "ports": [f"{port + s.gpu}:{CONTAINER_PORT}"],
            "deploy": {"resources": {"reservations": {"devices": [
                {"driver": "nvidia", "device_ids": [str(s.gpu)], "capabilities": ["gpu"]}]}}},
        }
    return {"services": services}


def _k8s(s: ServerSpec) -> list[dict[str, Any]]:
    args = list(s.args)
    i = args.index("--port")
    args[i + 1] = str(CONTAINER_PORT)
    labels = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": s.name,
              "app.kubernetes.io/managed-by": "packer"}
    selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": s.name}
    container = {
        "name": "vllm",
        "image": IMAGE,
        "command": ["vllm", "serve"],
        "args": args,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": CONTAINER_PORT},
                           "initialDelaySeconds": 30, "periodSeconds": 10, "failureThreshold": 3},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": s.name, "labels": dict(labels)},
        "spec": {"replicas": 1, "selector": {"matchLabels": dict(selector)},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}}},
    }
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": s.name, "labels": dict(labels)},
        "spec": {"selector": dict(selector),
                 "ports": [{"name": "http", "port": CONTAINER_PORT, "targetPort": CONTAINER_PORT, "protocol": "TCP"}]},
    }
    return [deployment, service]


def _readme(specs: tuple[ServerSpec, ...], model_path: str, placeholders: bool, port: int) -> str:
    lines = [
        "# Deployment written by `packer solve --export`",
        "",
        f"{len(specs)} vLLM servers (one GPU each) serving `{model_path}` with LoRA adapters.",
        "",
        "- `servers/<name>.sh`: the `vllm serve` command of each server (`gpu-0`, `gpu-1`, ...), with the",
        f"  plan's LoRA flags and its adapters in `--lora-modules`; it listens on port {port}.",
        "- `compose.yaml`: one Docker Compose service per server, each reserving its own GPU (`device_ids`);",
        f"  server `gpu-i` is published on host port {port} + i.",
        "- `k8s/<name>.yaml`: a Deployment (one pod, `nvidia.com/gpu: 1`, readiness probe on `/health`)",
        f"  and a Service named after the server, port {CONTAINER_PORT}.",
        "- `routing.json`: where each adapter lives, for a router.",
        "- `plan.json`: the plan itself (`packer solve --json`), for `packer solve NEW.json --current DIR`",
        "  and `packer report DIR`.",
        "",
        "## Routing",
        "",
        "`routing.json` is `{\"adapters\": {ID: [{\"server\": NAME, \"weight\": W}, ...]}, \"servers\": {NAME:",
        "{\"url\": URL, \"adapters\": [ID, ...]}}}`. For a request to adapter ID, pick one of its servers",
        "with probability equal to its weight, among the servers that are healthy (`GET /health` answers",
        "200; renormalise the weights of the healthy ones), and send the OpenAI-style request to that",
        "server's URL with `model` set to the adapter id. An adapter that is split across servers (a hot",
        "one) has several entries; its weights sum to 1. The URLs are the in-cluster names",
        f"(`http://<name>:{CONTAINER_PORT}`, as in Compose and Kubernetes); change them for other networks.",
        "",
    ]
    if placeholders:
        lines += ["## Adapter paths", "",
                  f"No adapter map was given: every adapter's path is the placeholder `{PLACEHOLDER_ROOT}/<id>`.",
                  "Replace them with the real paths (or re-export with `--adapter-paths MAP.json`), or mount",
                  f"the adapters at `{PLACEHOLDER_ROOT}/<id>` in every server.", ""]
    lines += ["The adapter paths are read inside each container or pod: mount the adapters' storage there.", ""]
    return "\n".join(lines)


def export_plan(result: SolveResult, workload: PlacementWorkload, out_dir: str | os.PathLike, *,
                adapter_paths: Mapping[str, str] | None = None, model_path: str | None = None,
                port: int = CONTAINER_PORT, tensor_parallel_size: int = 1) -> ExportManifest:
    """Write ``result`` (solved from ``workload``) as deployable files under ``out_dir``; see the module.

    ``model_path`` defaults to the profile's model name; without ``adapter_paths`` (adapter id ->
    path) every adapter gets the placeholder ``/adapters/<id>``. Raises InputError for a refused
    directory, an adapter without a path, or a plan that does not place every adapter."""
    import yaml

    out = check_export_dir(out_dir)
    if not result.gpus:
        raise InputError("export", f"the plan has no GPUs ({result.status.value}): nothing to export")
    placed = result.placement()
    unplaced = [a.id for a in workload.adapters if a.id not in placed]
    if unplaced:
        raise InputError("export", f"the plan does not place {_names(unplaced)}: nothing exported")
    check_adapter_paths(list(placed), adapter_paths)
    if not isinstance(tensor_parallel_size, int) or tensor_parallel_size < 1:
        raise InputError("tensor_parallel_size", f"expected a positive integer, got {tensor_parallel_size!r}")
    if model_path is None:
        from ..profile import load_profile

        model_path = load_profile(workload.profile).model
    specs = server_specs(result, workload, model_path=model_path, adapter_paths=adapter_paths, port=port,
                         tensor_parallel_size=tensor_parallel_size)

    contents: dict[str, str] = {}
    for s in specs:
        contents[f"servers/{s.name}.sh"] = _script(s)
        contents[f"k8s/{s.name}.yaml"] = yaml.safe_dump_all(_k8s(s), sort_keys=False)
    contents["compose.yaml"] = yaml.safe_dump(_compose(specs, port), sort_keys=False)
    contents["routing.json"] = json.dumps(routing(result), indent=2) + "\n"
    from ..solvers.result import PLAN_FILE

    contents[PLAN_FILE] = files.dumps(result.to_dict(), indent=2) + "\n"  # read back by --current, report
    contents["README.md"] = _readme(specs, model_path, adapter_paths is None, port)
    contents[MARKER] = json.dumps({"written_by": "packer solve --export", "servers": len(specs)}) + "\n"

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        for rel, text in contents.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
            if rel.endswith(".sh"):
                p.chmod(0o755)
        tmp.chmod(0o755)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportManifest(out, tuple(sorted(contents)), specs, adapter_paths is None)


def _swap_in(new: Path, out: Path) -> None:
    """Rename ``new`` to ``out``; an existing ``out`` (empty, or a previous export) is moved aside
    first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        old.rmdir()
        os.rename(out, old)
    try:
        os.rename(new, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
