"""Options shared by several subcommands."""

from __future__ import annotations

import click

from editsafe.models.default import DEFAULT_ALIAS

model_option = click.option(
    "--model", "model_reference", default=DEFAULT_ALIAS, show_default=True,
    help="Model reference: an alias, a local Hugging Face folder, an editsafe edit or safe folder, or a hub id.",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed, recorded in every artefact.")
device_option = click.option("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
dtype_option = click.option(
    "--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=None,
    help="Weights dtype (default: float32 on cpu, the checkpoint's dtype on an accelerator).",
)
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
