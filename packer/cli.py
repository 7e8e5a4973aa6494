"""The ``packer`` command line."""

from __future__ import annotations

import io
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click

from .errors import InputError, PackerError
from .model import Scenario, parse_scenario
from .profile import list_profiles, load_profile

__all__ = ["main"]

EXIT_INPUT = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def _read_json(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        _fail(f"{path}: cannot read file ({e.strerror}); check the path")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        _fail(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")


def _load_scenario(path: str) -> Scenario:
    data = _read_json(path)
    try:
        sc = parse_scenario(data)
        load_profile(sc.profile)  # an unknown profile is an input error too, before anything runs
        return sc
    except InputError as e:
        _fail(f"{path}: {e}")


def _summary(name: str, r) -> str:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{name} — {r.profile}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    if r.memory_error:
        t.add_row("memory error", r.memory_error)
    else:
        verdict = "STARVED" if r.starved else "keeps up"
        why = []
        if r.starved_by_throughput:
            why.append(f"throughput {r.throughput_ratio:.0%} of offered")
        if r.queue_diverging:
            why.append(f"queue grows {r.waiting_growth_rps:.2f} req/s")
        t.add_row("verdict", verdict + (f" ({'; '.join(why)})" if why else ""))
        t.add_row("throughput (tok/s)", f"{r.throughput_tps:,.0f} of {r.offered_tps:,.0f} offered")
        t.add_row("  input / output", f"{r.input_tps:,.0f} / {r.output_tps:,.0f}")
        t.add_row("requests", f"{r.finished:,} finished / {r.arrived:,} arrived"
                  + (f" ({r.not_sent:,} not sent: queue full)" if r.not_sent else ""))
        t.add_row("TTFT mean / p50 / p99 (ms)", f"{r.mean_ttft_ms:,.0f} / {r.p50_ttft_ms:,.0f} / {r.p99_ttft_ms:,.0f}")
        t.add_row("ITL mean (ms); TPOT p99", f"{r.mean_itl_ms:.1f}; {r.p99_tpot_ms:.1f}")
        t.add_row("worst adapter p99 TTFT (ms)", f"{r.worst_adapter_p99_ttft_ms:,.0f}")
        t.add_row("batch mean / max", f"{r.mean_running:.1f} / {r.max_running}")
        t.add_row("waiting mean / max / end", f"{r.mean_waiting:,.0f} / {r.max_waiting:,} / {r.end_waiting:,}")
        t.add_row("distinct adapters per step", f"{r.mean_distinct_adapters:.1f}")
        t.add_row("KV capacity (tokens); usage mean / max",
                  f"{r.kv_capacity_tokens:,}; {r.mean_kv_usage:.0%} / {r.max_kv_usage:.0%}")
        t.add_row("preemptions; adapter loads GPU / disk",
                  f"{r.preemptions:,}; {r.gpu_adapter_loads:,} / {r.disk_adapter_loads:,}")
    t.add_row("simulated / wall", f"{r.sim_seconds:,.0f} s / {r.wall_seconds:.2f} s ({r.speedup:,.0f}x real time)")
    console = Console(width=100, record=True, file=io.StringIO())
    console.print(t)
    return console.export_text()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="packer")
def main() -> None:
    """packer: plan GPUs, adapter placement and vLLM settings for multi-LoRA serving."""


@main.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per scenario, one per line.")
@click.option("--per-adapter", is_flag=True, help="Include per-adapter rows in the JSON output.")
def simulate(scenarios: tuple[str, ...], as_json: bool, per_adapter: bool) -> None:
    """Simulate each SCENARIO.json with the Digital Twin."""
    from .twin import Twin

    parsed = [_load_scenario(p) for p in scenarios]  # validate every file before running any
    for path, sc in zip(scenarios, parsed):
        try:
            r = Twin.from_scenario(sc).run()
        except PackerError as e:
            _fail(f"{path}: {e}")
        if as_json:
            click.echo(json.dumps(r.to_dict(per_adapter=per_adapter)))
        else:
            click.echo(_summary(path, r))


@main.command()
def profiles() -> None:
    """List the shipped performance profiles."""
    for name in list_profiles():
        p = load_profile(name)
        click.echo(f"{name}\t{p.description}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output instead of a summary.")
def demo(as_json: bool) -> None:
    """Simulate the shipped example scenario (96 adapters, Zipf rates, Llama-3.1-8B on H100)."""
    from .twin import Twin

    path = resources.files("packer") / "examples" / "scenario.json"
    sc = parse_scenario(json.loads(path.read_text(encoding="utf-8")))
    r = Twin.from_scenario(sc).run()
    if as_json:
        click.echo(json.dumps(r.to_dict()))
    else:
        click.echo(f"Example: {len(sc.workload.adapters)} adapters, {sc.workload.total_rate:.1f} req/s, "
                   f"max_loras={sc.server.max_loras}, max_lora_rank={sc.server.max_lora_rank}")
        click.echo(_summary("example scenario", r))


if __name__ == "__main__":  # pragma: no cover
    main()
