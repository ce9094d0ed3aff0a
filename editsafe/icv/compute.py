"""Computing the in-context safety vector (ICV) from demonstration pairs.

Each demonstration pair is a question with an unsafe answer and a safe answer.
For pair i, h(safe) and h(unsafe) are the hidden states of θ_int at a chosen
token of the formatted exchange, concatenated over the layers of the region R,
and d_i = h(safe) − h(unsafe). The ICV is the first principal direction of the
d_i (Liu et al., "In-context Vectors", ICML 2024, as used by Safety Arithmetic,
Hazra et al. 2024), split back into one unit vector per layer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from editsafe.errors import ConfigError, DataError, NumericalError
from editsafe.generation import encode_batch, format_exchange, format_prompt
from editsafe.icv.sites import SITES, Site, record_outputs
from editsafe.icv.vector import SafetyVector
from editsafe.io import read_jsonl, sha256_json

logger = logging.getLogger(__name__)

Method = Literal["pca", "mean"]
Token = Literal["last", "answer-mean", "answer-first"]
METHODS: tuple[str, ...] = ("pca", "mean")
TOKENS: tuple[str, ...] = ("last", "answer-mean", "answer-first")

_DEMO_FIELDS = ("question", "unsafe_answer", "safe_answer")


@dataclass(frozen=True)
class DemonstrationPair:
    """A question with an unsafe (compliance-style) answer and a safe (refusing) answer."""

    id: str
    question: str
    unsafe_answer: str
    safe_answer: str


def load_demonstrations(path: str | os.PathLike[str]) -> list[DemonstrationPair]:
    """Read demonstration pairs from JSON Lines with ``question``, ``unsafe_answer`` and ``safe_answer``.

    Raises :class:`DataError` naming ``file:line`` for a malformed line, a
    missing or empty field, and for a file without any pair.
    """
    source = Path(path)
    records = read_jsonl(source)
    if not records:
        raise DataError(f"{source}: no demonstration pairs; each line needs {', '.join(_DEMO_FIELDS)}")

    line_numbers = _record_line_numbers(source)
    pairs: list[DemonstrationPair] = []
    for index, (record, line) in enumerate(zip(records, line_numbers)):
        for name in _DEMO_FIELDS:
            value = record.get(name)
            if value is None:
                raise DataError(f"{source}:{line}: missing field {name!r}; each line needs {', '.join(_DEMO_FIELDS)}")
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"{source}:{line}: field {name!r} must be a non-empty string, got {value!r}")
        pairs.append(DemonstrationPair(
            id=str(record.get("id", index)), question=record["question"],
            unsafe_answer=record["unsafe_answer"], safe_answer=record["safe_answer"],
        ))
    return pairs


def demonstrations_hash(pairs: Sequence[DemonstrationPair]) -> str:
    """Return the SHA-256 that identifies a list of demonstration pairs (order included)."""
    return sha256_json([asdict(pair) for pair in pairs])


def compute_icv(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[DemonstrationPair],
    layers: Sequence[int],
    *,
    method: Method = "pca",
    token: Token = "last",
    site: Site = "layer",
    chat_template: bool = True,
    batch_size: int = 8,
    progress: bool = True,
) -> SafetyVector:
    """Compute the safety vector of ``model`` over ``layers`` from demonstration pairs.

    With D the stacked differences d_i (one row per pair, layers concatenated),
    ``method="pca"`` takes the top right singular vector of D without centring,
    so it maximises sum ⟨v, d_i⟩² (the direction the differences share, not
    their spread around the mean); ``method="mean"`` takes the mean of the d_i.
    The sign is fixed so that ⟨v, mean d_i⟩ > 0. v is then split into one
    segment per layer and each segment is scaled to unit length.

    ``token`` picks the state of each exchange: ``"last"`` is the last token of
    the whole demonstration (question and answer, the method's recipe),
    ``"answer-mean"`` the mean over the answer tokens, ``"answer-first"`` the
    first answer token. The last prompt token is not offered because a causal
    model's state there is identical for both answers, so d_i would be zero.
    ``site="layer"`` reads each decoder layer's output (the residual stream,
    ``hidden_states[l + 1]`` of a forward pass with ``output_hidden_states``,
    except that for the last layer some models store the final norm's output
    there); ``site="mlp"`` reads the MLP's output.
    """
    _check_choices(method=method, token=token, site=site)
    region = sorted({int(layer) for layer in layers})
    if not region:
        raise ConfigError("the region has no layers; the safety vector needs at least one layer")
    if not pairs:
        raise DataError("no demonstration pairs given")

    # Hidden states of every safe and every unsafe exchange, layers concatenated.
    safe_states = _collect_states(model, tokenizer, pairs, "safe_answer", region, token=token, site=site,
                                  chat_template=chat_template, batch_size=batch_size, progress=progress)
    unsafe_states = _collect_states(model, tokenizer, pairs, "unsafe_answer", region, token=token, site=site,
                                    chat_template=chat_template, batch_size=batch_size, progress=progress)
    differences = safe_states - unsafe_states

    direction, explained = leading_direction(differences, method=method)
    hidden_size = differences.shape[1] // len(region)
    segments = split_segments(direction, region, hidden_size)
    logger.info("safety vector over layers %s from %d pairs (%s, token %s): explained variance %.3f",
                region, len(pairs), method, token, explained)
    return SafetyVector(
        layers=tuple(region), segments=segments, method=method, token=token, site=site, n_pairs=len(pairs),
        demos_hash=demonstrations_hash(pairs), explained_variance=explained,
        extra={"chat_template": chat_template},
    )


def leading_direction(differences: torch.Tensor, *, method: Method = "pca") -> tuple[torch.Tensor, float]:
    """Return the unit direction of the rows of ``differences`` and its share of their second moment.

    ``pca``: the top right singular vector of the uncentred matrix. ``mean``:
    the normalised row mean. Either way the sign makes ⟨v, mean row⟩ > 0.
    """
    rows = differences.to(torch.float64)
    if not torch.isfinite(rows).all():
        raise NumericalError("the hidden-state differences contain NaN or infinite values")
    total = rows.pow(2).sum()
    if total == 0:
        raise NumericalError("the hidden-state differences are all zero; the safe and unsafe answers give the same states")
    mean_row = rows.mean(dim=0)
    if method == "pca":
        _, _, right = torch.linalg.svd(rows, full_matrices=False)
        direction = right[0]
    elif method == "mean":
        direction = mean_row
    else:
        raise ConfigError(f"unknown ICV method {method!r}; allowed: {', '.join(METHODS)}")

    norm = direction.norm()
    if norm == 0:
        raise NumericalError("the mean hidden-state difference is zero; use method='pca' for these pairs")
    direction = direction / norm
    if torch.dot(direction, mean_row) < 0:
        direction = -direction

    explained = float((rows @ direction).pow(2).sum() / total)
    return direction.to(torch.float32), explained


def split_segments(direction: torch.Tensor, layers: Sequence[int], hidden_size: int) -> dict[int, torch.Tensor]:
    """Split a concatenated direction into per-layer segments, each scaled to unit length."""
    segments: dict[int, torch.Tensor] = {}
    for position, layer in enumerate(layers):
        segment = direction[position * hidden_size:(position + 1) * hidden_size]
        norm = segment.norm()
        if norm == 0:
            raise NumericalError(f"the safety vector's segment for layer {layer} is zero; drop that layer from the region")
        segments[int(layer)] = (segment / norm).to(torch.float32).contiguous()
    return segments


def _collect_states(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[DemonstrationPair],
    answer_field: str,
    layers: Sequence[int],
    *,
    token: Token,
    site: Site,
    chat_template: bool,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """Return one row per pair: the chosen token's states at ``layers``, concatenated, in float32."""
    device = next(model.parameters()).device
    rows: list[torch.Tensor] = []
    batches = range(0, len(pairs), batch_size)
    for start in tqdm(batches, desc=f"ICV states ({answer_field})", unit="batch", disable=not progress):
        chunk = pairs[start:start + batch_size]
        prompts = [format_prompt(tokenizer, pair.question, chat_template=chat_template) for pair in chunk]
        texts = [format_exchange(tokenizer, pair.question, getattr(pair, answer_field), chat_template=chat_template)
                 for pair in chunk]
        prompt_lengths = [len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) for prompt in prompts]

        # Right padding keeps every real token at its unpadded position, so the states equal unbatched ones.
        batch = encode_batch(tokenizer, texts, side="right", device=device)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        with record_outputs(model, layers, site) as recorded, torch.no_grad():
            model(**batch, use_cache=False)

        for row, (length, prompt_length) in enumerate(zip(lengths, prompt_lengths)):
            if prompt_length >= length:
                raise DataError(f"demonstration {chunk[row].id!r}: the {answer_field} adds no tokens after the prompt")
            positions = _token_positions(token, int(length), prompt_length)
            states = [recorded[layer][row, positions].to(torch.float32).mean(dim=0) for layer in layers]
            rows.append(torch.cat(states))
    return torch.stack(rows)


def _token_positions(token: Token, length: int, prompt_length: int) -> slice:
    if token == "last":
        return slice(length - 1, length)
    if token == "answer-mean":
        return slice(prompt_length, length)
    if token == "answer-first":
        return slice(prompt_length, prompt_length + 1)
    raise ConfigError(f"unknown ICV token choice {token!r}; allowed: {', '.join(TOKENS)}")


def _check_choices(*, method: str, token: str, site: str) -> None:
    for name, value, allowed in (("method", method, METHODS), ("token", token, TOKENS), ("site", site, SITES)):
        if value not in allowed:
            raise ConfigError(f"unknown ICV {name} {value!r}; allowed: {', '.join(allowed)}")


def _record_line_numbers(source: Path) -> Iterator[int]:
    """Yield the 1-based line number of each non-blank line, matching :func:`read_jsonl`'s records."""
    with open(source, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                yield number
