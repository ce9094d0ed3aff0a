"""Efficacy, generalisation and locality of a knowledge edit.

For a prompt P and a target T with tokens t_1..t_n (T gets a leading space
when it follows the prompt as a separate word), the model gives
p_i = p(t_i | P, t_1..t_{i-1}). The measures are:

* target probability: the product p_1 · … · p_n, the probability of the whole
  target after the prompt;
* first-token probability: p_1;
* token accuracy (teacher-forced): the fraction of positions i where the
  model's most likely next token is t_i.

Efficacy applies them to the request's prompt, generalisation to each
paraphrase prompt (averaged). ``new_beats_true`` (when the request has a
``target_true``) is whether the new target is more likely than the true one.
Locality compares the model with the unedited model on prompts the edit
should leave alone. With each locality prompt's expected answer
teacher-forced, agreement is the fraction of answer positions where both
models predict the same next token. ``answer_accuracy`` is the model's own
teacher-forced accuracy on those expected answers.

Prompts and targets are tokenized as ROME tokenizes them
(:mod:`editsafe.rome.positions`), and batches are right-padded with position
ids counted over real tokens, so the tokenizer's ``padding_side`` has no
effect on which tokens are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from editsafe.errors import DataError

if TYPE_CHECKING:
    from editsafe.rome import EditRequest

DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class ScoredSequence:
    """Scores of one teacher-forced target: per-token probabilities and greedy predictions."""

    token_probabilities: list[float]
    predicted_ids: list[int]
    target_ids: list[int]

    @property
    def target_probability(self) -> float:
        product = 1.0
        for probability in self.token_probabilities:
            product *= probability
        return product

    @property
    def first_token_probability(self) -> float:
        return self.token_probabilities[0]

    @property
    def token_accuracy(self) -> float:
        hits = sum(predicted == target for predicted, target in zip(self.predicted_ids, self.target_ids))
        return hits / len(self.target_ids)


def edit_metrics(
    model: Any,
    tokenizer: Any,
    request: EditRequest | dict[str, Any],
    *,
    reference_model: Any | None = None,
    reference_predictions: list[list[int]] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Measure how well ``model`` carries the edit ``request`` and leaves other facts alone.

    Locality agreement needs the unedited model's predictions: pass
    ``reference_predictions`` from :func:`locality_reference`, computed before
    the edit was applied, or the unedited ``reference_model`` itself. Without
    either, ``locality.agreement`` is None. Returns ``{"efficacy": {...},
    "generalisation": {...} | None, "locality": {...} | None}``; the model is
    run without gradients and its train/eval mode is restored on exit.
    ``request`` may also be the ``request`` record of an edit folder's
    ``editsafe.json``.
    """
    request = _as_request(request)
    prompt = request.filled_prompt
    pairs: list[tuple[str, str]] = [(prompt, request.target_new)]
    if request.target_true:
        pairs.append((prompt, request.target_true))
    paraphrase_start = len(pairs)
    pairs.extend((paraphrase, request.target_new) for paraphrase in request.paraphrase_prompts)
    locality_start = len(pairs)
    pairs.extend((item["prompt"], item["answer"]) for item in _locality_items(request))

    scored = score_targets(model, tokenizer, pairs, batch_size=batch_size)
    new = scored[0]
    efficacy: dict[str, Any] = _summarise([new])
    if request.target_true:
        true_probability = scored[1].target_probability
        efficacy["target_true_probability"] = true_probability
        efficacy["new_beats_true"] = new.target_probability > true_probability

    paraphrases = scored[paraphrase_start:locality_start]
    generalisation = {**_summarise(paraphrases), "count": len(paraphrases)} if paraphrases else None

    locality_scored = scored[locality_start:]
    locality: dict[str, Any] | None = None
    if locality_scored:
        if reference_predictions is None and reference_model is not None:
            reference_predictions = locality_reference(reference_model, tokenizer, request, batch_size=batch_size)
        locality = {
            "agreement": _agreement(locality_scored, reference_predictions),
            "answer_accuracy": _mean([item.token_accuracy for item in locality_scored]),
            "count": len(locality_scored),
        }
    return {"efficacy": efficacy, "generalisation": generalisation, "locality": locality}


