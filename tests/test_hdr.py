"""Harm Direction Removal on tiny models: exact trimming, bit-identical copies, dtypes and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from editsafe.errors import NumericalError, OutputExistsError, ProvenanceError
from editsafe.hdr import compute_task_vector, load_harm_vector, remove_harm_direction
from editsafe.models.architectures import architecture_for
from editsafe.models.refs import resolve_model
from editsafe.models.tensors import TensorSource
from tests.tiny_models import build_tiny_model
from tests.weights_helpers import (
    architecture_of,
    bit_identical,
    copy_with_changes,
    rank_one_patch,
    read_all,
    write_edit_folder,
    write_toy_harm_vector,
)

LAMBDA = 3.0


def quantised_harm(model_dir: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """τ_H for every float tensor, with values on a coarse grid so that many magnitudes tie."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randint(-4, 5, tensor.shape, generator=generator).to(torch.float32) / 256
        for name, tensor in load_file(str(model_dir / "model.safetensors")).items()
        if tensor.is_floating_point()
    }


def hand_hdr(
    target: dict[str, torch.Tensor], harm: dict[str, torch.Tensor], order: list[str], masked: set[str], k: float
) -> tuple[dict[str, torch.Tensor], int]:
    """θ_t − λ·τ' computed in memory: a stable sort by magnitude keeps the earliest ties (file order, row-major)."""
    names = [name for name in order if name in masked]
    flat = torch.cat([harm[name].reshape(-1) for name in names])
    kept = math.ceil(k / 100 * flat.numel())
    order_by_magnitude = torch.sort(flat.abs(), descending=True, stable=True).indices
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order_by_magnitude[:kept]] = True
    expected = dict(target)
    offset = 0
    for name in names:
        count = harm[name].numel()
        trimmed = torch.where(keep[offset:offset + count].reshape(harm[name].shape), harm[name], 0.0)
        expected[name] = (target[name].to(torch.float32) - LAMBDA * trimmed).to(target[name].dtype)
        offset += count
    return expected, kept


def masked_names(model_dir: Path, layers: set[int]) -> set[str]:
    architecture = architecture_for(architecture_of(model_dir))
    return {name for name in read_all(model_dir) if architecture.layer_of(name) in layers}


def file_order(model_dir: Path) -> list[str]:
    with TensorSource(resolve_model(model_dir)) as source:
        return source.names


def test_hdr_matches_hand_computation(tiny_model_dir: Path, tmp_path: Path) -> None:
    taus = quantised_harm(tiny_model_dir)
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    record = remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe", region={1, 2, 3}, k=10, lam=LAMBDA)
    target = read_all(tiny_model_dir)
    masked = masked_names(tiny_model_dir, {1, 2, 3})
    expected, kept = hand_hdr(target, taus, file_order(tiny_model_dir), masked, 10)
    written = read_all(tmp_path / "safe")
    for name in target:
        assert bit_identical(written[name], expected[name]), name
    assert record["hdr"]["kept_entries"] == kept
    assert record["hdr"]["masked_entries"] == sum(taus[name].numel() for name in masked)
    assert record["hdr"]["ties_kept"] > 0
    assert record["hdr"]["threshold"] == pytest.approx(4 / 256)


def test_hdr_outside_region_bit_identical(tiny_model_dir: Path, tmp_path: Path) -> None:
    taus = quantised_harm(tiny_model_dir, seed=3)
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe", region={0}, include_embeddings=False)
    target = read_all(tiny_model_dir)
    written = read_all(tmp_path / "safe")
    outside = set(target) - masked_names(tiny_model_dir, {0})
    assert set(written) == set(target)
    for name in outside:
        assert bit_identical(written[name], target[name]), name


def test_hdr_kept_entries_exact(tiny_model_dir: Path, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    taus = {name: torch.randn(value.shape, generator=generator) for name, value in quantised_harm(tiny_model_dir).items()}
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    for k in (0.5, 10, 33.3):
        record = remove_harm_direction(tiny_model_dir, harm, out=tmp_path / f"safe-{k}", region={2, 3}, k=k)
        masked_entries = sum(taus[name].numel() for name in masked_names(tiny_model_dir, {2, 3}))
        assert record["hdr"]["kept_entries"] == math.ceil(k / 100 * masked_entries)
        assert record["hdr"]["changed_entries"] == record["hdr"]["kept_entries"]


def test_hdr_k100_equals_task_vector(tiny_model_dir: Path, tmp_path: Path) -> None:
    taus = quantised_harm(tiny_model_dir, seed=4)
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "ties100", k=100)
    record = remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "task-vector", method="task-vector")
    ties, negation = read_all(tmp_path / "ties100"), read_all(tmp_path / "task-vector")
    target = read_all(tiny_model_dir)
    masked = masked_names(tiny_model_dir, set(range(6)))
    for name in target:
        assert bit_identical(ties[name], negation[name]), name
    for name in masked:
        assert bit_identical(negation[name], (target[name] - LAMBDA * taus[name]).to(target[name].dtype)), name
    assert record["hdr"]["k"] == 100.0
    assert record["hdr"]["threshold"] == 0.0


