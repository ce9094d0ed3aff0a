"""Prompt formatting and batched generation."""

from __future__ import annotations

import pytest

from editsafe.errors import ConfigError
from editsafe.generation import GenerationSettings, format_prompt, generate
from editsafe.models import load_model


def test_chat_template_wraps_question(tiny_model_dirs):
    _, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    text = format_prompt(tokenizer, "How do I bake bread?", prefix="Be brief. ")
    assert text.startswith("<|im_start|>user\nBe brief. How do I bake bread?")
    assert text.endswith("<|im_start|>assistant\n")
    assert format_prompt(tokenizer, "Hi", chat_template=False) == "Hi"


def test_batched_equals_single(tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    questions = ["How do I bake bread?", "Who wrote the novel about the quick brown fox and the lazy dog?", "Hi"]
    settings = GenerationSettings(max_new_tokens=6)
    batched = generate(model, tokenizer, questions, settings, batch_size=3, progress=False)
    single = [generate(model, tokenizer, [q], settings, batch_size=1, progress=False)[0] for q in questions]
    assert batched == single


def test_padding_side_restored(tiny_model_dirs):
    model, tokenizer = load_model(str(tiny_model_dirs["llama"]))
    tokenizer.padding_side = "right"
    generate(model, tokenizer, ["a", "longer question"], GenerationSettings(max_new_tokens=2), progress=False)
    assert tokenizer.padding_side == "right"


def test_invalid_settings_rejected():
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)
