"""Edit requests: which fact to rewrite, in which prompt, to which new target."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from editsafe.errors import DataError

PLACEHOLDER = "{}"


@dataclass(frozen=True)
class EditRequest:
    """One ROME edit request.

    ``prompt`` contains ``subject`` verbatim, or a ``{}`` placeholder where the
    subject goes; the first occurrence is the one ROME reads. ``locality_prompts``
    are ``{"prompt": ..., "answer": ...}`` mappings, and the edit should leave
    the model's completion of each such prompt unchanged.
    """

    prompt: str
    subject: str
    target_new: str
    target_true: str | None = None
    paraphrase_prompts: tuple[str, ...] = ()
    locality_prompts: tuple[dict[str, str], ...] = field(default_factory=tuple)
    id: str | None = None
    category: str | None = None

    def __post_init__(self) -> None:
        label = self.label
        for name in ("prompt", "subject", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"request {label}: {name} must be a non-empty string, got {value!r}")
        if PLACEHOLDER not in self.prompt and self.subject not in self.prompt:
            raise DataError(
                f"request {label}: subject {self.subject!r} does not occur in prompt {self.prompt!r}; "
                "write the subject exactly as it appears in the prompt, or put {} where it goes"
            )

    @property
    def label(self) -> str:
        """The id, or the subject when the request has no id, for messages."""
        return repr(self.id) if self.id is not None else f"for subject {self.subject!r}"

    def prompt_parts(self) -> tuple[str, str]:
        """Return the prompt text before and after the subject's first occurrence."""
        marker = PLACEHOLDER if PLACEHOLDER in self.prompt else self.subject
        before, _, after = self.prompt.partition(marker)
        return before, after

    @property
    def filled_prompt(self) -> str:
        """The prompt with the subject in place."""
        before, after = self.prompt_parts()
        return before + self.subject + after

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON record of this request (the form :meth:`from_dict` reads)."""
        return {
            "id": self.id, "category": self.category, "prompt": self.prompt, "subject": self.subject,
            "target_new": self.target_new, "target_true": self.target_true,
            "paraphrase_prompts": list(self.paraphrase_prompts),
            "locality_prompts": [dict(item) for item in self.locality_prompts],
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any], source: str = "request") -> EditRequest:
        """Build a request from a JSON record; ``source`` (such as ``file:line``) prefixes every error.

        Keys other than the request's fields are ignored, so dataset rows with
        extra columns load as they are.
        """
        if not isinstance(record, dict):
            raise DataError(f"{source}: expected a JSON object for an edit request, got {type(record).__name__}")
        missing = [name for name in ("prompt", "subject", "target_new") if record.get(name) in (None, "")]
        if missing:
            raise DataError(f"{source}: missing required field(s) {', '.join(missing)}")

        identifier = record.get("id")
        values: dict[str, Any] = {
            "prompt": _text(record, "prompt", source),
            "subject": _text(record, "subject", source),
            "target_new": _text(record, "target_new", source),
            "target_true": _optional_text(record, "target_true", source),
            "paraphrase_prompts": tuple(_text_list(record, "paraphrase_prompts", source)),
            "locality_prompts": tuple(_locality(record, source)),
            "id": None if identifier is None else str(identifier),
            "category": _optional_text(record, "category", source),
        }
        try:
            return cls(**values)
        except DataError as error:
            raise DataError(f"{source}: {error}") from None


def _text(record: dict[str, Any], name: str, source: str) -> str:
    value = record[name]
    if not isinstance(value, str):
        raise DataError(f"{source}: field {name} must be a string, got {type(value).__name__} {value!r}")
    return value


def _optional_text(record: dict[str, Any], name: str, source: str) -> str | None:
    return None if record.get(name) is None else _text(record, name, source)


def _text_list(record: dict[str, Any], name: str, source: str) -> list[str]:
    value = record.get(name) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise DataError(f"{source}: field {name} must be a list of strings, got {value!r}")
    return value


def _locality(record: dict[str, Any], source: str) -> list[dict[str, str]]:
    value = record.get("locality_prompts") or []
    if not isinstance(value, list):
        raise DataError(f"{source}: field locality_prompts must be a list of {{prompt, answer}} objects")
    items = []
    for position, item in enumerate(value):
        if not (isinstance(item, dict) and isinstance(item.get("prompt"), str) and isinstance(item.get("answer"), str)):
            raise DataError(
                f"{source}: locality_prompts[{position}] is {item!r}; each entry needs string fields prompt and answer"
            )
        items.append({"prompt": item["prompt"], "answer": item["answer"]})
    return items
