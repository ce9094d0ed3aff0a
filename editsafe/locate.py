"""The layer locator: which tensors an edit changed, and the edit region R.

θ_edit is compared with θ_base tensor by tensor, streamed from safetensors,
so only one tensor of each model is in memory at a time. A tensor is changed
when any element differs beyond the tolerance ``|e − b| > atol + rtol·|b|``
(exact comparison by default). Changed tensors inside the decoder layers give
the edited layers; the region is R = ⋃ {l−1, l, l+1} over edited layers,
clipped to [0, n_layers − 1]. Changes outside the layers (embeddings, final
norm, head) are reported in ``outside_layers`` and never enter R.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from editsafe.errors import ConfigError, ProvenanceError
from editsafe.models.refs import ResolvedModel, resolve_model
from editsafe.models.tensors import TensorSource, row_chunks

logger = logging.getLogger(__name__)

# Exit status of ``editsafe locate`` when the two models have identical weights.
NOTHING_CHANGED_EXIT_CODE = 3

_FLOAT32_EPS = torch.finfo(torch.float32).eps
# Columns of the random probe that estimates the rank of a large ΔW.
_RANK_PROBE = 32
# Tensors are compared in row blocks of at most this many elements.
_BLOCK_ELEMENTS = 1 << 20


@dataclass
class ChangedTensor:
    """One tensor that differs between the base and the edited model.

    ``rank`` is the numerical rank of ΔW (see :func:`numerical_rank`); a rank
    of 1 marks a ROME-style rank-one update. ``layer`` is None outside the
    decoder layers.
    """

    name: str
    shape: list[int]
    frobenius_norm: float
    relative_norm: float
    rank: int
    layer: int | None
    changed_elements: int


@dataclass
class LocateReport:
    """Result of :func:`locate_edit`; :meth:`to_json` gives the fixed ``--json`` object."""

    edited_layers: list[int]
    region: list[int]
    changed_tensors: list[ChangedTensor]
    outside_layers: list[ChangedTensor]
    num_layers: int
    base: dict[str, Any]
    edited: dict[str, Any]
    rtol: float
    atol: float
    claimed_layers: list[int] | None = None
    compared_tensors: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def nothing_changed(self) -> bool:
        return not self.changed_tensors and not self.outside_layers

    @property
    def rank_one(self) -> bool:
        """True when every changed tensor inside the layers is a rank-one update."""
        return bool(self.changed_tensors) and all(item.rank == 1 for item in self.changed_tensors)

    def to_json(self) -> dict[str, Any]:
        """Return the ``editsafe locate --json`` object."""
        return {
            "edited_layers": self.edited_layers,
            "region": self.region,
            "changed_tensors": [_tensor_json(item) for item in self.changed_tensors],
            "outside_layers": [_tensor_json(item) for item in self.outside_layers],
            "num_layers": self.num_layers,
            "claimed_layers": self.claimed_layers,
            "tolerance": {"rtol": self.rtol, "atol": self.atol},
            "base": self.base,
            "edited": self.edited,
        }


def _tensor_json(item: ChangedTensor) -> dict[str, Any]:
    record = asdict(item)
    if not math.isfinite(record["relative_norm"]):
        record["relative_norm"] = None  # the base tensor is all zeros; JSON has no infinity
    return {key: record[key] for key in ("name", "shape", "frobenius_norm", "relative_norm", "rank", "layer")}


def edit_region(edited_layers: set[int] | list[int], num_layers: int) -> list[int]:
    """Return R = ⋃ {l−1, l, l+1} over ``edited_layers``, clipped to [0, num_layers − 1], sorted."""
    region: set[int] = set()
    for layer in edited_layers:
        if not 0 <= layer < num_layers:
            raise ConfigError(f"edited layer {layer} is outside the model's layers 0..{num_layers - 1}")
        region.update(index for index in (layer - 1, layer, layer + 1) if 0 <= index < num_layers)
    return sorted(region)


def numerical_rank(delta: torch.Tensor, weight: torch.Tensor, stored_dtype: torch.dtype) -> int:
    """Return the numerical rank of ΔW (float32), counting singular values above a tolerance.

    The tolerance is max(σ₁ · max(m, n) · ε₃₂, ε_d · rms(W) · (√m + √n)). The
    first term is the usual float32 rank tolerance. The second, with ε_d the
    machine epsilon of the stored dtype, bounds the spectral norm of the
    rounding noise that storing W + ΔW in that dtype adds (for bf16 weights an
    exact rank-one update otherwise reads as full rank). Vectors count as 1×n
    matrices, tensors of more than two dimensions as (shape[0], rest). A
    genuine change smaller than the rounding bound is reported as rank 0.

    Large matrices first get a randomized probe (Halko, Martinsson and Tropp,
    2011): the singular values of Qᵀ ΔW, with Q an orthonormal basis of
    ΔW · Ω for a seeded Gaussian Ω of ``_RANK_PROBE`` columns, never exceed
    those of ΔW and match them for a low-rank ΔW. When fewer than all probe
    values pass the tolerance, that count is the rank. Otherwise the full
    singular values are computed.
    """
    matrix = delta.reshape(1, -1) if delta.dim() < 2 else delta.reshape(delta.shape[0], -1)
    matrix = matrix.to(torch.float32)
    rows, columns = matrix.shape
    weight_rms = weight.to(torch.float32).pow(2).mean().sqrt().item() if weight.numel() else 0.0
    rounding_bound = 0.0
    if stored_dtype not in (torch.float32, torch.float64):
        rounding_bound = torch.finfo(stored_dtype).eps * weight_rms * (math.sqrt(rows) + math.sqrt(columns))

    if min(rows, columns) > 4 * _RANK_PROBE:
        probe = torch.randn(columns, _RANK_PROBE, generator=torch.Generator().manual_seed(0))
        basis, _ = torch.linalg.qr(matrix @ probe)
        probe_values = torch.linalg.svdvals(basis.T @ matrix)
        count = _count_above(probe_values, rows, columns, rounding_bound)
        if count < _RANK_PROBE:
            return count
    return _count_above(torch.linalg.svdvals(matrix), rows, columns, rounding_bound)


def _count_above(singular_values: torch.Tensor, rows: int, columns: int, rounding_bound: float) -> int:
    if singular_values.numel() == 0 or singular_values[0] == 0:
        return 0
    tolerance = max(singular_values[0].item() * max(rows, columns) * _FLOAT32_EPS, rounding_bound)
    return int((singular_values > tolerance).sum().item())


def claimed_edit_layers(resolved: ResolvedModel) -> list[int] | None:
    """Return the layers an edit folder's ``editsafe.json`` and patches claim, or None for other references."""
    if resolved.kind != "edit":
        return None
    from editsafe.models.patches import load_patches
    from editsafe.models.refs import PATCH_FILE_NAME

    assert resolved.artefact_folder is not None
    claimed: set[int] = set()
    for key in ("layer", "layers"):
        value = resolved.manifest.get(key)
        if isinstance(value, int):
            claimed.add(value)
        elif isinstance(value, list):
            claimed.update(int(item) for item in value)
    claimed.update(patch.layer for patch in load_patches(resolved.artefact_folder / PATCH_FILE_NAME))
    return sorted(claimed)


