"""`packer bench`: a scenario's workload against a vLLM-compatible server (given, or launched)."""

from __future__ import annotations

import sys

import click

from ..errors import PackerError
from .common import fail, load_scenario, read_json
from .render import echo_json, profile_info, simulation_table

__all__ = ["bench"]


@click.command()
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--url", default=None, help="A running server (http://host:port).")
@click.option("--launch", default=None, metavar="CMD",
              help="Start the server from this template: {port} {max_loras} {max_cpu_loras} {max_lora_rank} "
                   "{max_num_seqs} {max_num_batched_tokens} {gpu_memory_utilization} {lora_modules} {time_scale} {profile}.")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Simulated seconds per wall second; the server must run at the same scale (serve-twin).")
@click.option("--adapters", "adapters_map", default=None, type=click.Path(dir_okay=False),
              help="JSON map of adapter id -> adapter directory for {lora_modules} [dummy adapters].")
@click.option("--adapters-dir", default=None, type=click.Path(file_okay=False),
              help="Where to write the dummy adapters [a temporary directory].")
@click.option("--model-config", default=None, type=click.Path(dir_okay=False),
              help="The base model's config.json: dummy adapters get zero LoRA weights shaped from it (real vLLM).")
@click.option("--health-timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for /health.")
@click.option("--max-waiting", type=int, default=None, help="The client's waiting cap [the profile's].")
@click.option("--log", "log_path", default=None, type=click.Path(dir_okay=False), help="The launched server's log.")
@click.option("--requests-out", default=None, type=click.Path(dir_okay=False),
              help="Write every request's record and every token's arrival time here (NPZ).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the simulate keys, client, metrics_series.")
def bench(scenario, url, launch, time_scale, adapters_map, adapters_dir, model_config, health_timeout, max_waiting,
          log_path, requests_out, as_json) -> None:
    """Play SCENARIO.json's workload against a server and report what `packer simulate` reports."""
    from ..profile import load_profile

    if (url is None) == (launch is None):
        fail("give one of --url URL or --launch CMD")
    if not 0 < time_scale <= 1e4:
        fail(f"--time-scale: must be in (0, 10000], got {time_scale:g}")
    if max_waiting is not None and max_waiting < 1:
        fail(f"--max-waiting: must be at least 1, got {max_waiting}")
    sc = load_scenario(scenario)
    prof = load_profile(sc.profile)
    paths = read_json(adapters_map) if adapters_map else None
    if paths is not None and not (isinstance(paths, dict) and all(isinstance(v, str) for v in paths.values())):
        fail(f"--adapters: {adapters_map} must map adapter ids to directories (a JSON object of strings)")
    cfg = read_json(model_config) if model_config else None
    try:
        if launch is not None:
            from ..live.session import launch_and_bench

            res = launch_and_bench(sc, prof, launch, time_scale=time_scale, adapter_paths=paths,
                                   adapters_dir=adapters_dir, model_config=cfg, health_timeout_s=health_timeout,
                                   max_waiting=max_waiting, log_path=log_path, requests_out=requests_out,
                                   on_log=lambda tail: click.echo(f"the server did not start; its last lines:\n{tail}",
                                                                  err=True))
        else:
            from ..live.bench import bench as run

            res = run(sc, prof, url, time_scale=time_scale, max_waiting=max_waiting, requests_out=requests_out)
    except PackerError as e:
        fail(str(e))
    if as_json:
        echo_json({**res.to_dict(series=True), **profile_info(prof)})
    else:
        click.echo(simulation_table(scenario, res.result))
        c = res.client
        if "send_lag_p99_s" in c:
            click.echo(f"client: {c['sent']} sent, {c['not_sent_waiting_cap']} held at the waiting cap, "
                       f"{c['rejected_503']} refused (503), {c['errors']} errors; send delay p99 "
                       f"{c['send_lag_p99_s'] * 1e3:.1f} ms" + (" — BEHIND SCHEDULE" if c["behind_schedule"] else ""))
    if res.client.get("behind_schedule"):
        click.echo("warning: the client fell behind its schedule: its latencies include its own delay; lower "
                   "--time-scale or the load", err=True)
    if res.partial:
        click.echo(f"error: partial results: {res.error}", err=True)
        sys.exit(1)
