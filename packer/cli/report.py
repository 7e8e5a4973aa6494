"""`packer report PLAN.json --out report.html`: a plan as one self-contained HTML page."""

from __future__ import annotations

import click

from ..errors import InputError
from .common import bare, fail

__all__ = ["report"]


@click.command()
@click.argument("plan", type=click.Path())
@click.option("--out", default="report.html", show_default=True, type=click.Path(dir_okay=False),
              metavar="FILE.html", help="Where to write the page (atomically).")
@click.option("--title", default=None, help="The page's title [the plan's GPU count and profile].")
def report(plan: str, out: str, title: str | None) -> None:
    """Write PLAN (what `packer solve --json` printed, or a `--export` directory) as an HTML report:
    utilisation, latency, adapters per GPU, the capacity curve, the bound and gap, flags and warnings."""
    from ..deploy.report import write_report
    from ..solvers.result import read_plan

    try:
        loaded = read_plan(plan)
    except InputError as e:
        fail(bare(e))
    try:
        path = write_report(loaded, out, title=title)
    except OSError as e:
        fail(f"--out: {out}: {e.strerror or e}")
    click.echo(f"wrote {path} ({len(loaded.gpus)} GPU{'' if len(loaded.gpus) == 1 else 's'})", err=True)
