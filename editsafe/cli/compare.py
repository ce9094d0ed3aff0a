"""``editsafe compare``: evaluate the five Safety Arithmetic ablation variants on the same prompts."""

from __future__ import annotations

import click

from editsafe.cli.evaluate import add_options, judge_options, parse_label_map, run_options
from editsafe.cli.options import device_option, dtype_option


@click.command()
@click.option("--edited", default=None, help="Edited model to repair (an edit folder or a model reference).")
@click.option("--target", default=None, help="Model to repair in the base or sft scenario.")
@click.option("--scenario", type=click.Choice(["edited", "base", "sft"]), default="edited", show_default=True,
              help="What is repaired: an edited model (the edit region) or a base/SFT model (every layer).")
@click.option("--base", default=None, help="Aligned base model, passed to the repair.")
@click.option("--harm", default=None, help="Harm vector or harmful model passed to the repair.")
@click.option("--demos", default=None, help="ICV demonstration pairs passed to the repair.")
@click.option("--config", default=None, help="Safety Arithmetic settings (YAML) passed to the repair.")
@click.option("--variant", "variants", multiple=True,
              type=click.Choice(["original", "hdr-ties", "hdr-task-vector", "icv-only", "safety-arithmetic"]),
              help="Evaluate only these variants (repeatable; default: all five).")
@click.option("--dataset", "datasets", multiple=True, required=True, metavar="NAME=PATH",
              help="Dataset as for editsafe evaluate (repeatable).")
@click.option("--field", default=None, help="Prompt column for generic datasets.")
@add_options(judge_options)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Comparison folder (reused and resumed).")
@add_options(run_options)
@device_option
@dtype_option
@click.pass_context
def compare(ctx: click.Context, edited: str | None, target: str | None, scenario: str, base: str | None,
            harm: str | None, demos: str | None, config: str | None, variants: tuple[str, ...],
            datasets: tuple[str, ...], field: str | None, judge: str, judge_url: str | None,
            judge_model: str | None, judge_key_env: str, judge_labels: tuple[str, ...], out: str, batch_size: int,
            max_new_tokens: int, no_chat_template: bool, prefix: str | None, limit: int | None, seed: int,
            margin: bool, device: str | None, dtype: str | None) -> None:
    """Build the ablation variants (original, HDR TIES, HDR task vector, ICV only, full) and compare them."""
    from editsafe.evaluation.compare import VARIANTS
    from editsafe.evaluation.compare import compare as run_comparison

    combined = run_comparison(
        datasets, out=out, edited=edited, target=target, scenario=scenario, base=base, harm=harm, demos=demos,
        config=config, variants=variants or tuple(VARIANTS), seed=seed, judge=judge, judge_url=judge_url,
        judge_model=judge_model, judge_key_env=judge_key_env, judge_labels=parse_label_map(judge_labels),
        field=field, batch_size=batch_size, max_new_tokens=max_new_tokens, chat_template=not no_chat_template,
        prefix=prefix, limit=limit, margin=margin, device=device, dtype=dtype,
        progress=(ctx.obj or {}).get("verbosity", 0) >= 0,
    )
    for run in combined["runs"]:
        cells = []
        for name, entry in run["datasets"].items():
            cells.append(f"{name} ASR={'–' if entry['asr'] is None else format(entry['asr'], '.3f')}")
        click.echo(f"{run['label']}: " + ", ".join(cells))
    click.echo(f"report: {out}/report.md")