def test_hdr_streaming_blocks_agree(tiny_model_dir: Path, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(2)
    taus = {name: torch.randn(value.shape, generator=generator) for name, value in quantised_harm(tiny_model_dir).items()}
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "whole", k=7, include_embeddings=True)
    remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "blocks", k=7, include_embeddings=True, max_block_elements=1000)
    whole, blocks = read_all(tmp_path / "whole"), read_all(tmp_path / "blocks")
    target = read_all(tiny_model_dir)
    expected, _ = hand_hdr(target, taus, file_order(tiny_model_dir), set(taus), 7)
    for name in target:
        assert bit_identical(blocks[name], whole[name]), name
        assert bit_identical(blocks[name], expected[name]), name


def test_hdr_per_tensor_counts(tiny_model_dir: Path, tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(6)
    taus = {name: torch.randn(value.shape, generator=generator) for name, value in quantised_harm(tiny_model_dir).items()}
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    record = remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe", region={1}, k=25, per_tensor=True)
    masked = masked_names(tiny_model_dir, {1})
    target, written = read_all(tiny_model_dir), read_all(tmp_path / "safe")
    for name in masked:
        changed = int((written[name] != target[name]).sum())
        assert changed == math.ceil(0.25 * taus[name].numel()), name
    assert record["hdr"]["threshold"] is None
    assert set(record["hdr"]["tensor_thresholds"]) == masked


def test_hdr_sharded_target_loads(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    single = build_tiny_model("llama", tmp_path / "single")
    model = AutoModelForCausalLM.from_pretrained(single)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="100KB")
    for file in single.glob("tokenizer*"):
        (sharded / file.name).write_bytes(file.read_bytes())
    assert (sharded / "model.safetensors.index.json").is_file()
    taus = quantised_harm(single)
    harm = write_toy_harm_vector(sharded, tmp_path / "harm", taus)
    remove_harm_direction(sharded, harm, out=tmp_path / "safe", region={2, 3})
    output = tmp_path / "safe"
    assert sorted(path.name for path in output.glob("*.safetensors")) == sorted(path.name for path in sharded.glob("*.safetensors"))
    expected, _ = hand_hdr(read_all(sharded), taus, file_order(sharded), masked_names(single, {2, 3}), 10)
    loaded = AutoModelForCausalLM.from_pretrained(output).state_dict()
    for name, value in expected.items():
        assert torch.equal(loaded[name], value), name


def test_hdr_bf16_arithmetic_in_float32(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model("llama", tmp_path / "bf16")
    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(folder)
    name = "model.layers.1.input_layernorm.weight"
    weight = load_file(str(folder / "model.safetensors"))[name]
    assert weight.dtype == torch.bfloat16
    assert bool((weight == 1).all())
    # λ·τ is just over half a bf16 step below 1.0 (2⁻⁹): float32 arithmetic rounds 1 − λτ to 1 − 2⁻⁸ ...
    tau = torch.full(weight.shape, (2**-9 + 2**-19) / LAMBDA)
    # ... while bf16 arithmetic rounds λτ to exactly 2⁻⁹ and then 1 − 2⁻⁹ to even, back to 1.0.
    bf16_result = weight - (LAMBDA * tau.to(torch.bfloat16)).to(torch.bfloat16)
    assert bool((bf16_result == 1).all())
    harm = write_toy_harm_vector(folder, tmp_path / "harm", {name: tau})
    remove_harm_direction(folder, harm, out=tmp_path / "safe", region={1}, method="task-vector", lam=LAMBDA)
    written = read_all(tmp_path / "safe")[name]
    assert written.dtype == torch.bfloat16
    assert bool((written == 1 - 2**-8).all())


def test_hdr_shape_mismatch_writes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    taus = quantised_harm(tiny_model_dir)
    name = next(key for key in taus if architecture_for(architecture_of(tiny_model_dir)).layer_of(key) == 2 and taus[key].dim() == 2)
    shape = tuple(taus[name].shape)
    taus[name] = taus[name][:-1].clone()
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    short = (shape[0] - 1, shape[1])
    with pytest.raises(ProvenanceError, match=f"{name} has shape .{shape[0]}, {shape[1]}. in the target and .{short[0]}, {short[1]}."):
        remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe", region={2})
    assert not (tmp_path / "safe").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["harm"]


def test_hdr_nan_writes_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    taus = quantised_harm(tiny_model_dir)
    name = next(key for key in taus if architecture_for(architecture_of(tiny_model_dir)).layer_of(key) == 3)
    taus[name].reshape(-1)[0] = float("nan")
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    for method in ("ties", "task-vector"):
        with pytest.raises(NumericalError, match="NaN or infinite"):
            remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe", region={3}, method=method)
        assert not (tmp_path / "safe").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["harm"]


def test_hdr_overflow_writes_nothing(tmp_path: Path) -> None:
    folder = build_tiny_model("llama", tmp_path / "model")
    name = "model.layers.0.post_attention_layernorm.weight"
    harm = write_toy_harm_vector(folder, tmp_path / "harm", {name: torch.full((64,), 3e38)})
    with pytest.raises(NumericalError, match=name):
        remove_harm_direction(folder, harm, out=tmp_path / "safe", region={0}, method="task-vector")
    assert not (tmp_path / "safe").exists()


def test_hdr_other_base_rejected(tmp_path: Path) -> None:
    first = build_tiny_model("llama", tmp_path / "first", seed=0)
    second = build_tiny_model("llama", tmp_path / "second", seed=1)
    harm = write_toy_harm_vector(first, tmp_path / "harm", quantised_harm(first))
    first_hash, second_hash = resolve_model(first).content_hash, resolve_model(second).content_hash
    with pytest.raises(ProvenanceError, match=f"{first_hash}.*{second_hash}"):
        remove_harm_direction(second, harm, out=tmp_path / "safe")
    assert not (tmp_path / "safe").exists()


def test_hdr_sft_scenario_allowed(tmp_path: Path) -> None:
    first = build_tiny_model("llama", tmp_path / "first", seed=0)
    second = build_tiny_model("llama", tmp_path / "second", seed=1)
    harm = write_toy_harm_vector(first, tmp_path / "harm", quantised_harm(first))
    record = remove_harm_direction(second, harm, out=tmp_path / "safe", scenario="sft")
    assert record["scenario"] == "sft"


def test_hdr_edit_target(tiny_model_dir: Path, tmp_path: Path) -> None:
    from editsafe.locate import locate_edit

    patch = rank_one_patch(tiny_model_dir, 2)
    edit = write_edit_folder(tiny_model_dir, tmp_path / "edit", [patch])
    region = set(locate_edit(None, edit).region)
    taus = quantised_harm(tiny_model_dir, seed=7)
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", taus)
    record = remove_harm_direction(edit, harm, out=tmp_path / "safe", region=region)
    with TensorSource(resolve_model(edit)) as source:
        target = {name: source.get(name) for name in source.names}
    expected, _ = hand_hdr(target, taus, file_order(tiny_model_dir), masked_names(tiny_model_dir, region), 10)
    written = read_all(tmp_path / "safe")
    for name in target:
        assert bit_identical(written[name], expected[name]), name
    assert record["scenario"] == "edited"
    assert record["region"] == [1, 2, 3]
    assert record["target"]["kind"] == "edit"


def test_hdr_output_loads_with_transformers(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", quantised_harm(tiny_model_dir))
    remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe", include_embeddings=True)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "safe")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "safe")
    written = read_all(tmp_path / "safe")
    for name, value in model.state_dict().items():
        if name in written:
            assert torch.equal(value, written[name]), name
    manifest = json.loads((tmp_path / "safe" / "editsafe.json").read_text())
    assert manifest["kind"] == "safe-model"
    assert manifest["icv"] is None
    assert set(manifest["hdr"]) >= {"method", "k", "lambda", "changed_entries", "threshold"}
    assert tokenizer.chat_template is not None


def test_hdr_tied_head_changed_once(tmp_path: Path) -> None:
    folder = build_tiny_model("gpt2", tmp_path / "gpt2")
    with TensorSource(resolve_model(folder)) as source:
        assert source.tied_head == "lm_head.weight"
    taus = quantised_harm(folder)
    harm = write_toy_harm_vector(folder, tmp_path / "harm", taus)
    remove_harm_direction(folder, harm, out=tmp_path / "safe", method="task-vector", include_embeddings=True)
    written = read_all(tmp_path / "safe")
    target = read_all(folder)
    assert "lm_head.weight" not in written
    assert torch.equal(written["transformer.wte.weight"], target["transformer.wte.weight"] - LAMBDA * taus["transformer.wte.weight"])


def test_hdr_existing_output_rejected(tiny_model_dir: Path, tmp_path: Path) -> None:
    harm = write_toy_harm_vector(tiny_model_dir, tmp_path / "harm", quantised_harm(tiny_model_dir))
    (tmp_path / "safe").mkdir()
    (tmp_path / "safe" / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        remove_harm_direction(tiny_model_dir, harm, out=tmp_path / "safe")


def test_task_vector_from_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    taus = quantised_harm(tiny_model_dir)
    target = read_all(tiny_model_dir)
    name = next(iter(taus))
    harmful = copy_with_changes(tiny_model_dir, tmp_path / "harmful", {name: target[name] + taus[name]})
    vector = compute_task_vector(tiny_model_dir, harmful, out=tmp_path / "harm")
    assert vector.names == [name]
    assert torch.equal(vector.get(name), (target[name] + taus[name]) - target[name])
    assert load_harm_vector(tmp_path / "harm").base_hash == resolve_model(tiny_model_dir).content_hash
    streamed = remove_harm_direction(tiny_model_dir, harmful, base=tiny_model_dir, out=tmp_path / "from-model", include_embeddings=True)
    stored = remove_harm_direction(tiny_model_dir, tmp_path / "harm", out=tmp_path / "from-folder", include_embeddings=True)
    assert streamed["hdr"]["changed_entries"] == stored["hdr"]["changed_entries"]
    first, second = read_all(tmp_path / "from-model"), read_all(tmp_path / "from-folder")
    for key in first:
        assert bit_identical(first[key], second[key]), key
