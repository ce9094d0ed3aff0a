"""The ``editsafe`` command line: a thin shell over the library.

Each subcommand lives in its own module and is imported only when it runs,
so ``editsafe --help`` stays fast. A library error becomes a one-line message
and exit status 1; ``-v`` also prints the traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from editsafe.errors import EditsafeError

logger = logging.getLogger("editsafe")

# Subcommand name -> "module:attribute" of its click command.
COMMANDS: dict[str, str] = {
    "models": "editsafe.cli.models:models",
    "edit": "editsafe.cli.edit:edit",
    "locate": "editsafe.cli.locate:locate",
    "harm": "editsafe.cli.harm:harm",
    "repair": "editsafe.cli.repair:repair",
    "generate": "editsafe.cli.generate:generate",
    "evaluate": "editsafe.cli.evaluate:evaluate",
    "compare": "editsafe.cli.compare:compare",
    "report": "editsafe.cli.report:report",
}


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute = COMMANDS[cmd_name].split(":")
        return getattr(importlib.import_module(module_name), attribute)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EditsafeError as error:
            if ctx.obj and ctx.obj.get("verbosity", 0) > 0:
                logger.exception("editsafe failed")
            click.echo(f"error: {error}", err=True)
            ctx.exit(1)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v: info and tracebacks, -vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.version_option(package_name="editsafe")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Audit and repair the safety damage done by knowledge editing."""
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = -1 if quiet else verbose
    configure_logging(-1 if quiet else verbose)


def configure_logging(verbosity: int) -> None:
    """Map -q / (none) / -v / -vv to the editsafe loggers' level; only the CLI calls this."""
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("editsafe").setLevel(level)
    if verbosity < 0:
        # tqdm reads this variable when a bar is created, so bars are off for the whole run.
        import os

        os.environ["TQDM_DISABLE"] = "1"
