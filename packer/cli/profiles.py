"""`packer profiles`: list the shipped performance profiles (reads JSON files only: starts fast)."""

from __future__ import annotations

import click

__all__ = ["profiles"]


@click.command()
def profiles() -> None:
    """List the shipped performance profiles."""
    from ..profile import list_profiles, load_profile

    for name in list_profiles():
        p = load_profile(name)
        click.echo(f"{name}\t{p.description}")