def locate_edit(
    base: str | os.PathLike[str] | ResolvedModel | None,
    edited: str | os.PathLike[str] | ResolvedModel,
    *,
    rtol: float = 0.0,
    atol: float = 0.0,
) -> LocateReport:
    """Compare an edited model with its base and return the changed tensors and the edit region.

    ``base`` None means the edit folder's own base (or the default model).
    Raises :class:`ProvenanceError` when the two models store different tensor
    names or shapes, and when an edit folder claims layers (``layer`` /
    ``layers`` in its ``editsafe.json``, or its patches) that differ from the
    layers whose weights changed.
    """
    if rtol < 0 or atol < 0:
        raise ConfigError(f"tolerances must be non-negative, got rtol={rtol}, atol={atol}")
    edited_model = edited if isinstance(edited, ResolvedModel) else resolve_model(edited)
    if base is None and edited_model.base is not None:
        base_model = edited_model.base
    else:
        base_model = base if isinstance(base, ResolvedModel) else resolve_model(base)

    with TensorSource(base_model) as base_source, TensorSource(edited_model) as edited_source:
        names = _matched_names(base_source, edited_source)
        changed: list[ChangedTensor] = []
        for name in tqdm(names, desc="comparing tensors", unit="tensor"):
            item = _compare_tensor(name, base_source, edited_source, rtol, atol)
            if item is not None:
                changed.append(item)
                logger.debug("changed: %s (rank %d)", name, item.rank)
        num_layers = base_source.num_layers

    inside = [item for item in changed if item.layer is not None]
    outside = [item for item in changed if item.layer is None]
    edited_layers = sorted({item.layer for item in inside if item.layer is not None})
    report = LocateReport(
        edited_layers=edited_layers,
        region=edit_region(edited_layers, num_layers),
        changed_tensors=inside,
        outside_layers=outside,
        num_layers=num_layers,
        base=base_model.provenance(),
        edited=edited_model.provenance(),
        rtol=rtol,
        atol=atol,
        claimed_layers=claimed_edit_layers(edited_model),
        compared_tensors=len(names),
    )
    _check_claim(report, edited_model)
    return report


