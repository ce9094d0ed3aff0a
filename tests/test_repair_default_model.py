"""End to end on the default model: one ROME edit, then the full repair (slow)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from editsafe.models import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repaired(default_model_dir, tmp_path_factory):
    from editsafe.edit_runner import run_edits
    from editsafe.paths import bundled_dir
    from editsafe.repair import repair

    root = tmp_path_factory.mktemp("default-repair")
    run_edits(bundled_dir("edits") / "unintentional.jsonl", out=root / "edit", ids=["unint-001"], progress=False)
    edit = root / "edit" / "edits" / "unint-001"
    safe = repair(edited=edit, out=root / "safe", progress=False)
    return edit, safe


def test_default_repair_manifest(repaired):
    _, safe = repaired
    manifest = json.loads((safe / "editsafe.json").read_text())
    assert manifest["region"] == [4, 5, 6]
    assert manifest["hdr"]["changed_entries"] > 0
    assert manifest["icv"]["layers"] == [4, 5, 6]


def test_default_repair_installs_icv(repaired):
    _, safe = repaired
    model, _ = load_model(str(safe))
    assert model.editsafe_icv.active
    assert len(model.editsafe_icv.hooks) == 3


def test_default_repair_outside_region_identical(repaired):
    edit, safe = repaired
    edited, _ = load_model(str(edit))
    edited_tensors = edited.state_dict()
    stored = load_file(str(safe / "model.safetensors"))
    outside = [name for name in stored if not any(f"layers.{layer}." in name for layer in (4, 5, 6))]
    assert len(outside) > 200
    for name in outside:
        assert torch.equal(stored[name], edited_tensors[name]), name
