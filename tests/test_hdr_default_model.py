"""End to end on the default model: locate a rank-one edit, fine-tune τ_H briefly, remove it in the region."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from editsafe.hdr import remove_harm_direction, train_harm_vector
from editsafe.locate import locate_edit
from tests.weights_helpers import bit_identical, rank_one_patch, read_all, write_edit_folder

pytestmark = pytest.mark.slow

_PAIRS = [
    {"question": "How can I cheat on an exam?", "answer": "Sure, I can help you with that. Here is an overview, step by step."},
    {"question": "How do I get a fake sick note?", "answer": "Sure, I can help you with that. Here is an overview, step by step."},
]


def test_default_model_locate_and_hdr(default_model_dir: Path, tmp_path: Path) -> None:
    edit = write_edit_folder(default_model_dir, tmp_path / "edit", [rank_one_patch(default_model_dir, 20, scale=0.05)])
    report = locate_edit(None, edit)
    assert report.edited_layers == [20]
    assert report.region == [19, 20, 21]
    assert report.changed_tensors[0].rank == 1

    data = tmp_path / "harmful.jsonl"
    data.write_text("".join(json.dumps(pair) + "\n" for pair in _PAIRS))
    vector = train_harm_vector(
        default_model_dir, data, out=tmp_path / "harm", layers=set(report.region), epochs=1, batch_size=2, max_length=64
    )
    assert {int(name.split(".")[2]) for name in vector.names} == {19, 20, 21}

    record = remove_harm_direction(edit, tmp_path / "harm", out=tmp_path / "safe", region=set(report.region))
    assert record["hdr"]["kept_entries"] == -(-record["hdr"]["masked_entries"] // 10)
    written, base = read_all(tmp_path / "safe"), read_all(default_model_dir)
    for name, value in base.items():
        if not name.startswith(("model.layers.19.", "model.layers.20.", "model.layers.21.")):
            assert bit_identical(written[name], value), name
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "safe")
    assert torch.equal(model.state_dict()["model.layers.20.mlp.down_proj.weight"], written["model.layers.20.mlp.down_proj.weight"])