def _matched_names(base: TensorSource, edited: TensorSource) -> list[str]:
    """Return the tensor names to compare, after checking that both models store the same tensors."""
    base_names = set(base.names) | ({base.tied_head} if base.tied_head else set())
    edited_names = set(edited.names) | ({edited.tied_head} if edited.tied_head else set())
    for name in sorted(base_names ^ edited_names):
        owner, other = ("base", "edited") if name in base_names else ("edited", "base")
        raise ProvenanceError(
            f"tensor {name} is in the {owner} model but not in the {other} model; "
            "the two references are not the same architecture"
        )
    names = [name for name in base.names if name in edited]
    for name in names:
        base_shape, edited_shape = base.info(name).shape, edited.info(name).shape
        if base_shape != edited_shape:
            raise ProvenanceError(
                f"tensor {name} has shape {base_shape} in the base model and {edited_shape} in the edited model"
            )
    # A head that is tied on one side only is compared against the other side's embedding.
    for source, other in ((base, edited), (edited, base)):
        if source.tied_head and source.tied_head in other and source.tied_head not in names:
            names.append(source.tied_head)
    return names


def _stored_name(source: TensorSource, name: str) -> str:
    """Return the stored tensor behind ``name`` (a tied head reads the embedding)."""
    if name not in source and name == source.tied_head and source.tied_to is not None:
        return source.tied_to
    return name


def _compare_tensor(
    name: str, base: TensorSource, edited: TensorSource, rtol: float, atol: float
) -> ChangedTensor | None:
    """Compare one tensor block by block; load ΔW whole only when it changed, for its rank."""
    base_name, edited_name = _stored_name(base, name), _stored_name(edited, name)
    shape = base.info(base_name).shape
    edited_dtype = edited.info(edited_name).dtype
    changed_elements = 0
    delta_squares = 0.0
    base_squares = 0.0
    for start, stop in row_chunks(shape, _BLOCK_ELEMENTS):
        base_block = base.get_rows(base_name, start, stop)
        edited_block = edited.get_rows(edited_name, start, stop)
        if rtol == 0 and atol == 0 and base_block.dtype == edited_block.dtype and torch.equal(base_block, edited_block):
            base_squares += _squares(base_block)
            continue
        base_float = base_block.to(torch.float64 if not base_block.is_floating_point() else torch.float32)
        edited_float = edited_block.to(base_float.dtype)
        delta = edited_float - base_float
        differs = delta.abs() > atol + rtol * base_float.abs()
        differs |= torch.isnan(delta) & ~(torch.isnan(base_float) & torch.isnan(edited_float))
        changed_elements += int(differs.sum().item())
        delta_squares += float(delta.double().pow(2).sum().item())
        base_squares += _squares(base_block)
    if changed_elements == 0:
        return None

    base_tensor = base.get(base_name).to(torch.float32)
    delta = edited.get(edited_name).to(torch.float32) - base_tensor
    delta_norm, base_norm = math.sqrt(delta_squares), math.sqrt(base_squares)
    stored_dtype = edited_dtype if edited_dtype.is_floating_point else torch.float32
    return ChangedTensor(
        name=name,
        shape=list(shape),
        frobenius_norm=delta_norm,
        relative_norm=delta_norm / base_norm if base_norm > 0 else math.inf,
        rank=numerical_rank(delta, base_tensor, stored_dtype),
        layer=base.architecture.layer_of(name),
        changed_elements=changed_elements,
    )


def _squares(block: torch.Tensor) -> float:
    return float(block.double().pow(2).sum().item())


def _check_claim(report: LocateReport, edited: ResolvedModel) -> None:
    if report.claimed_layers is None:
        return
    if report.claimed_layers != report.edited_layers:
        raise ProvenanceError(
            f"{edited.reference}: the edit folder claims layer(s) {report.claimed_layers}, but the weights "
            f"changed at layer(s) {report.edited_layers}; the edit folder is inconsistent, rerun the edit"
        )
