"""`packer calibrate`: fit a performance profile from live measurements of a vLLM-compatible server."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import InputError, PackerError
from .common import bare, fail, read_json

__all__ = ["calibrate"]


@click.command("calibrate")
@click.option("--launch", required=True, metavar="CMD",
              help="Launch template (placeholders {port} {max_loras} {max_lora_rank} {lora_modules} ...).")
@click.option("--model-name", required=True, help="The model's profile name (catalog name, e.g. llama-3.1-8b-instruct).")
@click.option("--gpu-name", required=True, help="The GPU's profile name (catalog name or spec.json, e.g. h100-64gb).")
@click.option("--model-config", default=None, type=click.Path(dir_okay=False),
              help="The model's Hugging Face config.json [the catalog entry of --model-name].")
@click.option("--adapters", "adapters_map", default=None, type=click.Path(dir_okay=False),
              help="JSON {name: adapter dir} to serve [dummy adapters cal-r<rank>-<i> of ranks 8/16/32].")
@click.option("--time-scale", type=float, default=1.0, show_default=True,
              help="Simulated seconds per wall second of the server (a twin's --time-scale; 1 for vLLM).")
@click.option("--budget-minutes", type=float, default=5.0, show_default=True,
              help="The measurement plan's size: below 1 the short plan (24 points), 1-10 the standard one (35), "
                   "10 and more the big one (44).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--health-timeout", type=float, default=600.0, show_default=True, help="Seconds to wait for /health.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The profile JSON to write.")
def calibrate(launch, model_name, gpu_name, model_config, adapters_map, time_scale, budget_minutes, seed,
              health_timeout, out) -> None:
    """Measure a server through its launch template and fit a profile (provenance: measured).

    The measurements are appended to OUT.state.jsonl as they finish; a rerun skips those done."""
    from ..derive import load_architecture, load_gpu
    from ..files import write_json_atomic
    from ..profile import Profile

    if not 0 < time_scale <= 1e4:
        fail(f"--time-scale: must be in (0, 10000], got {time_scale:g}")
    if not budget_minutes > 0:
        fail(f"--budget-minutes: must be > 0, got {budget_minutes:g}")
    if not Path(out).name.endswith(".json"):
        fail(f"--out: {out} must name a .json file")
    try:
        arch = load_architecture(model_config or model_name)
        gpu = load_gpu(gpu_name)
    except InputError as e:
        fail(str(e))
    cfg = read_json(model_config) if model_config else None
    paths = read_json(adapters_map) if adapters_map else None
    if paths is not None and not (isinstance(paths, dict) and paths and all(isinstance(v, str) for v in paths.values())):
        fail(f"--adapters: {adapters_map} must map adapter names to directories (a JSON object of strings)")

    from ..calibration.live_plan import fit_live_profile, plan_points, run_plan

    state = Path(out).with_suffix(".state.jsonl")
    try:
        from ..live.launch import PLACEHOLDERS, fill_template

        fill_template(launch, {k: 1 for k in PLACEHOLDERS if k != "lora_modules"} | {"lora_modules": {}})
        points = plan_points(budget_minutes, time_scale, seed)
        records = run_plan(points, launch, model_name=model_name, state_path=state, time_scale=time_scale,
                           adapter_paths=paths, model_config=cfg, health_timeout_s=health_timeout,
                           progress=lambda s: click.echo(s, err=True))
        kv_bytes = 2 * arch.num_hidden_layers * arch.num_key_value_heads * arch.head_dim * 2
        profile = fit_live_profile(records, model_name=model_name, gpu_name=Path(gpu_name).stem,
                                   gpu_memory_gib=float(gpu.memory_gib), kv_bytes_per_token=kv_bytes,
                                   max_model_len=int(arch.max_position_embeddings), time_scale=time_scale)
        Profile.from_dict(profile)
    except InputError as e:
        fail(bare(e) if e.field == "lora_modules" else str(e))
    except PackerError as e:
        fail(str(e))
    write_json_atomic(out, profile, indent=2)
    rep = profile["fit_report"]
    click.echo(f"wrote {out} (provenance: measured; {len(records)} measurements)")
    click.echo(f"  memory: non_kv_gib {profile['memory']['non_kv_gib']}, slot MiB {profile['memory']['slot_mib_base']}"
               f" + {profile['memory']['slot_mib_per_rank']}/rank; KV MAPE {rep['memory']['kv_tokens'].get('mape_pct')}")
    click.echo(f"  decode_ms {profile['step']['decode_ms']} at {profile['step']['decode_batch']}; prefill "
               f"{profile['step']['prefill_ms_per_token']} ms/token; lora {profile['step']['lora_ms_per_adapter']} "
               f"ms/adapter")
