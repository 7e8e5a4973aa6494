"""What the commands share: bad input as one ``error:`` line and exit code 2 (usage errors included),
warnings as one ``warning:`` line, the input files' loaders and the shared options."""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator

import click

# Only click and light packer modules here (no numpy, numba, pydantic, rich or solvers): each
# command imports what it needs, so `packer --help` and `packer profiles` start fast.
from .. import files
from ..errors import InputError

if TYPE_CHECKING:
    from ..model import PlacementWorkload, Scenario

__all__ = ["EXIT_INPUT", "OneLineErrors", "fail", "bare", "read_json", "load_scenario", "load_workload",
           "solver_choice", "executor_options", "progress_display"]

EXIT_INPUT = 2


def fail(message: str) -> None:
    """Print ``error: MESSAGE`` on stderr and exit with the input-error code (2)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def bare(e: InputError) -> str:
    """An InputError's message without its ``field: `` prefix (to name the CLI flag instead)."""
    s, head = str(e), f"{e.field}: "
    return s[len(head):] if e.field and s.startswith(head) else s


class OneLineErrors(click.Group):
    """Usage errors (bad flags, missing arguments) as one ``error:`` line and exit code 2."""

    def main(self, *args, **kwargs):
        warnings.showwarning = _one_line_warning
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


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"warning: {message}", err=True)


def read_json(path: str) -> Any:
    """The JSON document at ``path``; a missing or malformed file fails as one line."""
    try:
        return files.read_json(path)
    except InputError as e:
        fail(bare(e))


def load_scenario(path: str) -> Scenario:
    """The scenario file at ``path``, validated (its profile too) before anything runs."""
    from ..model import parse_scenario
    from ..profile import load_profile

    data = read_json(path)
    try:
        sc = parse_scenario(data)
        load_profile(sc.profile)  # an unknown profile is an input error too, before anything runs
        return sc
    except InputError as e:
        fail(f"{path}: {e}")


def load_workload(path: str) -> PlacementWorkload:
    """The placement workload file at ``path``, validated."""
    from ..planner import parse_workload

    data = read_json(path)
    try:
        return parse_workload(data)
    except InputError as e:
        fail(f"{path}: {e}")


def solver_choice(name: str) -> str:
    """``--solver``: a registered solver's name, else an input error listing the valid ones."""
    from ..solvers import SOLVERS
    return name if name in SOLVERS.names() else fail(
        f"--solver: unknown solver {name!r}; valid: {', '.join(SOLVERS.names())}")


_EXECUTOR_HELP = ("Where parallel twin runs go: a local process pool, this process, or Ray (needs the packer[ray] "
                  "extra). Every executor gives the same answer.")


def executor_options(f):
    """--executor and --ray-address, shared by the commands that run many twin simulations."""
    f = click.option("--ray-address", default=None, metavar="ADDRESS",
                     help="Ray cluster to use with --executor ray [default: start a local Ray].")(f)
    return click.option("--executor", type=click.Choice(["process", "serial", "ray"]), default="process",
                        show_default=True, help=_EXECUTOR_HELP)(f)


@contextlib.contextmanager
def progress_display(quiet: bool = False) -> Iterator[Callable[[str], None] | None]:
    """The ``progress`` callback for a long job (capacity measurement, verification): a rich display on
    stderr, one line per step with a spinner and its elapsed time, the previous step ticked off as the next
    begins. None (silent) with ``quiet`` (``--json``) or when stderr is not a terminal: a display redrawn
    into a log file or a pipe is noise."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=Console(file=sys.stderr), transient=False) as bar:
        current: list[Any] = []

        def step(message: str) -> None:
            if current:
                bar.update(current[-1], total=1, completed=1)
            current.append(bar.add_task(message, total=None))

        try:
            yield step
        finally:
            if current:
                bar.update(current[-1], total=1, completed=1)
