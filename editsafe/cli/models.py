"""``editsafe models``: prepare and list the aliased models."""

from __future__ import annotations

import click

from editsafe.models.default import ALIASES, DEFAULT_ALIAS, alias_folder, is_prepared, prepare_alias
from editsafe.paths import editsafe_home


@click.group()
def models() -> None:
    """Prepare and list the models that editsafe knows by alias."""


@models.command("prepare")
@click.argument("alias", default=DEFAULT_ALIAS)
def prepare(alias: str) -> None:
    """Build the cached float32 copy of ALIAS (no-op when cached) and print its folder."""
    click.echo(str(prepare_alias(alias)))


@models.command("list")
def list_models() -> None:
    """List the aliases and whether each one is cached."""
    click.echo(f"cache folder: {editsafe_home()}")
    for alias, spec in sorted(ALIASES.items()):
        state = f"cached at {alias_folder(alias)}" if is_prepared(alias) else "not prepared (editsafe models prepare)"
        marker = " (default)" if alias == DEFAULT_ALIAS else ""
        click.echo(f"{alias}{marker}: {spec.description}; {state}")
