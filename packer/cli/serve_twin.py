"""`packer serve-twin`: the Digital Twin behind vLLM's OpenAI-compatible HTTP API."""

from __future__ import annotations

import sys

import click

from ..errors import InputError
from .common import bare, fail, load_scenario

__all__ = ["serve_twin"]

_UNUSED = "__packer_no_adapter__"  # the engine needs one adapter row; a server started without any gets this one


@click.command("serve-twin", context_settings={"allow_interspersed_args": True})
@click.argument("args", nargs=-1, metavar="[SCENARIO.json]")
@click.option("--profile", default=None, help="The profile to serve (the vllm-serve form).")
@click.option("--max-loras", type=int, default=None, help="vLLM's --max-loras [1].")
@click.option("--max-cpu-loras", type=int, default=None, help="vLLM's --max-cpu-loras [max-loras].")
@click.option("--max-lora-rank", type=int, default=None, help="vLLM's --max-lora-rank [16].")
@click.option("--max-num-seqs", type=int, default=None, help="vLLM's --max-num-seqs [256].")
@click.option("--max-num-batched-tokens", type=int, default=None, help="vLLM's --max-num-batched-tokens [2048].")
@click.option("--gpu-memory-utilization", type=float, default=None, help="vLLM's --gpu-memory-utilization [0.9].")
@click.option("--lora-modules", multiple=True, metavar="NAME=PATH",
              help="Adapters as vLLM takes them: --lora-modules a=/p/a b=/p/b (each rank from PATH/adapter_config.json).")
@click.option("--enable-lora/--no-enable-lora", default=True, show_default=True, help="vLLM's --enable-lora.")
@click.option("--served-model-name", default=None, help="The base model's name in the API [the profile's model].")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Simulated seconds per wall second (10: a 600 s run takes 60 s).")
def serve_twin(args, profile, max_loras, max_cpu_loras, max_lora_rank, max_num_seqs, max_num_batched_tokens,
               gpu_memory_utilization, lora_modules, enable_lora, served_model_name, host, port, time_scale) -> None:
    """Serve the twin of one vLLM server over HTTP, as `vllm serve` would.

    Either SCENARIO.json (its profile, server flags and adapters; rates and duration are ignored), or
    the vllm-serve form: --profile P and vLLM's flags, so that one launch template drives real vLLM or
    the twin. Refuses to start (exit 1, the reason on stderr) where the twin reports a memory error.
    Stops cleanly on SIGTERM / SIGINT.
    """
    from ..live.adapters import adapter_rank, parse_lora_modules
    from ..model import parse_scenario
    from ..profile import load_profile

    scenario_files = [a for a in args if "=" not in a]
    modules = list(lora_modules) + [a for a in args if "=" in a]  # `--lora-modules a=p b=q`, as vLLM parses it
    if not time_scale > 0 or time_scale > 1e4:
        fail(f"--time-scale: must be in (0, 10000], got {time_scale:g}")
    if len(scenario_files) > 1:
        fail(f"give one SCENARIO.json, not {len(scenario_files)} ({', '.join(scenario_files)})")
    flags = {"max_loras": max_loras, "max_cpu_loras": max_cpu_loras, "max_lora_rank": max_lora_rank,
             "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
             "gpu_memory_utilization": gpu_memory_utilization}
    try:
        if scenario_files:
            given = [f"--{k.replace('_', '-')}" for k, v in flags.items() if v is not None] + \
                    (["--profile"] if profile else []) + (["--lora-modules"] if modules else [])
            if given:
                fail(f"with SCENARIO.json the server comes from the file; drop {', '.join(given)}")
            sc = load_scenario(scenario_files[0])
            paths = {a.id: a.id for a in sc.workload.adapters}
        else:
            if not profile:
                fail("give SCENARIO.json, or --profile and vLLM's flags (see --help)")
            paths = parse_lora_modules(modules)
            loras = flags["max_loras"] or 1
            server = {"max_loras": loras, "max_cpu_loras": flags["max_cpu_loras"] or loras,
                      "max_lora_rank": flags["max_lora_rank"] or 16, "max_num_seqs": flags["max_num_seqs"] or 256,
                      "max_num_batched_tokens": flags["max_num_batched_tokens"] or 2048,
                      "gpu_memory_utilization": flags["gpu_memory_utilization"] or 0.9, "enable_lora": enable_lora}
            adapters = [{"id": n, "rank": adapter_rank(p), "rate": 0.0} for n, p in paths.items()]
            sc = parse_scenario({"profile": profile, "server": server,
                                 "adapters": adapters or [{"id": _UNUSED, "rank": 1, "rate": 0.0}], "duration_s": 1})
        prof = load_profile(sc.profile)
    except InputError as e:
        fail(bare(e) if e.field in ("lora_modules",) else str(e))

    from ..twin import Twin

    err = Twin(sc, prof).memory_error()
    if err is not None:  # vLLM exits before serving; so does its twin
        click.echo(f"error: the server does not start: {err}", err=True)
        sys.exit(1)

    from ..live.server import TwinServer, serve

    srv = TwinServer(sc, prof, model_name=served_model_name or prof.model, time_scale=time_scale,
                     adapter_paths=paths)
    srv.adapters.pop(_UNUSED, None)
    serve(srv, host=host, port=port, print_fn=lambda s: click.echo(s, err=True))
