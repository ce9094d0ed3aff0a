"""``editsafe repair``: Safety Arithmetic (HDR on the weights, then the ICV) into a safe-model folder."""

from __future__ import annotations

import json

import click

from editsafe.cli.options import overwrite_option, seed_option


@click.command()
@click.option("--edited", "edited_reference", default=None,
              help="Edited model to repair (an edit folder from `editsafe edit`, or an edited model folder with --base).")
@click.option("--target", "target_reference", default=None, help="Base or SFT model to repair (with --scenario).")
@click.option("--scenario", type=click.Choice(["base", "sft"]), default=None,
              help="With --target: base (the target is the aligned base) or sft (fine-tuned from --base).")
@click.option("--base", "base_reference", default=None,
              help="The base model θ_base (default: the edit folder's base). Must match an edit's recorded base.")
@click.option("--harm", "harm_folder", type=click.Path(file_okay=False), default=None,
              help="Harm-vector folder from `editsafe harm` (default: trained on the bundled D_H and cached).")
@click.option("--demos", "demos_path", type=click.Path(dir_okay=False), default=None,
              help="JSON Lines of ICV demonstration pairs: question, unsafe_answer, safe_answer (default: bundled).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML file of Safety Arithmetic settings (k, lambda, alpha, icv_scale, gate, site, icv_method, icv_token).")
@click.option("--no-hdr", is_flag=True, help="Skip Harm Direction Removal: the target's weights are kept.")
@click.option("--no-icv", is_flag=True, help="Skip the in-context safety vector.")
@click.option("--hdr-method", type=click.Choice(["ties", "task-vector"]), default=None,
              help="ties: keep the top k% of τ_H by magnitude; task-vector: keep all of it (default: from the settings).")
@click.option("--alpha", type=float, default=None, help="ICV strength alpha, zero or positive (default: from the settings).")
@click.option("--out", "out_folder", type=click.Path(file_okay=False), required=True, help="Safe-model folder to write.")
@overwrite_option
@seed_option
def repair(
    edited_reference: str | None, target_reference: str | None, scenario: str | None, base_reference: str | None,
    harm_folder: str | None, demos_path: str | None, config_path: str | None, no_hdr: bool, no_icv: bool,
    hdr_method: str | None, alpha: float | None, out_folder: str, overwrite: bool, seed: int,
) -> None:
    """Repair an edited, base or SFT model and write a safe-model folder.

    The folder contains the HDR weights (Hugging Face layout), the ICV tensors and
    editsafe.json. `editsafe.load_model(FOLDER)` loads it with the ICV
    installed; plain transformers loads the HDR weights alone.
    """
    from editsafe.repair import repair as run_repair

    folder = run_repair(
        edited=edited_reference, target=target_reference, scenario=scenario, base=base_reference, harm=harm_folder,
        demos=demos_path, config=config_path, hdr=not no_hdr, icv=not no_icv, hdr_method=hdr_method,
        out=out_folder, overwrite=overwrite, seed=seed, overrides={"alpha": alpha},
    )
    manifest = json.loads((folder / "editsafe.json").read_text(encoding="utf-8"))
    hdr, icv = manifest["hdr"], manifest["icv"]
    click.echo(f"safe model: {folder}")
    click.echo(f"  scenario {manifest['scenario']}, region {manifest['region']}")
    hdr_line = "off" if hdr is None else (
        f"{hdr['method']}, k {hdr['k']}, lambda {hdr['lambda']}, {hdr['changed_entries']} entries changed"
    )
    icv_line = "off" if icv is None else (
        f"alpha {icv['alpha']}, icv_scale {icv['icv_scale']}, site {icv['site']}, {icv['method']}/{icv['token']}"
    )
    click.echo(f"  HDR: {hdr_line}")
    click.echo(f"  ICV: {icv_line}")
