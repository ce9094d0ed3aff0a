"""Context templates: short prefixes sampled from the model, under which ROME averages the key.

The templates are ``"{}"`` followed by ``"<sampled text>. {}"`` for each
``[length, count]`` pair of ``context_template_length_params``: ``count``
continuations of ``length`` tokens, sampled with top-k 5 from the
tokenizer's BOS token (or EOS when it has none). Sampling uses a local
``torch.Generator`` seeded with the recorded seed, so the global RNG is never
touched and the same model, parameters and seed give the same templates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from editsafe.errors import EditError, NumericalError
from editsafe.rome.fingerprint import model_hash
from editsafe.rome.requests import PLACEHOLDER
from editsafe.rome.tracing import frozen_parameters

logger = logging.getLogger(__name__)

TOP_K = 5

TemplateKey = tuple[str, tuple[tuple[int, int], ...], int]


@dataclass
class TemplateCache:
    """Sampled context templates of the models seen so far, keyed by model hash, length parameters and seed."""

    entries: dict[TemplateKey, list[str]] = field(default_factory=dict)

    def get(
        self, model: torch.nn.Module, tokenizer: Any, length_params: tuple[tuple[int, int], ...], seed: int
    ) -> list[str]:
        """Return the templates for this model, sampling them on the first request."""
        key = (model_hash(model), tuple(length_params), seed)
        if key not in self.entries:
            self.entries[key] = sample_context_templates(model, tokenizer, length_params, seed=seed)
        return list(self.entries[key])


def sample_context_templates(
    model: torch.nn.Module, tokenizer: Any, length_params: tuple[tuple[int, int], ...], *, seed: int
) -> list[str]:
    """Sample context templates from the model (see the module docstring for the recipe)."""
    generator_device = next(model.parameters()).device
    generator = torch.Generator(device=generator_device)
    generator.manual_seed(seed)
    templates = [PLACEHOLDER]
    with frozen_parameters(model), torch.no_grad():
        for length, count in length_params:
            if count == 0:
                continue
            for text in _sample_texts(model, tokenizer, length, count, generator):
                templates.append(_as_template(text))
    logger.debug("context templates (seed %d): %s", seed, templates)
    return templates


def _sample_texts(model: torch.nn.Module, tokenizer: Any, length: int, count: int,
                  generator: torch.Generator) -> list[str]:
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start_id is None:
        raise EditError("cannot sample context templates: the tokenizer has neither a BOS nor an EOS token")
    device = next(model.parameters()).device
    tokens = torch.full((count, 1), int(start_id), dtype=torch.long, device=device)
    # The prefixes are a few tokens long, so each step reruns the whole prefix instead of keeping a KV cache.
    for _ in range(length):
        logits = model(input_ids=tokens, use_cache=False).logits[:, -1, :].float()
        if not torch.isfinite(logits).all():
            raise NumericalError("the model returned NaN or infinite logits while sampling context templates")
        top_values, top_indices = logits.topk(TOP_K, dim=-1)
        probabilities = torch.softmax(top_values, dim=-1)
        choice = torch.multinomial(probabilities, 1, generator=generator)
        tokens = torch.cat([tokens, top_indices.gather(1, choice)], dim=1)
    return tokenizer.batch_decode(tokens[:, 1:].tolist(), skip_special_tokens=True)


def _as_template(text: str) -> str:
    # Braces would collide with the placeholder, and line breaks would split the prompt.
    cleaned = " ".join(text.replace("{", "").replace("}", "").split())
    return f"{cleaned}. {PLACEHOLDER}"
