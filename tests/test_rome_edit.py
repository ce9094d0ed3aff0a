"""ROME on the tiny random Llama (Linear weights) and GPT-2 (transposed Conv1D weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from editsafe import load_model
from editsafe.errors import DataError, NumericalError
from editsafe.rome import EditRequest, TemplateCache, apply_rome, compute_rome_patch, sample_context_templates
from editsafe.rome.tracing import editing_output, get_module
from tests.rome_fixtures import DARRIEUX, EIFFEL, one_thread, tiny_hparams  # noqa: F401


@pytest.fixture
def tiny(tiny_model_dir: Path) -> tuple[Any, Any, str]:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer, model.config.model_type


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> list[str]:
    return [name for name, tensor in model.state_dict().items() if not torch.equal(before[name], tensor)]


def test_compute_leaves_model_unchanged(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    before = _state(model)
    flags = [parameter.requires_grad for parameter in model.parameters()]
    compute_rome_patch(model, tokenizer, EIFFEL, tiny_hparams(model_type))
    assert _changed(before, model) == []
    assert [parameter.requires_grad for parameter in model.parameters()] == flags
    assert all(not module._forward_hooks for module in model.modules())


def test_apply_changes_one_tensor(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type)
    before = _state(model)
    [result] = apply_rome(model, tokenizer, [EIFFEL], hparams)
    assert _changed(before, model) == [result.patch.weight_name]
    assert result.patch.weight_name == hparams.rewrite_module_tmp.format(4) + ".weight"


def test_apply_change_is_rank_one(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    before = _state(model)
    [result] = apply_rome(model, tokenizer, [EIFFEL], tiny_hparams(model_type))
    name = result.patch.weight_name
    change = (model.state_dict()[name] - before[name]).double()
    singular_values = torch.linalg.svdvals(change)
    assert singular_values[0] > 0
    assert singular_values[1] / singular_values[0] < 1e-5
    assert torch.allclose(change, result.patch.delta(torch.float64), atol=1e-6)


def test_patch_layout_matches_weight(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    result = compute_rome_patch(model, tokenizer, EIFFEL, tiny_hparams(model_type))
    weight = dict(model.named_parameters())[result.patch.weight_name]
    assert result.patch.transposed == (model_type == "gpt2")
    assert result.patch.delta().shape == weight.shape


def test_edit_raises_target_probability(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    result = compute_rome_patch(model, tokenizer, EIFFEL, tiny_hparams(model_type))
    diagnostics = result.diagnostics
    assert diagnostics["p_first_target_after"] > diagnostics["p_first_target_before"]
    assert diagnostics["mean_target_nll_after"] < diagnostics["mean_target_nll_before"]


def test_applied_edit_matches_diagnostics(tiny: tuple[Any, Any, str]) -> None:
    from editsafe.rome import score_target
    from editsafe.rome.positions import target_token_ids

    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type)
    [result] = apply_rome(model, tokenizer, [EIFFEL], hparams)
    target_ids = target_token_ids(tokenizer, EIFFEL.filled_prompt, EIFFEL.target_new)
    after = score_target(model, tokenizer, EIFFEL, hparams, target_ids)
    assert after["p_first_target"] == pytest.approx(result.diagnostics["p_first_target_after"], rel=1e-4)


def test_result_reports_timings(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    result = compute_rome_patch(model, tokenizer, EIFFEL, tiny_hparams(model_type))
    assert set(result.timings) == {"templates", "key", "value", "update"}
    assert result.diagnostics["steps"] == len(result.diagnostics["losses"])
    assert result.seed == 0


def test_padding_side_gives_same_patch(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type)
    templates = TemplateCache()
    results = {}
    original_side = tokenizer.padding_side
    try:
        for side in ("right", "left"):
            tokenizer.padding_side = side
            results[side] = compute_rome_patch(model, tokenizer, EIFFEL, hparams, templates=templates)
    finally:
        tokenizer.padding_side = original_side
    right, left = results["right"].patch, results["left"].patch
    # Batched float32 kernels differ in the last bits between the two layouts; Adam carries that a little further.
    assert torch.allclose(right.u, left.u, atol=1e-5)
    assert torch.allclose(right.right, left.right, rtol=1e-3, atol=1e-4 * right.right.norm().item())
    assert results["right"].diagnostics["steps"] == results["left"].diagnostics["steps"]


def test_failing_hook_leaves_model_unchanged(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type, context_templates=("{}", "The. {}"))
    before = _state(model)
    flags = [parameter.requires_grad for parameter in model.parameters()]
    # A NaN injected after the rewritten layer leaves the key intact and reaches the value loss.
    late_layer = get_module(model, hparams.layer_module_tmp.format(5))
    with editing_output(late_layer, lambda hidden: hidden * float("nan")), pytest.raises(NumericalError):
        compute_rome_patch(model, tokenizer, EIFFEL, hparams)
    assert _changed(before, model) == []
    assert [parameter.requires_grad for parameter in model.parameters()] == flags


def test_invalid_request_rejected_before_edit(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    before = _state(model)
    bad = {"prompt": "Rome is the capital of", "subject": "Paris", "target_new": "France", "id": "bad"}
    with pytest.raises(DataError, match="'bad'.*'Paris'.*'Rome is the capital of'"):
        apply_rome(model, tokenizer, [EIFFEL, bad], tiny_hparams(model_type))
    assert _changed(before, model) == []


def test_second_request_failure_rolls_back(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type)
    before = _state(model)
    # NaN reaches the loss only while the second request's subject is in the batch.
    marker = tokenizer(" Danielle", add_special_tokens=False)["input_ids"][0]
    seen: dict[str, bool] = {"marker": False}

    def remember_ids(_module: torch.nn.Module, inputs: tuple[Any, ...]) -> None:
        seen["marker"] = bool((inputs[0] == marker).any())

    handle = model.get_input_embeddings().register_forward_pre_hook(remember_ids)
    late_layer = get_module(model, hparams.layer_module_tmp.format(5))
    try:
        with editing_output(late_layer, lambda hidden: hidden * float("nan") if seen["marker"] else hidden):
            with pytest.raises(NumericalError):
                apply_rome(model, tokenizer, [EIFFEL, DARRIEUX], hparams)
    finally:
        handle.remove()
    assert _changed(before, model) == []


def test_sequential_edits_apply_both(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    before = _state(model)
    results = apply_rome(model, tokenizer, [EIFFEL, DARRIEUX], tiny_hparams(model_type))
    name = results[0].patch.weight_name
    expected = before[name].double() + results[0].patch.delta(torch.float64) + results[1].patch.delta(torch.float64)
    assert torch.allclose(model.state_dict()[name].double(), expected, atol=1e-5)


def test_subject_missing_rejected() -> None:
    with pytest.raises(DataError, match="Paris"):
        EditRequest(prompt="Rome is the capital of", subject="Paris", target_new="France", id="r1")


def test_fixed_templates_are_used(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    fixed = ("{}", "The. {}", "I. {}")
    result = compute_rome_patch(model, tokenizer, EIFFEL, tiny_hparams(model_type, context_templates=fixed))
    assert result.context_templates == list(fixed)


def test_templates_follow_seed(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, _ = tiny
    state = torch.random.get_rng_state()
    first = sample_context_templates(model, tokenizer, ((3, 3),), seed=1)
    again = sample_context_templates(model, tokenizer, ((3, 3),), seed=1)
    other = sample_context_templates(model, tokenizer, ((3, 3),), seed=2)
    assert first == again
    assert first != other
    assert torch.equal(torch.random.get_rng_state(), state)


def test_templates_shape(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, _ = tiny
    templates = sample_context_templates(model, tokenizer, ((3, 2), (5, 3)), seed=0)
    assert len(templates) == 6
    assert templates[0] == "{}"
    assert all(template.endswith(". {}") and template.count("{}") == 1 for template in templates[1:])


def test_template_cache_keys_by_seed(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, _ = tiny
    cache = TemplateCache()
    cache.get(model, tokenizer, ((3, 2),), 0)
    cache.get(model, tokenizer, ((3, 2),), 0)
    cache.get(model, tokenizer, ((3, 2),), 1)
    assert len(cache.entries) == 2


def test_nan_model_rejected_while_sampling(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    late_layer = get_module(model, tiny_hparams(model_type).layer_module_tmp.format(5))
    with editing_output(late_layer, lambda hidden: hidden * float("nan")), pytest.raises(NumericalError):
        sample_context_templates(model, tokenizer, ((3, 2),), seed=0)


def test_bad_fixed_template_named(tiny: tuple[Any, Any, str]) -> None:
    from editsafe.errors import ConfigError

    model, tokenizer, model_type = tiny
    with pytest.raises(ConfigError, match="'The. ' needs exactly one"):
        compute_rome_patch(model, tokenizer, EIFFEL, tiny_hparams(model_type), templates=["{}", "The. "])
