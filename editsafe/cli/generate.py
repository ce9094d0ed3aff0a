"""``editsafe generate``: print a model's responses to prompts (any model reference, safe folders included)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from editsafe.cli.options import device_option, dtype_option, model_option, seed_option
from editsafe.errors import DataError

_PROMPT_FIELDS = ("prompt", "question", "goal", "instruction")


@click.command()
@model_option
@click.option("--prompt", "prompt_texts", multiple=True, help="A prompt; repeat the option for several.")
@click.option("--prompts", "prompts_path", type=click.Path(dir_okay=False), default=None,
              help="File of prompts: .jsonl (field prompt, question, goal or instruction) or text, one prompt a line.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True, help="Tokens generated per prompt.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Prompts per batch (left-padded).")
@click.option("--no-chat-template", is_flag=True, help="Feed the prompt text as it is instead of a chat turn.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per prompt: prompt and response.")
@seed_option
@device_option
@dtype_option
def generate(
    model_reference: str, prompt_texts: tuple[str, ...], prompts_path: str | None, max_new_tokens: int,
    batch_size: int, no_chat_template: bool, as_json: bool, seed: int, device: str | None, dtype: str | None,
) -> None:
    """Generate greedy responses for the given prompts and print them."""
    from editsafe.generation import GenerationSettings
    from editsafe.generation import generate as run_generation
    from editsafe.models import load_model

    prompts = list(prompt_texts) + (read_prompts(Path(prompts_path)) if prompts_path else [])
    if not prompts:
        raise click.UsageError("give at least one --prompt or a --prompts file")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=seed, chat_template=not no_chat_template)
    model, tokenizer = load_model(model_reference, device=device, dtype=dtype)
    responses = run_generation(model, tokenizer, prompts, settings, batch_size=batch_size)
    for prompt, response in zip(prompts, responses):
        if as_json:
            click.echo(json.dumps({"prompt": prompt, "response": response}))
        else:
            click.echo(f"### {prompt}\n{response}\n")


def read_prompts(path: Path) -> list[str]:
    """Read prompts from JSON Lines (the first of the known prompt fields) or from plain text lines."""
    if not path.is_file():
        raise DataError(f"{path}: prompts file not found")
    if path.suffix != ".jsonl":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    from editsafe.io import read_jsonl

    prompts: list[str] = []
    for number, record in enumerate(read_jsonl(path), start=1):
        field = next((name for name in _PROMPT_FIELDS if isinstance(record.get(name), str)), None)
        if field is None or not record[field].strip():
            raise DataError(f"{path}: record {number} has no non-empty prompt field (one of {', '.join(_PROMPT_FIELDS)})")
        prompts.append(record[field])
    return prompts
