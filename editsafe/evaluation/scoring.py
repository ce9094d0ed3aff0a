"""Teacher-forced log-probabilities of continuations, batched and independent of padding.

Shared by the refusal margin and the multiple-choice accuracy: both need
log p(continuation | context) = Σ_j log p(c_j | context, c_<j) for many
(context, continuation) pairs of token ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def continuation_log_probs(model: Any, pad_token_id: int | None, pairs: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Return the summed log-probability of each continuation after its context (float64, one per pair).

    Rows are right-padded so that real tokens keep positions 0..n-1, and each
    row's scores are read only at its real positions, so the result does not
    depend on which pairs share a batch (up to float rounding). Contexts must
    have at least one token. Runs without gradients.
    """
    device = next(model.parameters()).device
    rows = [context + continuation for context, continuation in pairs]
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id if pad_token_id is not None else 0, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row_index, row in enumerate(rows):
        input_ids[row_index, :len(row)] = torch.tensor(row)
        attention_mask[row_index, :len(row)] = 1

    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
    log_probs = torch.log_softmax(logits.float(), dim=-1)

    # The continuation token at position p is predicted by the logits at p - 1.
    totals = torch.zeros(len(rows), dtype=torch.float64)
    for row_index, (context, continuation) in enumerate(pairs):
        positions = torch.arange(len(context) - 1, len(context) + len(continuation) - 1, device=log_probs.device)
        targets = torch.tensor(continuation, device=log_probs.device)
        totals[row_index] = log_probs[row_index, positions, targets].double().sum().cpu()
    return totals


def encode(tokenizer: Any, text: str) -> list[int]:
    """Return the token ids of ``text`` without special tokens."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
