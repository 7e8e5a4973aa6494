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


class _OneLineErrors(click.Group):
    """Usage errors (bad flags, missing arguments) as one ``error:`` line and exit code 2."""

    def main(self, *args, **kwargs):
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            where = f"{e.ctx.command_path}: " if getattr(e, "ctx", None) is not None else ""
            click.echo(f"error: {where}{e.format_message()} (see --help)", err=True)
            sys.exit(EXIT_INPUT)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
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


def _load_workload(path: str):
    from .planner import parse_workload

    data = _read_json(path)
    try:
        return parse_workload(data)
    except InputError as e:
        _fail(f"{path}: {e}")


def _solver_choice(name: str) -> str:
    from .solvers import SOLVERS
    return name if name in SOLVERS.names() else _fail(
        f"--solver: unknown solver {name!r}; valid: {', '.join(SOLVERS.names())}")


@main.command()
@click.argument("workload", type=click.Path(dir_okay=False))
@click.option("--solver", default="greedy", show_default=True, help="greedy, ladder, cpsat or milp.")
@click.option("--predictor", default="twin", show_default=True, help="Predictor behind the capacity model.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds for the exact solvers' search.")
@click.option("--objective", type=click.Choice(["min_gpus", "min_latency"]), default=None,
              help="Overrides the workload's objective (default min_gpus).")
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPU budget.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the twin verification of every GPU.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def solve(workload: str, solver: str, predictor: str, time_limit: float, objective: str | None, gpus: int | None,
          seed: int, no_verify: bool, as_json: bool) -> None:
    """Place WORKLOAD.json's adapters on the fewest GPUs (or the lowest latency on --gpus GPUs)."""
    from .planner import solve as run_solve

    wl = _load_workload(workload)
    _solver_choice(solver)
    progress = None if as_json else (lambda msg: click.echo(msg, err=True))
    try:
        result = run_solve(wl, solver=solver, predictor=predictor, objective=objective, gpus=gpus,
                           time_limit=time_limit, seed=seed, verify=not no_verify, progress=progress)
    except InputError as e:
        _fail(f"{workload}: {e}")
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(_placement_table(workload, result))


def _placement_table(name: str, r) -> str:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120, record=True, file=io.StringIO())
    bound = "" if r.lower_bound is None else f", lower bound {r.lower_bound:g}"
    gap = "" if r.gap is None else f", gap {r.gap:.1%}"
    head = (f"{name}: {r.num_gpus} GPU{'s' if r.num_gpus != 1 else ''} ({r.status.value}{bound}{gap}); "
            f"solver {r.solver}, predictor {r.predictor}; "
            f"{'every GPU verified by the twin' if r.verified else 'NOT verified by the twin'}; "
            f"{r.wall_seconds:.1f} s")
    console.print(head)
    if r.message:
        console.print(r.message)
    t = Table(show_lines=False)
    for col, just in (("GPU", "right"), ("adapters", "right"), ("max-loras", "right"), ("max-cpu-loras", "right"),
                      ("max-lora-rank", "right"), ("load tok/s", "right"), ("util", "right"),
                      ("pred. tok/s", "right"), ("pred. ITL ms", "right"), ("twin", "left")):
        t.add_column(col, justify=just)
    for g, p in enumerate(r.gpus):
        replicated = sum(1 for a in p.adapters if a.share < 1.0)
        count = f"{len(p.adapters)}" + (f" ({replicated} split)" if replicated else "")
        thr = "-" if p.predicted_throughput_tps is None else f"{p.predicted_throughput_tps:,.0f}"
        itl = "-" if p.predicted_itl_ms is None else f"{p.predicted_itl_ms:.1f}"
        ok = {True: "ok", False: "FAILS", None: "-"}[p.verified]
        t.add_row(str(g), count, str(p.max_loras), str(p.max_cpu_loras), str(p.max_lora_rank),
                  f"{p.offered_tps:,.0f}", f"{p.utilisation:.0%}", thr, itl, ok)
    console.print(t)
    console.print("each GPU: vllm serve <model> --enable-lora --max-loras N --max-cpu-loras M --max-lora-rank R; "
                  "util = load / the capacity model's sustainable load")
    if r.repaired_items:
        console.print(f"{r.repaired_items} adapter placement(s) moved by verification and repair")
    console.print(f"time: capacity model {r.capacity_seconds:.1f} s, solver {r.solver_seconds:.1f} s, "
                  f"verification {r.verify_seconds:.1f} s")
    return console.export_text()


@main.command()
def profiles() -> None:
    """List the shipped performance profiles."""
    for name in list_profiles():
        p = load_profile(name)
        click.echo(f"{name}\t{p.description}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output instead of a table.")
def demo(as_json: bool) -> None:
    """Solve the shipped example workload (120 adapters, Zipf rates, ranks 8-32, Llama-3.1-8B on H100)."""
    from .planner import parse_workload
    from .planner import solve as run_solve

    path = resources.files("packer") / "examples" / "workload.json"
    wl = parse_workload(json.loads(path.read_text(encoding="utf-8")))
    if not as_json:
        click.echo(f"Example workload: {len(wl.adapters)} adapters, {wl.total_rate:.1f} req/s in total, "
                   f"profile {wl.profile}; placing them with the greedy solver and verifying with the twin.")
    result = run_solve(wl, progress=None if as_json else (lambda m: click.echo(m, err=True)))
    click.echo(json.dumps(result.to_dict()) if as_json else _placement_table("example workload", result))


if __name__ == "__main__":  # pragma: no cover
    main()
