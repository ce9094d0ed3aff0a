"""Helpers that write edit folders, changed model copies and toy harm vectors for the locator and HDR tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from editsafe.hdr.harm_vector import write_harm_vector
from editsafe.models.patches import RankOnePatch, save_patches
from editsafe.models.refs import resolve_model

REWRITE = {"llama": "model.layers.{}.mlp.down_proj.weight", "gpt2": "transformer.h.{}.mlp.c_proj.weight"}


def architecture_of(model_dir: Path) -> str:
    return json.loads((model_dir / "config.json").read_text())["model_type"]


def rank_one_patch(model_dir: Path, layer: int, seed: int = 0, scale: float = 0.5) -> RankOnePatch:
    """A random rank-one patch of the MLP output projection at ``layer``."""
    architecture = architecture_of(model_dir)
    name = REWRITE[architecture].format(layer)
    weight = load_file(str(model_dir / "model.safetensors"))[name]
    transposed = architecture == "gpt2"
    in_features = weight.shape[0] if transposed else weight.shape[1]
    out_features = weight.shape[1] if transposed else weight.shape[0]
    generator = torch.Generator().manual_seed(seed)
    u = torch.randn(in_features, generator=generator)
    right = scale * torch.randn(out_features, generator=generator)
    return RankOnePatch(weight_name=name, layer=layer, u=u / u.norm(), right=right, transposed=transposed)


def write_edit_folder(
    base_dir: Path, folder: Path, patches: list[RankOnePatch], *, claimed_layer: int | None = None
) -> Path:
    """Write an editsafe edit folder (editsafe.json + delta.safetensors) on top of ``base_dir``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_patches(folder / "delta.safetensors", patches)
    base = resolve_model(base_dir)
    manifest = {
        "kind": "rome-edit",
        "base": {"reference": str(base_dir), "hash": base.content_hash},
        "layer": claimed_layer if claimed_layer is not None else patches[0].layer,
        "weight_name": patches[0].weight_name,
    }
    (folder / "editsafe.json").write_text(json.dumps(manifest))
    return folder


def copy_with_changes(model_dir: Path, folder: Path, changes: dict[str, torch.Tensor]) -> Path:
    """Copy a single-file model folder, replacing the named tensors by the given values."""
    shutil.copytree(model_dir, folder)
    tensors = load_file(str(model_dir / "model.safetensors"))
    tensors.update(changes)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def write_toy_harm_vector(base_dir: Path, folder: Path, taus: dict[str, torch.Tensor]) -> Path:
    """Write a harm-vector folder holding exactly ``taus`` (float32), recorded as computed for ``base_dir``."""
    base = resolve_model(base_dir)
    shapes = {name: tuple(value.shape) for name, value in taus.items()}

    def read_rows(name: str, start: int, stop: int) -> torch.Tensor:
        value = taus[name].to(torch.float32)
        return value if value.dim() == 0 else value[start:stop]

    write_harm_vector(folder, list(taus), shapes, read_rows, {"base": base.provenance(), "settings": {"toy": True}})
    return folder


def read_all(folder: Path) -> dict[str, torch.Tensor]:
    """Read every tensor of every safetensors weight file in ``folder``."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def bit_identical(first: torch.Tensor, second: torch.Tensor) -> bool:
    """True when both tensors have the same dtype, shape and bytes."""
    if first.dtype != second.dtype or first.shape != second.shape:
        return False
    return torch.equal(first.contiguous().reshape(-1).view(torch.uint8), second.contiguous().reshape(-1).view(torch.uint8))
