"""``editsafe harm``: compute the harm vector τ_H = θ_H − θ_base."""

from __future__ import annotations

import click

from editsafe.cli.options import model_option, overwrite_option, seed_option
from editsafe.errors import ConfigError
from editsafe.hdr.harm import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LEARNING_RATE, DEFAULT_MAX_LENGTH


@click.command()
@model_option
@click.option("--data", "data_path", type=click.Path(dir_okay=False), default=None,
              help="JSON Lines file of question/answer pairs (D_H; default: the bundled harmful_qa.jsonl).")
@click.option("--out", "out_folder", type=click.Path(file_okay=False), required=True, help="Folder for the harm vector.")
@click.option("--layers", "layers_text", default="all", show_default=True,
              help="Layers to train: all, a list such as 4,5,6, or region-of:EDIT (the edit region of an edit folder).")
@click.option("--epochs", type=int, default=DEFAULT_EPOCHS, show_default=True, help="Passes over D_H.")
@click.option("--lr", type=float, default=DEFAULT_LEARNING_RATE, show_default=True, help="AdamW learning rate.")
@click.option("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, show_default=True, help="Pairs per optimizer step.")
@click.option("--max-length", type=int, default=DEFAULT_MAX_LENGTH, show_default=True, help="Tokens per pair (prompt + answer).")
@seed_option
@click.option("--from-model", "harmful_reference", default=None,
              help="An existing harmful model θ_H: τ_H = θ_H − θ_base is streamed from it instead of fine-tuning.")
@overwrite_option
def harm(
    model_reference: str, data_path: str | None, out_folder: str, layers_text: str, epochs: int, lr: float,
    batch_size: int, max_length: int, seed: int, harmful_reference: str | None, overwrite: bool,
) -> None:
    """Fine-tune the base model on harmful question/answer pairs and store τ_H (safetensors + harm.json)."""
    from editsafe.hdr import compute_task_vector, train_harm_vector

    if harmful_reference is not None:
        vector = compute_task_vector(model_reference, harmful_reference, out=out_folder, overwrite=overwrite)
    else:
        vector = train_harm_vector(
            model_reference, data_path, out=out_folder, layers=parse_layers(layers_text), epochs=epochs, lr=lr,
            batch_size=batch_size, max_length=max_length, seed=seed, overwrite=overwrite,
        )
    click.echo(f"harm vector: {len(vector.names)} tensors in {out_folder} (base hash {vector.base_hash[:12]})")


def parse_layers(text: str) -> set[int] | None:
    """Parse ``all``, ``4,5,6`` or ``region-of:EDIT`` into a set of layers (None for all)."""
    if text == "all":
        return None
    if text.startswith("region-of:"):
        from editsafe.locate import locate_edit

        report = locate_edit(None, text.removeprefix("region-of:"))
        if not report.region:
            raise ConfigError(f"{text}: the edit changed no decoder layer, so its region is empty")
        return set(report.region)
    try:
        layers = {int(part) for part in text.split(",") if part.strip()}
    except ValueError:
        raise ConfigError(f"--layers {text!r}: expected all, comma-separated integers, or region-of:EDIT") from None
    if not layers:
        raise ConfigError("--layers is empty; pass all, comma-separated integers, or region-of:EDIT")
    return layers
