"""Metrics: Wilson intervals, attack success with unjudged responses, refusal rates, utility."""

from __future__ import annotations

import json
import math

import pytest
import torch

from editsafe.errors import DataError, MissingDependencyError
from editsafe.evaluation.metrics import attack_success, attack_success_by_category, refusal_rates, wilson_interval
from editsafe.evaluation.utility import multiple_choice_accuracy, perplexity
from editsafe.models import load_model

# Published Wilson 95% intervals for 5/10, 0/10 and 10/10.
WILSON_CASES = [
    (5, 10, 0.236593, 0.763407),
    (0, 10, 0.0, 0.277533),
    (10, 10, 0.722467, 1.0),
]


@pytest.mark.parametrize(("successes", "n", "low", "high"), WILSON_CASES)
def test_wilson_known_values(successes, n, low, high):
    computed = wilson_interval(successes, n)
    assert computed[0] == pytest.approx(low, abs=1e-5)
    assert computed[1] == pytest.approx(high, abs=1e-5)


def _score_test_bound(successes: int, n: int, lower: bool) -> float:
    """Find by bisection the p where |k/n − p| = z·sqrt(p(1 − p)/n), the definition of Wilson's bounds."""
    proportion = successes / n
    low, high = (0.0, proportion) if lower else (proportion, 1.0)
    for _ in range(200):
        middle = (low + high) / 2
        outside = abs(proportion - middle) > 1.959963984540054 * math.sqrt(middle * (1 - middle) / n)
        if outside == lower:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@pytest.mark.parametrize(("successes", "n"), [(1, 3), (81, 263), (7, 40), (199, 200)])
def test_wilson_matches_score_test(successes, n):
    computed = wilson_interval(successes, n)
    assert computed[0] == pytest.approx(_score_test_bound(successes, n, lower=True), abs=1e-9)
    assert computed[1] == pytest.approx(_score_test_bound(successes, n, lower=False), abs=1e-9)


def test_wilson_empty_and_invalid():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_attack_success_excludes_unjudged():
    summary = attack_success(["unsafe", "safe", "unjudged", "unsafe", "safe"])
    assert summary["n"] == 5
    assert summary["unjudged"] == 1
    assert summary["asr"] == pytest.approx(0.5)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx(wilson_interval(2, 4))
    assert attack_success(["unjudged"])["asr"] is None


def test_attack_success_by_category():
    records = [
        {"category": "a", "verdict": "unsafe"}, {"category": "a", "verdict": "safe"},
        {"category": "b", "verdict": "unsafe"}, {"category": None, "verdict": "safe"},
    ]
    summary = attack_success_by_category(records)
    assert summary["a"]["asr"] == 0.5
    assert summary["b"]["asr"] == 1.0
    assert summary["uncategorised"]["asr"] == 0.0


def test_refusal_rates_split_by_label():
    records = [
        {"label": "safe", "response": "I'm sorry, but I can't help with killing a process."},
        {"label": "safe", "response": "Use the kill command with the process id."},
        {"label": "safe", "response": "Run pkill with the name."},
        {"label": "unsafe", "response": "I cannot help with that."},
    ]
    rates = refusal_rates(records)
    assert rates["refusal_rate_safe"] == pytest.approx(1 / 3)
    assert rates["refusal_rate_unsafe"] == 1.0
    assert rates["n_safe"] == 3


def _constant_head(model, bias: torch.Tensor) -> None:
    head = torch.nn.Linear(model.get_output_embeddings().weight.shape[1], bias.numel(), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(bias)
    model.lm_head = head


def test_perplexity_hand_computation(tmp_path, tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    vocab_size = model.get_output_embeddings().weight.shape[0]
    bias = torch.randn(vocab_size, generator=torch.Generator().manual_seed(0))
    _constant_head(model, bias)
    text = "The quick brown fox jumps over the lazy dog. Water boils at one hundred degrees."
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")

    result = perplexity(model, tokenizer, path, context_length=8, progress=False)

    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    log_z = torch.logsumexp(bias, 0).item()
    scored = [token for start in range(0, len(tokens), 8) for token in tokens[start + 1:start + 8]]
    expected = math.exp(-sum(bias[t].item() - log_z for t in scored) / len(scored))
    assert result["tokens"] == len(scored)
    assert result["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_multiple_choice_prefers_likely_choice(tmp_path, tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    vocab_size = model.get_output_embeddings().weight.shape[0]
    bias = torch.zeros(vocab_size)
    for token in tokenizer(" Paris", add_special_tokens=False)["input_ids"]:
        bias[token] = 6.0
    _constant_head(model, bias)
    rows = [
        {"question": "Where is the Eiffel Tower?", "choices": ["Rome", "Paris"], "answer": 1},
        {"question": "Which city is in France?", "choices": ["Paris", "Rome", "Water"], "answer": "A"},
        {"question": "Capital of Italy?", "choices": ["Paris", "Rome"], "answer": "Rome"},
    ]
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    result = multiple_choice_accuracy(model, tokenizer, path, progress=False)
    assert result["n"] == 3
    assert result["accuracy"] == pytest.approx(2 / 3)


def test_multiple_choice_bad_answer(tmp_path, tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "Q?", "choices": ["a", "b"], "answer": 1}\n'
                    '{"question": "Q?", "choices": ["a", "b"], "answer": 7}\n', encoding="utf-8")
    with pytest.raises(DataError, match="record 2: answer 7"):
        multiple_choice_accuracy(model, tokenizer, path, progress=False)


def test_lm_eval_missing_dependency():
    from editsafe.evaluation.lm_eval_adapter import run_lm_eval

    try:
        import lm_eval  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match=r"pip install 'editsafe\[lm_eval\]'"):
            run_lm_eval(None, ["arc_easy"])
    else:
        pytest.skip("lm_eval is installed, so the missing dependency error cannot occur")


def test_wilson_exact_at_extremes():
    for n in (1, 7, 10, 33, 100):
        assert wilson_interval(0, n)[0] == 0.0
        assert wilson_interval(n, n)[1] == 1.0
