"""Token positions of the subject and the targets, independent of padding.

Every prompt is tokenized on its own, its positions are found from the
character offsets of its own tokens, and only then are the prompts padded
into a batch. A :class:`PaddedBatch` records each row's shift, so left and
right padding select the same tokens, and position ids are counted over the
real tokens only, so absolute position embeddings (GPT-2) see the same
positions under either padding side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from editsafe.errors import DataError
from editsafe.rome.requests import PLACEHOLDER, EditRequest


@dataclass(frozen=True)
class EncodedPrompt:
    """A tokenized prompt with the index of its fact token and, optionally, appended target tokens.

    ``target_positions[j]`` is the position whose next-token logits predict
    ``target_ids[j]``.
    """

    input_ids: tuple[int, ...]
    fact_index: int
    target_ids: tuple[int, ...] = ()
    target_positions: tuple[int, ...] = ()


@dataclass
class PaddedBatch:
    """Padded model inputs plus the shift that padding added to each row's positions."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    shifts: list[int]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Return the keyword arguments for the model's forward call."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids}

    def at(self, row: int, position: int) -> int:
        """Return the padded column of an unpadded ``position`` in ``row``."""
        return position + self.shifts[row]


def target_token_ids(tokenizer: Any, prompt_text: str, target: str) -> tuple[int, ...]:
    """Return the tokens of ``target`` as they follow ``prompt_text`` in running text.

    The target is preceded by a space unless it starts with one, as a word
    after a prompt is. When the prompt's own tokens are a prefix of the
    tokenized ``prompt + target``, the ids are the rest of that sequence, so
    tokenizers that mark word starts (such as SentencePiece) get their usual
    form. Otherwise the target is tokenized alone. No special tokens are added.
    """
    spaced = target if target.startswith(" ") else " " + target
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    joined_ids = tokenizer(prompt_text + spaced, add_special_tokens=False)["input_ids"]
    if joined_ids[: len(prompt_ids)] == prompt_ids and len(joined_ids) > len(prompt_ids):
        return tuple(joined_ids[len(prompt_ids):])
    alone = tokenizer(spaced, add_special_tokens=False)["input_ids"]
    if not alone:
        raise DataError(f"target {target!r} tokenizes to no tokens")
    return tuple(alone)


def encode_prompt(
    tokenizer: Any,
    request: EditRequest,
    fact_token: str,
    *,
    context_template: str = PLACEHOLDER,
    subject_template: str | None = None,
    target_ids: tuple[int, ...] = (),
) -> EncodedPrompt:
    """Tokenize ``context_template`` filled with the request's prompt and find the fact token.

    ``subject_template`` replaces the request's prompt (it must contain ``{}``
    for the subject), as for the KL prompt ``"{} is a"``. With ``target_ids``
    all but the last target token are appended, so that the logits at
    ``target_positions`` predict each target token in turn.
    """
    if subject_template is not None:
        before, _, after = subject_template.partition(PLACEHOLDER)
    else:
        before, after = request.prompt_parts()
    context_before, _, context_after = context_template.partition(PLACEHOLDER)
    subject = request.subject
    text = context_before + before + subject + after + context_after
    subject_start = len(context_before) + len(before)
    subject_end = subject_start + len(subject)

    encoding = tokenizer(text, return_offsets_mapping=True)
    prompt_ids = list(encoding["input_ids"])
    offsets = [tuple(span) for span in encoding["offset_mapping"]]
    fact_index = _fact_index(fact_token, prompt_ids, offsets, subject_start, subject_end, text)

    if not target_ids:
        return EncodedPrompt(tuple(prompt_ids), fact_index)
    input_ids = prompt_ids + list(target_ids[:-1])
    first = len(prompt_ids) - 1
    positions = tuple(range(first, first + len(target_ids)))
    return EncodedPrompt(tuple(input_ids), fact_index, tuple(target_ids), positions)


def _fact_index(
    fact_token: str, ids: list[int], offsets: list[tuple[int, int]], start: int, end: int, text: str
) -> int:
    if fact_token == "last":
        return len(ids) - 1
    # Strip spaces the subject may carry, so the character looked up is a visible one.
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    character = start if fact_token == "subject_first" else end - 1
    for index, (token_start, token_end) in enumerate(offsets):
        if token_start <= character < token_end:
            return index
    raise DataError(f"no token covers character {character} of {text!r}; the tokenizer returned no usable offsets")


def pad_batch(sequences: list[tuple[int, ...]], pad_token_id: int, padding_side: str,
              device: torch.device) -> PaddedBatch:
    """Pad token sequences on ``padding_side`` ("left" or "right") into one batch."""
    if padding_side not in ("left", "right"):
        raise DataError(f"padding side {padding_side!r} is invalid; use 'left' or 'right'")
    width = max(len(sequence) for sequence in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    shifts = []
    for row, sequence in enumerate(sequences):
        shift = width - len(sequence) if padding_side == "left" else 0
        input_ids[row, shift:shift + len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention_mask[row, shift:shift + len(sequence)] = 1
        shifts.append(shift)
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    return PaddedBatch(input_ids.to(device), attention_mask.to(device), position_ids.to(device), shifts)


def pad_token_id(tokenizer: Any) -> int:
    """Return the tokenizer's pad id, else its EOS id, else 0 (padded positions are masked anyway)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
