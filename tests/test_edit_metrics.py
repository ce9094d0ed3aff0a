"""Edit metrics on the tiny models: oracle values, padding independence, locality agreement."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from editsafe.edit_metrics import edit_metrics, encode_pair, locality_reference, score_targets
from editsafe.errors import DataError
from editsafe.models import load_model
from editsafe.rome import EditRequest
from tests.edit_fixtures import TINY_REQUESTS, single_thread  # noqa: F401


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dirs: dict[str, Path]) -> tuple:
    return load_model(tiny_model_dirs["llama"], device="cpu")


def oracle_probabilities(model, tokenizer, prompt: str, target: str) -> list[float]:
    """Token probabilities from one unpadded forward pass per target token."""
    prompt_ids, target_ids = encode_pair(tokenizer, prompt, target)
    probabilities = []
    for index, token in enumerate(target_ids):
        context = torch.tensor([prompt_ids + target_ids[:index]])
        with torch.no_grad():
            logits = model(input_ids=context).logits[0, -1]
        probabilities.append(float(torch.softmax(logits.double(), dim=-1)[token]))
    return probabilities


def test_target_probability_matches_oracle(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[0])
    metrics = edit_metrics(model, tokenizer, request)
    expected = oracle_probabilities(model, tokenizer, request.filled_prompt, request.target_new)
    assert metrics["efficacy"]["target_probability"] == pytest.approx(math.prod(expected), rel=1e-4)
    assert metrics["efficacy"]["first_token_probability"] == pytest.approx(expected[0], rel=1e-4)


def test_generalisation_uses_paraphrases(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[0])
    metrics = edit_metrics(model, tokenizer, request)
    expected = oracle_probabilities(model, tokenizer, request.paraphrase_prompts[0], request.target_new)
    assert metrics["generalisation"]["count"] == 1
    assert metrics["generalisation"]["target_probability"] == pytest.approx(math.prod(expected), rel=1e-4)


def test_token_accuracy_counts_greedy_hits(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[1])
    [scored] = score_targets(model, tokenizer, [(request.filled_prompt, request.target_new)])
    hits = sum(predicted == target for predicted, target in zip(scored.predicted_ids, scored.target_ids))
    metrics = edit_metrics(model, tokenizer, request)
    assert metrics["efficacy"]["token_accuracy"] == hits / len(scored.target_ids)


def test_metrics_padding_side_independent(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[0])
    original_side = tokenizer.padding_side
    try:
        tokenizer.padding_side = "left"
        left = edit_metrics(model, tokenizer, request)
        tokenizer.padding_side = "right"
        right = edit_metrics(model, tokenizer, request)
    finally:
        tokenizer.padding_side = original_side
    assert left == right


def test_metrics_batch_size_independent(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[0])
    batched = edit_metrics(model, tokenizer, request)
    single = edit_metrics(model, tokenizer, request, batch_size=1)
    assert batched["efficacy"]["target_probability"] == pytest.approx(single["efficacy"]["target_probability"], rel=1e-5)
    assert batched["locality"]["agreement"] == single["locality"]["agreement"]


def test_locality_agreement_with_itself_is_one(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[0])
    metrics = edit_metrics(model, tokenizer, request, reference_model=model)
    assert metrics["locality"]["agreement"] == 1.0


def test_locality_agreement_drops_after_change(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    request = EditRequest.from_dict(TINY_REQUESTS[0])
    reference = locality_reference(model, tokenizer, request)
    head = model.get_output_embeddings().weight
    original = head.detach().clone()
    try:
        with torch.no_grad():
            head.copy_(torch.randn(head.shape, generator=torch.Generator().manual_seed(1)))
        metrics = edit_metrics(model, tokenizer, request, reference_predictions=reference)
    finally:
        with torch.no_grad():
            head.copy_(original)
    assert metrics["locality"]["agreement"] < 1.0


def test_locality_without_reference_is_none(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    metrics = edit_metrics(model, tokenizer, EditRequest.from_dict(TINY_REQUESTS[0]))
    assert metrics["locality"]["agreement"] is None
    assert 0.0 <= metrics["locality"]["answer_accuracy"] <= 1.0


def test_locality_reference_length_checked(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    with pytest.raises(DataError, match="reference predictions cover 2"):
        edit_metrics(model, tokenizer, EditRequest.from_dict(TINY_REQUESTS[0]), reference_predictions=[[1], [2]])


def test_new_beats_true_reported(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    metrics = edit_metrics(model, tokenizer, EditRequest.from_dict(TINY_REQUESTS[0]))
    efficacy = metrics["efficacy"]
    assert efficacy["new_beats_true"] == (efficacy["target_probability"] > efficacy["target_true_probability"])


def test_metrics_accept_request_record(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    from_record = edit_metrics(model, tokenizer, TINY_REQUESTS[0])
    assert from_record == edit_metrics(model, tokenizer, EditRequest.from_dict(TINY_REQUESTS[0]))


def test_sections_absent_without_prompts(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    metrics = edit_metrics(model, tokenizer, EditRequest.from_dict(TINY_REQUESTS[2]))
    assert metrics["generalisation"] is None
    assert metrics["locality"] is None


def test_metrics_keep_train_mode(tiny_llama: tuple) -> None:
    model, tokenizer = tiny_llama
    model.train()
    try:
        edit_metrics(model, tokenizer, EditRequest.from_dict(TINY_REQUESTS[2]))
        assert model.training
    finally:
        model.eval()
