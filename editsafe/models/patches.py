"""Rank-one weight patches: the stored form of a ROME edit.

A patch ΔW = right ⊗ u changes one weight matrix. In a Linear layer's
(out_features, in_features) layout ΔW = outer(right, u); a GPT-2 style Conv1D
stores its weight as (in_features, out_features), so there ΔW = outer(u, right).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from editsafe.errors import EditError, NumericalError, ProvenanceError
from editsafe.io import atomic_path


@dataclass
class RankOnePatch:
    """One rank-one update of the weight ``weight_name`` at decoder layer ``layer``."""

    weight_name: str
    layer: int
    u: torch.Tensor
    right: torch.Tensor
    transposed: bool = False

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Return ΔW in the stored weight's layout."""
        u = self.u.to(dtype)
        right = self.right.to(dtype)
        return torch.outer(u, right) if self.transposed else torch.outer(right, u)


def apply_patch(model: torch.nn.Module, patch: RankOnePatch, *, sign: float = 1.0) -> None:
    """Add ``sign`` × ΔW to the model's weight in place.

    The delta is computed in float32 and checked before anything is written, so
    a shape mismatch or a non-finite value leaves the model unchanged.
    """
    parameters = dict(model.named_parameters())
    if patch.weight_name not in parameters:
        raise ProvenanceError(f"patch targets {patch.weight_name!r}, which this model does not have")
    weight = parameters[patch.weight_name]
    delta = patch.delta(torch.float32) * sign
    if tuple(delta.shape) != tuple(weight.shape):
        raise ProvenanceError(
            f"patch for {patch.weight_name} has shape {tuple(delta.shape)}, the model's weight has {tuple(weight.shape)}"
        )
    if not torch.isfinite(delta).all():
        raise NumericalError(f"patch for {patch.weight_name} contains NaN or infinite values")
    with torch.no_grad():
        updated = weight.detach().to(torch.float32) + delta.to(weight.device)
        weight.copy_(updated.to(weight.dtype))


def save_patches(path: str | os.PathLike[str], patches: list[RankOnePatch]) -> None:
    """Write patches to one safetensors file atomically (``u.<i>`` and ``right.<i>``)."""
    if not patches:
        raise EditError("no patches to save")
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {"count": str(len(patches))}
    for index, patch in enumerate(patches):
        tensors[f"u.{index}"] = patch.u.detach().to(torch.float32).contiguous().cpu()
        tensors[f"right.{index}"] = patch.right.detach().to(torch.float32).contiguous().cpu()
        metadata[f"weight_name.{index}"] = patch.weight_name
        metadata[f"layer.{index}"] = str(patch.layer)
        metadata[f"transposed.{index}"] = str(patch.transposed).lower()
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_patches(path: str | os.PathLike[str]) -> list[RankOnePatch]:
    """Read patches written by :func:`save_patches`."""
    from safetensors import safe_open

    source = Path(path)
    with safe_open(str(source), framework="pt") as handle:
        metadata = handle.metadata() or {}
    tensors = load_file(str(source))
    try:
        count = int(metadata["count"])
        return [
            RankOnePatch(
                weight_name=metadata[f"weight_name.{index}"],
                layer=int(metadata[f"layer.{index}"]),
                u=tensors[f"u.{index}"],
                right=tensors[f"right.{index}"],
                transposed=metadata[f"transposed.{index}"] == "true",
            )
            for index in range(count)
        ]
    except (KeyError, ValueError) as error:
        raise ProvenanceError(f"{source}: not a patch file written by editsafe (missing or invalid {error})") from error
