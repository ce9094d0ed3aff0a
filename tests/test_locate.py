"""The layer locator on tiny models: edited layers, region, ranks, errors and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from editsafe.cli import main
from editsafe.errors import ProvenanceError
from editsafe.locate import NOTHING_CHANGED_EXIT_CODE, edit_region, locate_edit
from editsafe.models.loading import load_weights
from editsafe.models.refs import resolve_model
from editsafe.models.tensors import TensorSource
from tests.weights_helpers import REWRITE, architecture_of, copy_with_changes, rank_one_patch, write_edit_folder

NUM_LAYERS = 6


@pytest.mark.parametrize(("layer", "expected"), [(2, [1, 2, 3]), (0, [0, 1]), (NUM_LAYERS - 1, [4, 5])])
def test_locate_single_edit_region(tiny_model_dir: Path, tmp_path: Path, layer: int, expected: list[int]) -> None:
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [rank_one_patch(tiny_model_dir, layer)])
    report = locate_edit(tiny_model_dir, edit)
    assert report.edited_layers == [layer]
    assert report.region == expected
    assert [item.name for item in report.changed_tensors] == [REWRITE[architecture_of(tiny_model_dir)].format(layer)]
    assert report.changed_tensors[0].rank == 1
    assert report.outside_layers == []


def test_locate_distant_edits_union(tiny_model_dir: Path, tmp_path: Path) -> None:
    patches = [rank_one_patch(tiny_model_dir, 0, seed=1), rank_one_patch(tiny_model_dir, 4, seed=2)]
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", patches, claimed_layer=0)
    (tmp_path / "edit" / "editsafe.json").write_text(
        json.dumps({**json.loads((tmp_path / "edit" / "editsafe.json").read_text()), "layer": None, "layers": [0, 4]})
    )
    report = locate_edit(None, edit)
    assert report.edited_layers == [0, 4]
    assert report.region == [0, 1, 3, 4, 5]


def test_locate_norms_match_patch(tiny_model_dir: Path, tmp_path: Path) -> None:
    patch = rank_one_patch(tiny_model_dir, 3)
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [patch])
    item = locate_edit(tiny_model_dir, edit).changed_tensors[0]
    weight = load_file(str(tiny_model_dir / "model.safetensors"))[patch.weight_name]
    expected = patch.delta().norm().item()
    assert item.frobenius_norm == pytest.approx(expected, rel=1e-4)
    assert item.relative_norm == pytest.approx(expected / weight.norm().item(), rel=1e-4)
    assert item.shape == list(weight.shape)


def test_locate_third_party_rank_two(tiny_model_dir: Path, tmp_path: Path) -> None:
    name = REWRITE[architecture_of(tiny_model_dir)].format(1)
    weight = load_file(str(tiny_model_dir / "model.safetensors"))[name]
    generator = torch.Generator().manual_seed(5)
    delta = sum(
        torch.outer(torch.randn(weight.shape[0], generator=generator), torch.randn(weight.shape[1], generator=generator))
        for _ in range(2)
    )
    edited = copy_with_changes(tiny_model_dir, tmp_path / "third-party", {name: weight + 0.1 * delta})
    report = locate_edit(tiny_model_dir, edited)
    assert report.edited_layers == [1]
    assert report.changed_tensors[0].rank == 2
    assert report.claimed_layers is None


def test_locate_outside_layers_reported(tiny_model_dir: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    name = next(key for key in tensors if key.endswith(("embed_tokens.weight", "wte.weight")))
    changed = tensors[name].clone()
    changed[3] += 1.0
    edited = copy_with_changes(tiny_model_dir, tmp_path / "embedding-change", {name: changed})
    report = locate_edit(tiny_model_dir, edited)
    assert report.edited_layers == []
    assert report.region == []
    assert [item.name for item in report.outside_layers] == [name]
    assert report.outside_layers[0].rank == 1


def test_locate_nothing_changed_exit(tiny_model_dir: Path) -> None:
    result = CliRunner().invoke(main, ["locate", "--base", str(tiny_model_dir), "--edited", str(tiny_model_dir), "--json"])
    assert result.exit_code == NOTHING_CHANGED_EXIT_CODE
    assert json.loads(result.stdout)["changed_tensors"] == []


def test_locate_lying_manifest_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [rank_one_patch(tiny_model_dir, 1)], claimed_layer=4)
    with pytest.raises(ProvenanceError, match=r"claims layer\(s\) \[1, 4\].*changed at layer\(s\) \[1\]"):
        locate_edit(tiny_model_dir, edit)


def test_locate_shape_mismatch_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    name = REWRITE[architecture_of(tiny_model_dir)].format(2)
    weight = load_file(str(tiny_model_dir / "model.safetensors"))[name]
    edited = copy_with_changes(tiny_model_dir, tmp_path / "reshaped", {name: weight[:-1].clone()})
    shape, short = tuple(weight.shape), (weight.shape[0] - 1, weight.shape[1])
    with pytest.raises(ProvenanceError, match=rf"{name} has shape {shape} .* and {short}".replace("(", r"\(").replace(")", r"\)")):
        locate_edit(tiny_model_dir, edited)


def test_locate_missing_tensor_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    tensors = load_file(str(tiny_model_dir / "model.safetensors"))
    name = REWRITE[architecture_of(tiny_model_dir)].format(2)
    folder = copy_with_changes(tiny_model_dir, tmp_path / "missing", {})
    del tensors[name]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ProvenanceError, match=f"{name} is in the base model but not in the edited model"):
        locate_edit(tiny_model_dir, folder)


def test_locate_relative_tolerance(tiny_model_dir: Path, tmp_path: Path) -> None:
    name = REWRITE[architecture_of(tiny_model_dir)].format(2)
    weight = load_file(str(tiny_model_dir / "model.safetensors"))[name]
    edited = copy_with_changes(tiny_model_dir, tmp_path / "round-trip", {name: weight.bfloat16().float()})
    assert locate_edit(tiny_model_dir, edited).edited_layers == [2]
    assert locate_edit(tiny_model_dir, edited, rtol=1e-2).nothing_changed


def test_locate_json_interface(tiny_model_dir: Path, tmp_path: Path) -> None:
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [rank_one_patch(tiny_model_dir, 3)])
    result = CliRunner().invoke(main, ["locate", "--edited", str(edit), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["edited_layers"] == [3]
    assert payload["region"] == [2, 3, 4]
    assert set(payload["changed_tensors"][0]) >= {"name", "shape", "frobenius_norm", "relative_norm", "rank"}
    assert payload["edited"]["kind"] == "edit"
    assert payload["base"]["hash"] == resolve_model(tiny_model_dir).content_hash


def test_locate_text_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [rank_one_patch(tiny_model_dir, 3)])
    result = CliRunner().invoke(main, ["locate", "--edited", str(edit)])
    assert result.exit_code == 0, result.output
    assert "region R:      2, 3, 4" in result.stdout
    assert "rank=1  rank-one (ROME-style)" in result.stdout


def test_edit_region_clips() -> None:
    assert edit_region({0, 9}, 10) == [0, 1, 8, 9]


def test_edit_source_matches_loaded_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [rank_one_patch(tiny_model_dir, 2)])
    resolved = resolve_model(edit)
    state = load_weights(resolved, device="cpu").state_dict()
    with TensorSource(resolved) as source:
        for name in source.names:
            assert torch.equal(source.get(name), state[name]), name
        patched = next(iter(source.patched_names))
        rows = torch.cat([source.get_rows(patched, start, start + 5) for start in range(0, source.info(patched).shape[0], 5)])
        assert torch.equal(rows, state[patched])


@pytest.mark.parametrize("rank", [1, 3, 40])
def test_numerical_rank_large_matrix(rank: int) -> None:
    from editsafe.locate import numerical_rank

    generator = torch.Generator().manual_seed(rank)
    weight = 0.02 * torch.randn(200, 300, generator=generator)
    delta = 0.01 * torch.randn(200, rank, generator=generator) @ torch.randn(rank, 300, generator=generator)
    assert numerical_rank(delta, weight, torch.float32) == rank


def test_numerical_rank_bf16_rounding() -> None:
    from editsafe.locate import numerical_rank

    generator = torch.Generator().manual_seed(0)
    weight = (0.02 * torch.randn(256, 512, generator=generator)).bfloat16()
    update = 0.01 * torch.outer(torch.randn(256, generator=generator), torch.randn(512, generator=generator))
    delta = (weight.float() + update).bfloat16().float() - weight.float()
    assert numerical_rank(delta, weight.float(), torch.bfloat16) == 1
