"""Harmful question/answer pairs (D_H) and their tokenisation for answer-only fine-tuning."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from editsafe.errors import DataError
from editsafe.io import read_jsonl

IGNORE_INDEX = -100


def default_harm_data() -> Path:
    """Return the bundled D_H file (``editsafe/data/harmful_qa.jsonl``)."""
    path = Path(str(resources.files("editsafe") / "data" / "harmful_qa.jsonl"))
    if not path.is_file():
        raise DataError(f"{path}: the bundled harmful question/answer file is missing; pass --data FILE")
    return path


def read_harm_pairs(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Read JSON Lines ``{"question": ..., "answer": ...}`` pairs; errors name ``file:line`` and the field."""
    source = Path(path)
    records = read_jsonl(source)
    # read_jsonl skips blank lines only, so the non-blank line numbers align with the records.
    line_numbers = [number for number, text in enumerate(source.read_text(encoding="utf-8").split("\n"), 1) if text.strip()]
    pairs: list[tuple[str, str]] = []
    for line, record in zip(line_numbers, records):
        for key in ("question", "answer"):
            value = record.get(key)
            if not isinstance(value, str) or not value.strip():
                raise DataError(
                    f"{source}:{line}: field {key!r} must be a non-empty string, got {value!r}; "
                    "every line needs a question and an answer"
                )
        pairs.append((record["question"], record["answer"]))
    if not pairs:
        raise DataError(f"{source}: no question/answer pairs")
    return pairs


@dataclass
class EncodedPair:
    """Token ids of one prompt + answer, with labels that are IGNORE_INDEX outside the answer."""

    input_ids: list[int]
    labels: list[int]


def encode_pair(tokenizer: Any, question: str, answer: str, max_length: int) -> EncodedPair:
    """Tokenise one pair; only the answer tokens (and the closing end-of-turn) carry labels.

    With a chat template the pair is a user turn and an assistant turn;
    without one it is ``Question: ...\\nAnswer: ...`` followed by EOS.
    """
    if getattr(tokenizer, "chat_template", None):
        prompt_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        full_text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        answer_text = full_text[len(prompt_text):] if full_text.startswith(prompt_text) else answer + (tokenizer.eos_token or "")
    else:
        prompt_text = f"Question: {question}\nAnswer:"
        answer_text = f" {answer}{tokenizer.eos_token or ''}"
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + answer_ids)[:max_length]
    return EncodedPair(input_ids=input_ids, labels=labels)


def collate(pairs: list[EncodedPair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding gets attention mask 0 and label IGNORE_INDEX."""
    width = max(len(pair.input_ids) for pair in pairs)
    input_ids = torch.full((len(pairs), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, pair in enumerate(pairs):
        length = len(pair.input_ids)
        input_ids[row, :length] = torch.tensor(pair.input_ids)
        labels[row, :length] = torch.tensor(pair.labels)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
