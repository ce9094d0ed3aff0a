"""``editsafe report``: combine evaluation runs into one table and chart."""

from __future__ import annotations

import click


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Folder for report.json, report.md and report.png (default: the only RUN, rendered again).")
@click.option("--title", default=None, help="Title of the Markdown report.")
def report(runs: tuple[str, ...], out: str | None, title: str | None) -> None:
    """Render RUN folders (from evaluate or compare) as one Markdown table and one chart."""
    from pathlib import Path

    from editsafe.errors import ConfigError
    from editsafe.evaluation.report import load_runs, write_comparison, write_run_report

    loaded = load_runs(runs)
    if out is None:
        if len(runs) != 1 or not Path(runs[0]).is_dir():
            raise ConfigError("give --out when combining several runs")
        out = runs[0]
    if len(loaded) == 1 and out == runs[0]:
        write_run_report(loaded[0], out)
    else:
        write_comparison(loaded, out, title=title)
    click.echo(f"report: {out}/report.md")
