"""Utility metrics on local files: perplexity on a text and accuracy on multiple-choice questions.

Perplexity: the text is tokenized once and cut into consecutive windows of
``context_length`` tokens. Within each window every token after the first is
scored given the tokens before it, and

    perplexity = exp(− Σ log p(t_i | window prefix) / number of scored tokens).

Windows do not overlap, so the first token of each window is not scored and
tokens near a window start see little context: the figure is comparable
between models scored with the same settings, not with other tools' figures.

Multiple choice (ARC/MMLU style): a JSON Lines file with ``question``,
``choices`` (a list of strings) and ``answer`` (the index, a letter A, B, ...
or the choice's text). Each choice is scored as the summed log-probability of
" {choice}" after "Question: {question}\\nAnswer:"; the prediction is the
highest score (``accuracy``) or the highest score per token
(``accuracy_norm``).
"""

from __future__ import annotations

import logging
import math
import os
import string
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from editsafe.errors import ConfigError, DataError
from editsafe.evaluation.metrics import wilson_interval
from editsafe.evaluation.scoring import continuation_log_probs, encode
from editsafe.io import read_jsonl

logger = logging.getLogger(__name__)


def perplexity(
    model: Any,
    tokenizer: Any,
    text_path: str | os.PathLike[str],
    *,
    context_length: int = 512,
    max_tokens: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Return ``perplexity``, ``tokens`` (scored) and the settings for a UTF-8 text file."""
    path = Path(text_path)
    if not path.is_file():
        raise DataError(f"{path}: text file not found")
    if context_length < 2:
        raise ConfigError(f"context_length must be at least 2, got {context_length}")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    if limit and context_length > limit:
        raise ConfigError(f"context_length {context_length} exceeds the model's {limit} positions; lower it")

    tokens = encode(tokenizer, path.read_text(encoding="utf-8"))
    if max_tokens is not None:
        tokens = tokens[:max_tokens]
    windows = [tokens[start:start + context_length] for start in range(0, len(tokens), context_length)]
    windows = [window for window in windows if len(window) >= 2]
    if not windows:
        raise DataError(f"{path}: fewer than 2 tokens; perplexity needs more text")

    total = 0.0
    scored = 0
    for start in tqdm(range(0, len(windows), batch_size), desc="perplexity", unit="batch", disable=not progress):
        batch = windows[start:start + batch_size]
        total += float(continuation_log_probs(model, tokenizer.pad_token_id, [(w[:1], w[1:]) for w in batch]).sum())
        scored += sum(len(window) - 1 for window in batch)
    return {
        "perplexity": math.exp(-total / scored), "tokens": scored, "path": str(path),
        "context_length": context_length, "max_tokens": max_tokens,
    }


def multiple_choice_accuracy(
    model: Any,
    tokenizer: Any,
    path: str | os.PathLike[str],
    *,
    limit: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Return ``accuracy`` and ``accuracy_norm`` (with Wilson intervals) on a multiple-choice JSONL file."""
    source = Path(path)
    questions = [_parse_question(record, f"{source}: record {index + 1}") for index, record in enumerate(read_jsonl(source))]
    if limit is not None:
        questions = questions[:limit]
    if not questions:
        raise DataError(f"{source}: no questions")

    correct = 0
    correct_norm = 0
    for start in tqdm(range(0, len(questions), batch_size), desc="multiple choice", unit="batch", disable=not progress):
        batch = questions[start:start + batch_size]
        pairs = []
        for question, choices, _ in batch:
            context = encode(tokenizer, f"Question: {question}\nAnswer:")
            pairs.extend((context, encode(tokenizer, f" {choice}")) for choice in choices)
        scores = continuation_log_probs(model, tokenizer.pad_token_id, pairs).tolist()
        offset = 0
        for _, choices, answer in batch:
            choice_scores = scores[offset:offset + len(choices)]
            lengths = [len(pairs[offset + i][1]) for i in range(len(choices))]
            offset += len(choices)
            correct += int(max(range(len(choices)), key=lambda i: choice_scores[i]) == answer)
            correct_norm += int(max(range(len(choices)), key=lambda i: choice_scores[i] / lengths[i]) == answer)

    n = len(questions)
    return {
        "n": n, "accuracy": correct / n, "accuracy_ci": list(wilson_interval(correct, n)),
        "accuracy_norm": correct_norm / n, "accuracy_norm_ci": list(wilson_interval(correct_norm, n)),
        "path": str(source),
    }


def _parse_question(record: dict[str, Any], location: str) -> tuple[str, list[str], int]:
    question, choices, answer = record.get("question"), record.get("choices"), record.get("answer")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{location}: missing or empty 'question'")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError(f"{location}: 'choices' must be a list of at least two non-empty strings")
    if isinstance(answer, bool):
        answer = None
    if isinstance(answer, int) and 0 <= answer < len(choices):
        return question, choices, answer
    if isinstance(answer, str):
        letters = string.ascii_uppercase[:len(choices)]
        if len(answer.strip()) == 1 and answer.strip().upper() in letters:
            return question, choices, letters.index(answer.strip().upper())
        if answer in choices:
            return question, choices, choices.index(answer)
    raise DataError(
        f"{location}: answer {answer!r} is invalid; give an index 0..{len(choices) - 1}, a letter or the choice text"
    )
