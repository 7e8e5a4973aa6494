"""`packer simulate`: run scenario files through the Digital Twin."""

from __future__ import annotations

import click

from ..errors import PackerError
from .common import fail, load_scenario
from .render import echo_json, profile_info, simulation_table

__all__ = ["simulate"]


@click.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per scenario, one per line.")
@click.option("--per-adapter", is_flag=True, help="Include per-adapter rows in the JSON output.")
def simulate(scenarios: tuple[str, ...], as_json: bool, per_adapter: bool) -> None:
    """Simulate each SCENARIO.json with the Digital Twin."""
    from ..twin import Twin

    parsed = [load_scenario(p) for p in scenarios]  # validate every file before running any
    for path, sc in zip(scenarios, parsed):
        try:
            r = Twin.from_scenario(sc).run()
        except PackerError as e:
            fail(f"{path}: {e}")
        info = profile_info(sc.profile)
        if as_json:
            echo_json({**r.to_dict(per_adapter=per_adapter), **info})
        else:
            click.echo(simulation_table(path, r, info))
