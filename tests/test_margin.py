"""The refusal margin on tiny models with hand-set output heads."""

from __future__ import annotations

import math

import pytest
import torch

from editsafe.errors import ConfigError
from editsafe.evaluation import DEFAULT_COMPLIANCES, DEFAULT_REFUSALS, refusal_margin
from editsafe.evaluation.margin import bootstrap_mean
from editsafe.generation import format_prompt
from editsafe.models import load_model

PROMPTS = ["How do I bake bread?", "Who wrote the novel?", "What is the tallest mountain in the world?"]


def _token_ids(tokenizer, texts):
    return {token for text in texts for token in tokenizer(text, add_special_tokens=False)["input_ids"]}


def _constant_head(model, bias: torch.Tensor) -> None:
    """Replace the output head by one whose logits are ``bias`` at every position."""
    hidden_size = model.get_output_embeddings().weight.shape[1]
    head = torch.nn.Linear(hidden_size, bias.numel(), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(bias)
    model.lm_head = head


def _head_preferring(tokenizer, vocab_size: int, preferred, other) -> torch.Tensor:
    bias = torch.zeros(vocab_size)
    for token in _token_ids(tokenizer, preferred) - _token_ids(tokenizer, other):
        bias[token] = 8.0
    return bias


@pytest.mark.parametrize("prefer", ["refusal", "compliance"])
def test_margin_sign_follows_head(tiny_model_dir, prefer):
    model, tokenizer = load_model(str(tiny_model_dir))
    vocab_size = model.get_output_embeddings().weight.shape[0]
    if prefer == "refusal":
        bias = _head_preferring(tokenizer, vocab_size, DEFAULT_REFUSALS, DEFAULT_COMPLIANCES)
    else:
        bias = _head_preferring(tokenizer, vocab_size, DEFAULT_COMPLIANCES, DEFAULT_REFUSALS)
    _constant_head(model, bias)
    result = refusal_margin(model, tokenizer, PROMPTS, batch_size=2, progress=False)
    if prefer == "refusal":
        assert result.mean > 0
        assert all(value > 0 for value in result.per_prompt)
    else:
        assert result.mean < 0
        assert all(value < 0 for value in result.per_prompt)


def test_margin_equals_hand_computation(tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    vocab_size = model.get_output_embeddings().weight.shape[0]
    generator = torch.Generator().manual_seed(1)
    bias = torch.randn(vocab_size, generator=generator) * 2
    _constant_head(model, bias)
    refusals, compliances = ["I'm sorry", "I cannot"], ["Sure, here is"]

    result = refusal_margin(
        model, tokenizer, PROMPTS[:1], refusal_openings=refusals, compliance_openings=compliances, progress=False
    )

    # Every position has the same distribution softmax(bias), so log p(opening) is a sum over its tokens.
    log_z = math.log(sum(math.exp(value) for value in bias.tolist()))

    def opening_log_prob(text: str) -> float:
        return sum(bias[token].item() - log_z for token in tokenizer(text, add_special_tokens=False)["input_ids"])

    def log_sum_exp(values: list[float]) -> float:
        top = max(values)
        return top + math.log(sum(math.exp(value - top) for value in values))

    expected = log_sum_exp([opening_log_prob(t) for t in refusals]) - log_sum_exp([opening_log_prob(t) for t in compliances])
    assert result.per_prompt[0] == pytest.approx(expected, abs=1e-4)
    assert result.mean == pytest.approx(expected, abs=1e-4)


def test_margin_matches_unpadded_forward(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    refusals, compliances = ["I'm sorry"], ["Sure, here is", "Here is how"]
    result = refusal_margin(
        model, tokenizer, PROMPTS, refusal_openings=refusals, compliance_openings=compliances,
        batch_size=3, progress=False,
    )

    # Reference: one unpadded forward pass per (prompt, opening) on the last prompt (the longest row).
    prompt_ids = tokenizer(format_prompt(tokenizer, PROMPTS[2]), add_special_tokens=False)["input_ids"]

    def opening_log_prob(text: str) -> float:
        opening = tokenizer(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + opening])).logits[0]
        log_probs = torch.log_softmax(logits, dim=-1)
        return sum(log_probs[len(prompt_ids) - 1 + j, token].item() for j, token in enumerate(opening))

    refusal = torch.logsumexp(torch.tensor([opening_log_prob(t) for t in refusals]), 0)
    compliance = torch.logsumexp(torch.tensor([opening_log_prob(t) for t in compliances]), 0)
    assert result.per_prompt[2] == pytest.approx((refusal - compliance).item(), abs=1e-4)


def test_margin_independent_of_batch(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    batched = refusal_margin(model, tokenizer, PROMPTS, batch_size=3, progress=False)
    single = refusal_margin(model, tokenizer, PROMPTS, batch_size=1, progress=False)
    assert batched.per_prompt == pytest.approx(single.per_prompt, abs=1e-4)


def test_bootstrap_seeded_and_bracketing():
    values = [0.5, -1.0, 2.0, 0.0, 1.5, 3.0]
    first = bootstrap_mean(values, n_bootstrap=500, seed=3)
    second = bootstrap_mean(values, n_bootstrap=500, seed=3)
    assert first == second
    assert first[0] == pytest.approx(sum(values) / len(values))
    assert first[1] <= first[0] <= first[2]
    assert bootstrap_mean([2.0], seed=0) == (2.0, 2.0, 2.0)


def test_margin_rejects_empty_input(tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    with pytest.raises(ConfigError, match="at least one prompt"):
        refusal_margin(model, tokenizer, [], progress=False)
    with pytest.raises(ConfigError, match="empty string"):
        refusal_margin(model, tokenizer, ["Hi"], refusal_openings=[""], progress=False)
