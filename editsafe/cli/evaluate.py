"""``editsafe evaluate``: generate, judge and score a model on safety datasets."""

from __future__ import annotations

import click

from editsafe.cli.options import device_option, dtype_option, model_option, seed_option
from editsafe.errors import ConfigError

judge_options = [
    click.option("--judge", default="keyword", show_default=True,
                 help="Judge: keyword (refusal markers, offline), openai (an OpenAI-compatible endpoint) or hf:PATH "
                      "(a local text-classification model)."),
    click.option("--judge-url", default=None, help="Base URL of the OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1."),
    click.option("--judge-model", default=None, help="Model name that the judge endpoint serves."),
    click.option("--judge-key-env", default="OPENAI_API_KEY", show_default=True,
                 help="Name of the environment variable that contains the judge's API key (the key is never logged)."),
    click.option("--judge-label", "judge_labels", multiple=True, metavar="LABEL=VERDICT",
                 help="For hf:PATH judges: map a classifier label to safe or unsafe (repeatable)."),
]

# Generation and scoring options shared by evaluate and compare.
run_options = [
    click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True, help="Prompts per batch."),
    click.option("--max-new-tokens", type=click.IntRange(min=1), default=128, show_default=True,
                 help="Tokens per response."),
    click.option("--no-chat-template", is_flag=True, help="Feed prompts as plain text instead of the chat template."),
    click.option("--prefix", default=None, help="Instruction text put before every prompt."),
    click.option("--limit", type=click.IntRange(min=1), default=None,
                 help="Seeded random sample of N prompts per dataset."),
    seed_option,
    click.option("--margin/--no-margin", default=True, show_default=True, help="Compute the refusal margin per dataset."),
]


def add_options(options: list) -> object:
    """Return a decorator that applies ``options`` in order."""
    def decorate(function: object) -> object:
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def parse_label_map(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """Parse repeated ``LABEL=VERDICT`` options into a dict (None when none were given)."""
    if not pairs:
        return None
    mapping = {}
    for pair in pairs:
        label, separator, verdict = pair.partition("=")
        if not separator or not label:
            raise ConfigError(f"--judge-label {pair!r} is invalid; use LABEL=safe or LABEL=unsafe")
        mapping[label] = verdict
    return mapping


@click.command()
@model_option
@click.option("--dataset", "datasets", multiple=True, required=True, metavar="NAME=PATH",
              help="Dataset file or folder; NAME picks the loader (advbench, dangerousqa, harmfulqa, nichehazardqa, "
                   "hexphi, xstest, nointentedit; another name reads a generic table). Repeatable; PATH alone guesses.")
@click.option("--field", default=None, help="Prompt column for generic datasets.")
@add_options(judge_options)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run folder (reused and resumed).")
@add_options(run_options)
@click.option("--label", default=None, help="Name of this model in reports (default: the model reference).")
@click.option("--ppl-text", type=click.Path(dir_okay=False), default=None, help="UTF-8 text file for perplexity.")
@click.option("--mc-file", type=click.Path(dir_okay=False), default=None,
              help="Multiple-choice JSONL (question, choices, answer) for accuracy.")
@click.option("--edit", "edit_folder", type=click.Path(file_okay=False, exists=True), default=None,
              help="Edit folder whose request is scored on this model (does the edit survive a repair?).")
@device_option
@dtype_option
@click.pass_context
def evaluate(ctx: click.Context, model_reference: str, datasets: tuple[str, ...], field: str | None, judge: str,
             judge_url: str | None, judge_model: str | None, judge_key_env: str, judge_labels: tuple[str, ...],
             out: str, batch_size: int, max_new_tokens: int, no_chat_template: bool, prefix: str | None,
             limit: int | None, seed: int, margin: bool, label: str | None, ppl_text: str | None,
             mc_file: str | None, edit_folder: str | None, device: str | None, dtype: str | None) -> None:
    """Evaluate a model on safety datasets and write report.json, report.md and report.png to --out."""
    from editsafe.evaluation import evaluate as run_evaluation

    report = run_evaluation(
        model_reference, datasets, out=out, judge=judge, judge_url=judge_url, judge_model=judge_model,
        judge_key_env=judge_key_env, judge_labels=parse_label_map(judge_labels), field=field,
        batch_size=batch_size, max_new_tokens=max_new_tokens, chat_template=not no_chat_template, prefix=prefix,
        limit=limit, seed=seed, margin=margin, label=label, ppl_text=ppl_text, multiple_choice=mc_file,
        edit=edit_folder, device=device, dtype=dtype, progress=(ctx.obj or {}).get("verbosity", 0) >= 0,
    )
    for name, entry in report["datasets"].items():
        asr = "–" if entry["asr"] is None else f"{entry['asr']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
        click.echo(f"{name}: n={entry['n']} ASR={asr} unjudged={entry['unjudged']}")
    click.echo(f"report: {out}/report.md")
