"""Prompt formatting and batched, left-padded generation.

Every component that turns a question into model input (evaluation, the ICV
demonstrations, the refusal margin, ``editsafe generate``) formats it here, so
they agree on the chat template and the optional instruction prefix.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from editsafe.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings; they are recorded beside every stored response."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    chat_template: bool = True
    prefix: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ConfigError(f"temperature must be positive when sampling, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        return asdict(self)


def uses_chat_template(tokenizer: Any, chat_template: bool = True) -> bool:
    """Return True when prompts are to be wrapped in the tokenizer's chat template."""
    return bool(chat_template and getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer: Any, question: str, *, chat_template: bool = True, prefix: str | None = None) -> str:
    """Return the text the model sees for ``question``, ending where the answer starts.

    With a chat template the question becomes one user turn followed by the
    assistant's generation prompt; otherwise the text is used as it is. The
    optional ``prefix`` (an instruction) is prepended to the question.
    """
    text = f"{prefix}{question}" if prefix else question
    if uses_chat_template(tokenizer, chat_template):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def format_exchange(
    tokenizer: Any, question: str, answer: str, *, chat_template: bool = True, prefix: str | None = None
) -> str:
    """Return the text of a question followed by ``answer`` (a chat exchange when a template exists)."""
    return format_prompt(tokenizer, question, chat_template=chat_template, prefix=prefix) + answer


@contextlib.contextmanager
def padding_side(tokenizer: Any, side: str) -> Iterator[Any]:
    """Set the tokenizer's padding side for the block and restore it afterwards."""
    previous = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield tokenizer
    finally:
        tokenizer.padding_side = previous


def encode_batch(tokenizer: Any, texts: Sequence[str], *, side: str = "left", device: torch.device | None = None) -> Any:
    """Tokenize already formatted texts as one padded batch (no special tokens added)."""
    with padding_side(tokenizer, side):
        batch = tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return batch.to(device) if device is not None else batch


def iter_generate(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> Iterator[tuple[list[int], list[str]]]:
    """Generate answers batch by batch, yielding ``(indices, responses)`` as each batch finishes.

    Batches are left-padded so that every row's generated tokens follow its
    last real prompt token. Greedy decoding is deterministic; with sampling the
    generator is seeded from ``settings.seed`` and the batch's position.
    """
    settings = settings or GenerationSettings()
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    texts = [format_prompt(tokenizer, q, chat_template=settings.chat_template, prefix=settings.prefix) for q in questions]

    bar = tqdm(total=len(texts), desc="generating", unit="prompt", disable=not progress)
    try:
        for start in range(0, len(texts), batch_size):
            indices = list(range(start, min(start + batch_size, len(texts))))
            batch = encode_batch(tokenizer, [texts[i] for i in indices], device=device)
            responses = _generate_batch(model, tokenizer, batch, settings, batch_seed=settings.seed + start)
            bar.update(len(indices))
            yield indices, responses
    finally:
        bar.close()


def generate(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> list[str]:
    """Return one generated answer per question, in order."""
    responses: list[str] = [""] * len(questions)
    for indices, batch_responses in iter_generate(
        model, tokenizer, questions, settings, batch_size=batch_size, progress=progress
    ):
        for index, response in zip(indices, batch_responses):
            responses[index] = response
    return responses


def _generate_batch(model: Any, tokenizer: Any, batch: Any, settings: GenerationSettings, *, batch_seed: int) -> list[str]:
    options: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": settings.do_sample,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if settings.do_sample:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
        # NOTE: generate() takes no generator, so sampling reseeds torch's global RNG per batch.
        torch.manual_seed(batch_seed)
    else:
        # Unset sampling parameters so a model's generation_config cannot switch them on.
        options.update(temperature=None, top_p=None, top_k=None)
    with torch.no_grad():
        output = model.generate(**batch, **options)
    new_tokens = output[:, batch["input_ids"].shape[1]:]
    return [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
