"""Model references, loading, hashing and rank-one patches on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from editsafe.errors import ModelReferenceError, ProvenanceError
from editsafe.models import RankOnePatch, apply_patch, load_model, resolve_model
from editsafe.models.patches import load_patches, save_patches


def test_folder_reference_loads(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    assert model.training is False
    assert tokenizer.pad_token is not None
    resolved = resolve_model(str(tiny_model_dir))
    assert resolved.kind == "folder"
    assert len(resolved.content_hash) == 64


def test_unknown_reference_rejected(tmp_path):
    with pytest.raises(ModelReferenceError, match="not a known alias"):
        resolve_model("no-such-alias")
    with pytest.raises(ModelReferenceError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_patch_roundtrip_and_apply(tiny_model_dir, tmp_path):
    model, _ = load_model(str(tiny_model_dir))
    name = next(n for n, p in model.named_parameters() if p.ndim == 2 and "mlp" in n)
    weight = dict(model.named_parameters())[name]
    transposed = model.config.model_type == "gpt2"
    rows, cols = weight.shape
    u = torch.randn(rows if transposed else cols)
    right = torch.randn(cols if transposed else rows)
    patch = RankOnePatch(weight_name=name, layer=0, u=u, right=right, transposed=transposed)
    save_patches(tmp_path / "delta.safetensors", [patch])
    (restored,) = load_patches(tmp_path / "delta.safetensors")
    assert restored.weight_name == name
    assert restored.transposed == transposed

    before = weight.detach().clone()
    apply_patch(model, restored)
    change = weight.detach() - before
    assert torch.linalg.matrix_rank(change).item() == 1
    torch.testing.assert_close(change, patch.delta(), rtol=1e-5, atol=1e-5)


def test_patch_shape_mismatch_leaves_model(tiny_model_dir):
    model, _ = load_model(str(tiny_model_dir))
    name, weight = next((n, p) for n, p in model.named_parameters() if p.ndim == 2)
    before = weight.detach().clone()
    patch = RankOnePatch(weight_name=name, layer=0, u=torch.ones(3), right=torch.ones(5))
    with pytest.raises(ProvenanceError, match="shape"):
        apply_patch(model, patch)
    assert torch.equal(weight.detach(), before)


def test_edit_folder_rebuilds_model(tiny_model_dirs, tmp_path):
    base_dir = tiny_model_dirs["llama"]
    base = resolve_model(str(base_dir))
    model, _ = load_model(str(base_dir))
    name = "model.layers.2.mlp.down_proj.weight"
    weight = dict(model.named_parameters())[name]
    patch = RankOnePatch(name, 2, torch.randn(weight.shape[1]), torch.randn(weight.shape[0]))
    edit_dir = tmp_path / "edit"
    save_patches(edit_dir / "delta.safetensors", [patch])
    (edit_dir / "editsafe.json").write_text(
        json.dumps({"kind": "rome-edit", "base": {"reference": str(base_dir), "hash": base.content_hash}})
    )

    edited, _ = load_model(str(edit_dir))
    rebuilt = dict(edited.named_parameters())[name].detach()
    torch.testing.assert_close(rebuilt, weight.detach() + patch.delta(), rtol=1e-6, atol=1e-6)
    assert resolve_model(str(edit_dir)).content_hash != base.content_hash
