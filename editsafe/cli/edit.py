"""``editsafe edit``: run ROME edits from a file of requests and store one edit folder per edit."""

from __future__ import annotations

from pathlib import Path

import click

from editsafe.cli import configure_logging
from editsafe.cli.options import device_option, dtype_option, model_option, overwrite_option, seed_option
from editsafe.edit_runner import BACKENDS, MODES

SUBJECT_RULE_HELP = (
    "How to pick the subject of NoIntentEdit sheet rows (.xlsx, or .csv with Cluster, Question, Answer). "
    "auto: the longest run of capitalised words after the first word, else the trailing phrase; "
    "trailing: up to three words before the question mark that are not stop words or common verbs, "
    "without a leading word ending in 'ing'."
)


@click.command()
@model_option
@click.option(
    "--hparams", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="ROME hyperparameters (EasyEdit's YAML schema). Default: the bundled file for the model.",
)
@click.option(
    "--edits", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Edit requests: editsafe JSONL/JSON/CSV or a NoIntentEdit sheet. Default: bundled edits/unintentional.jsonl.",
)
@click.option("--ids", default=None, help="Comma-separated request ids to run (in file order). Default: all.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Run only the first N selected requests.")
@click.option(
    "--mode", type=click.Choice(MODES), default="single", show_default=True,
    help="single: each edit starts from the base model; sequential: edits accumulate in one model.",
)
@click.option("--materialize", is_flag=True, help="Also save each edited model in Hugging Face format under model/.")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Output folder: run.json, manifest.jsonl and edits/<id>/. Rerunning the command resumes.",
)
@seed_option
@overwrite_option
@click.option(
    "--backend", type=click.Choice(BACKENDS), default="native", show_default=True,
    help="native: editsafe's ROME; easyedit: EasyEdit's ROME (needs the easyeditor package).",
)
@click.option("--subject-rule", type=click.Choice(["auto", "trailing"]), default="auto", show_default=True,
              help=SUBJECT_RULE_HELP)
@click.option(
    "--subjects", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="JSON object or id,subject CSV mapping sheet row ids (noint-002 or 2) to subjects; overrides --subject-rule.",
)
@device_option
@dtype_option
@click.option("-v", "--verbose", count=True, help="More log output (same as editsafe -v).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bar (same as editsafe -q).")
@click.pass_context
def edit(
    ctx: click.Context,
    model_reference: str,
    hparams: Path | None,
    edits: Path | None,
    ids: str | None,
    limit: int | None,
    mode: str,
    materialize: bool,
    out: Path,
    seed: int,
    overwrite: bool,
    backend: str,
    subject_rule: str,
    subjects: Path | None,
    device: str | None,
    dtype: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Run ROME edits and write one edit folder per request under OUT/edits/<id>/.

    Each edit folder is a model reference: pass it as --model to any command.
    """
    from editsafe.edit_runner import run_edits

    ctx.ensure_object(dict)
    if verbose or quiet:
        verbosity = -1 if quiet else verbose
        ctx.obj["verbosity"] = verbosity
        configure_logging(verbosity)
    quiet = quiet or ctx.obj.get("verbosity", 0) < 0

    selected = [identifier.strip() for identifier in ids.split(",") if identifier.strip()] if ids else None
    records = run_edits(
        edits, out=out, model=model_reference, hparams=hparams, ids=selected, limit=limit, mode=mode,
        materialize=materialize, seed=seed, overwrite=overwrite, backend=backend, subject_rule=subject_rule,
        subjects=subjects, device=device, dtype=dtype, progress=not quiet,
    )
    done = sum(record["status"] == "done" for record in records)
    failed = len(records) - done
    click.echo(f"{done} edit(s) done, {failed} failed; manifest: {out / 'manifest.jsonl'}")
    if failed:
        ctx.exit(1)