def locality_reference(
    model: Any, tokenizer: Any, request: EditRequest | dict[str, Any], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[list[int]]:
    """Return the model's greedy next-token ids over each locality prompt's expected answer (teacher-forced)."""
    request = _as_request(request)
    pairs = [(item["prompt"], item["answer"]) for item in _locality_items(request)]
    return [item.predicted_ids for item in score_targets(model, tokenizer, pairs, batch_size=batch_size)]


def encode_pair(tokenizer: Any, prompt: str, target: str) -> tuple[list[int], list[int]]:
    """Return the token ids of ``prompt`` (as ROME encodes it) and of ``target`` continuing it."""
    from editsafe.rome.positions import target_token_ids

    return list(tokenizer(prompt)["input_ids"]), list(target_token_ids(tokenizer, prompt, target))


def score_targets(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], *, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[ScoredSequence]:
    """Teacher-force each (prompt, target) pair and score the target tokens, in batches."""
    encoded = [encode_pair(tokenizer, prompt, target) for prompt, target in pairs]
    results: list[ScoredSequence] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(encoded), batch_size):
                results.extend(_score_batch(model, tokenizer, encoded[start:start + batch_size]))
    finally:
        model.train(was_training)
    return results


def _score_batch(model: Any, tokenizer: Any, batch: list[tuple[list[int], list[int]]]) -> list[ScoredSequence]:
    from editsafe.rome.positions import pad_batch, pad_token_id

    device = next(model.parameters()).device
    # The last target token is scored but never fed to the model.
    sequences = [tuple(prompt + target[:-1]) for prompt, target in batch]
    padded = pad_batch(sequences, pad_token_id(tokenizer), "right", device)
    log_probabilities = torch.log_softmax(model(**padded.model_inputs()).logits.float(), dim=-1)

    scored: list[ScoredSequence] = []
    for row, (prompt, target) in enumerate(batch):
        # Logits at position j predict token j + 1, so the target's tokens are
        # predicted from positions len(prompt) - 1 .. len(prompt) + len(target) - 2.
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(target) - 1, device=log_probabilities.device)
        target_tensor = torch.tensor(target, dtype=torch.long, device=log_probabilities.device)
        rows = log_probabilities[row, positions]
        token_probabilities = rows.gather(1, target_tensor[:, None]).squeeze(1).exp()
        scored.append(
            ScoredSequence(
                token_probabilities=token_probabilities.tolist(),
                predicted_ids=rows.argmax(dim=-1).tolist(),
                target_ids=list(target),
            )
        )
    return scored


def _as_request(request: EditRequest | dict[str, Any]) -> EditRequest:
    from editsafe.rome import EditRequest

    return EditRequest.from_dict(request) if isinstance(request, dict) else request


def _locality_items(request: EditRequest) -> list[dict[str, str]]:
    return [{"prompt": item["prompt"], "answer": item["answer"]} for item in request.locality_prompts]


def _summarise(items: list[ScoredSequence]) -> dict[str, float]:
    return {
        "target_probability": _mean([item.target_probability for item in items]),
        "first_token_probability": _mean([item.first_token_probability for item in items]),
        "token_accuracy": _mean([item.token_accuracy for item in items]),
    }


def _agreement(items: list[ScoredSequence], reference: list[list[int]] | None) -> float | None:
    if reference is None:
        return None
    if len(reference) != len(items):
        raise DataError(
            f"reference predictions cover {len(reference)} locality prompts, the request has {len(items)}; "
            "compute them with locality_reference for the same request"
        )
    per_prompt = []
    for item, expected in zip(items, reference):
        matches = sum(predicted == other for predicted, other in zip(item.predicted_ids, expected))
        per_prompt.append(matches / len(item.predicted_ids))
    return _mean(per_prompt)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
