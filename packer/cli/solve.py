"""`packer solve` and `packer demo`: place a workload's adapters on GPUs."""

from __future__ import annotations

from importlib import resources

import click

from .. import files
from ..defaults import GRACE_S
from ..errors import InputError
from .common import executor_options, fail, load_workload, solver_choice
from .render import echo_json, placement_table

__all__ = ["solve", "demo"]


@click.command()
@click.argument("workload", type=click.Path(dir_okay=False))
@click.option("--solver", default="greedy", show_default=True, help="greedy, ladder, cpsat or milp.")
@click.option("--predictor", default="twin", show_default=True, help="Predictor behind the capacity model.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help=f"Seconds for the solver phase, start-up and model building included: cpsat and milp "
              f"return within it + {GRACE_S:g} s (with greedy's placement if they find nothing better); ladder "
              "stops before a predictor call that would end past it.")
@click.option("--objective", type=click.Choice(["min_gpus", "min_latency"]), default=None,
              help="Overrides the workload's objective (default min_gpus).")
@click.option("--gpus", type=click.IntRange(min=1), default=None, help="GPU budget.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip the twin verification of every GPU.")
@executor_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def solve(workload: str, solver: str, predictor: str, time_limit: float, objective: str | None, gpus: int | None,
          seed: int, no_verify: bool, executor: str, ray_address: str | None, as_json: bool) -> None:
    """Place WORKLOAD.json's adapters on the fewest GPUs (or the lowest latency on --gpus GPUs)."""
    from ..planner import solve as run_solve

    wl = load_workload(workload)
    solver_choice(solver)
    progress = None if as_json else (lambda msg: click.echo(msg, err=True))
    try:
        result = run_solve(wl, solver=solver, predictor=predictor, objective=objective, gpus=gpus,
                           time_limit=time_limit, seed=seed, verify=not no_verify, progress=progress,
                           executor=executor, ray_address=ray_address)
    except InputError as e:
        fail(f"{workload}: {e}")
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(placement_table(workload, result))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="JSON output instead of a table.")
def demo(as_json: bool) -> None:
    """Solve the shipped example workload (120 adapters, Zipf rates, ranks 8-32, Llama-3.1-8B on H100)."""
    from ..planner import parse_workload
    from ..planner import solve as run_solve

    path = resources.files("packer") / "examples" / "workload.json"
    wl = parse_workload(files.read_json_text(path.read_text(encoding="utf-8"), "packer/examples/workload.json"))
    if not as_json:
        click.echo(f"Example workload: {len(wl.adapters)} adapters, {wl.total_rate:.1f} req/s in total, "
                   f"profile {wl.profile}; placing them with the greedy solver and verifying with the twin.")
    result = run_solve(wl, progress=None if as_json else (lambda m: click.echo(m, err=True)))
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(placement_table("example workload", result))
