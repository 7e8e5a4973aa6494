"""The ``packer`` command line: the click group ``main`` (the console script) and its commands.

One module per command family; a new command is its module plus one ``main.add_command`` line here.
The command modules import only click and light packer modules at module level (each command
imports what it needs when it runs), so `packer --help` and `packer profiles` start fast."""

from __future__ import annotations

import click

from . import bench, calibrate, predict, profiles, report, serve_twin, simulate, solve, train, workload
from .common import OneLineErrors

__all__ = ["main"]


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="packer")
def main() -> None:
    """packer: plan GPUs, adapter placement and vLLM settings for multi-LoRA serving."""


main.add_command(simulate.simulate)
main.add_command(solve.solve)
main.add_command(solve.demo)
main.add_command(predict.predict)
main.add_command(train.train)
main.add_command(profiles.profiles)
main.add_command(profiles.profile)
main.add_command(serve_twin.serve_twin)
main.add_command(bench.bench)
main.add_command(calibrate.calibrate)
main.add_command(workload.workload)
main.add_command(report.report)
