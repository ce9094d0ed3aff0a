"""``editsafe locate``: print which layers an edit changed and the edit region."""

from __future__ import annotations

import json

import click

from editsafe.locate import NOTHING_CHANGED_EXIT_CODE, ChangedTensor, LocateReport, locate_edit
from editsafe.models.default import DEFAULT_ALIAS


@click.command()
@click.option(
    "--base", "base_reference", default=None,
    help=f"Base model reference (default: the edit folder's own base, else {DEFAULT_ALIAS}).",
)
@click.option("--edited", "edited_reference", required=True, help="Edited model: an edit folder or a Hugging Face folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--rtol", type=float, default=0.0, show_default=True,
    help="Relative tolerance per element (use about 1e-2 for a bf16 round trip); 0 compares exactly.",
)
@click.option("--atol", type=float, default=0.0, show_default=True, help="Absolute tolerance per element.")
def locate(base_reference: str | None, edited_reference: str, as_json: bool, rtol: float, atol: float) -> None:
    """Find the layers an edit changed and the region R = edited layers ± 1.

    Exits with status 3 when the two models have identical weights.
    """
    report = locate_edit(base_reference, edited_reference, rtol=rtol, atol=atol)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(format_report(report))
    if report.nothing_changed:
        if not as_json:
            click.echo(f"no tensor differs beyond the tolerance; exit status {NOTHING_CHANGED_EXIT_CODE}", err=True)
        raise SystemExit(NOTHING_CHANGED_EXIT_CODE)


def format_report(report: LocateReport) -> str:
    """Return the human-readable locate report."""
    lines = [
        f"compared {report.compared_tensors} tensors of {report.num_layers}-layer models",
        f"edited layers: {_layer_list(report.edited_layers)}",
        f"region R:      {_layer_list(report.region)}",
    ]
    if report.claimed_layers is not None:
        lines.append(f"edit folder claims layer(s) {_layer_list(report.claimed_layers)}: confirmed by the weights")
    if report.changed_tensors:
        lines.append("changed tensors inside the decoder layers:")
        lines.extend(_tensor_line(item) for item in report.changed_tensors)
    if report.outside_layers:
        lines.append("changed tensors outside the decoder layers (not part of R):")
        lines.extend(_tensor_line(item) for item in report.outside_layers)
    return "\n".join(lines)


def _layer_list(layers: list[int]) -> str:
    return ", ".join(str(layer) for layer in layers) if layers else "none"


def _tensor_line(item: ChangedTensor) -> str:
    kind = "  rank-one (ROME-style)" if item.rank == 1 else ""
    shape = "x".join(str(size) for size in item.shape)
    return (
        f"  {item.name}  [{shape}]  ||dW||_F={item.frobenius_norm:.4g}  "
        f"||dW||_F/||W||_F={item.relative_norm:.3g}  rank={item.rank}{kind}"
    )
