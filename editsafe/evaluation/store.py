"""Stored generations: responses appended to JSON Lines as each batch finishes, so runs resume.

A stored response is keyed by the model key (the weights' content hash; for a
safe-model folder also its ICV settings), the hash of the generation settings,
the dataset name, the prompt id and the hash of the prompt text. A rerun with
the same key reuses the stored response, and a run killed part way generates
only what is missing. A partial last line left by a kill is ignored on reading
and cut off before the next append, so the file never gains a broken line in
the middle.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from editsafe.errors import ModelReferenceError
from editsafe.evaluation.datasets import Prompt
from editsafe.generation import GenerationSettings, iter_generate
from editsafe.io import read_jsonl, sha256_json

logger = logging.getLogger(__name__)

GENERATIONS_FILE = "generations.jsonl"
GENERATION_KEY_FIELDS = ("model_key", "settings_hash", "dataset", "prompt_id", "prompt_hash")
BatchCallback = Callable[[list[dict[str, Any]]], None]


def model_key(model: Any) -> str:
    """Return the key that identifies a loaded model's behaviour in stored files.

    Models loaded through :func:`editsafe.load_model` carry their resolved
    reference; a safe-model folder adds its manifest's ICV settings, because
    the same weights generate differently with another steering scale.
    """
    resolved = getattr(model, "editsafe_reference", None)
    if resolved is None:
        raise ModelReferenceError("the model was not loaded with editsafe.load_model, so it has no content hash")
    if resolved.kind == "safe":
        return sha256_json({"hash": resolved.content_hash, "icv": resolved.manifest.get("icv")})
    return str(resolved.content_hash)


def settings_hash(settings: GenerationSettings) -> str:
    """Return the hash of the generation settings (every field, so any change regenerates)."""
    return sha256_json(settings.to_dict())


def text_hash(text: str) -> str:
    """Return a short SHA-256 of a text, enough to notice that a prompt changed under the same id."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class KeyedStore:
    """An append-only JSON Lines file of records, read once and indexed by the values of ``key_fields``."""

    def __init__(self, path: str | os.PathLike[str], key_fields: Sequence[str]) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self._records: dict[tuple[str, ...], dict[str, Any]] = {}
        if self.path.is_file():
            for record in read_jsonl(self.path, skip_partial_last=True):
                self._records.setdefault(self.key_of(record), record)

    def __len__(self) -> int:
        return len(self._records)

    def key_of(self, record: dict[str, Any]) -> tuple[str, ...]:
        """Return the key of a record: its ``key_fields`` values as strings."""
        return tuple(str(record.get(field)) for field in self.key_fields)

    def get(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """Return the stored record for ``key``, or None."""
        return self._records.get(key)

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records as whole lines and flush them to disk; a record whose key exists is kept once."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_last_line(self.path)
        text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        for record in records:
            self._records.setdefault(self.key_of(record), record)


class GenerationStore(KeyedStore):
    """Stored responses keyed by model, generation settings, dataset, prompt id and prompt text."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, GENERATION_KEY_FIELDS)


def generate_stored(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    dataset: str,
    settings: GenerationSettings,
    store: GenerationStore,
    batch_size: int = 8,
    progress: bool = True,
    on_batch: BatchCallback | None = None,
) -> list[dict[str, Any]]:
    """Return one stored record per prompt, generating and appending only the missing ones.

    Each record contains ``model_key``, ``settings_hash``, ``dataset``,
    ``prompt_id``, ``prompt_hash``, ``prompt``, ``category``, ``label`` and
    ``response``. ``on_batch`` is called with each batch's new records after
    they are on disk.
    """
    model_id = model_key(model)
    settings_id = settings_hash(settings)
    keys = [(model_id, settings_id, dataset, prompt.id, text_hash(prompt.text)) for prompt in prompts]
    missing = [index for index, key in enumerate(keys) if store.get(key) is None]
    if len(missing) < len(prompts):
        logger.info("%s: reusing %d stored responses, generating %d", dataset, len(prompts) - len(missing), len(missing))

    if missing:
        questions = [prompts[index].text for index in missing]
        for batch_indices, responses in iter_generate(
            model, tokenizer, questions, settings, batch_size=batch_size, progress=progress
        ):
            new_records = []
            for position, response in zip(batch_indices, responses):
                prompt = prompts[missing[position]]
                new_records.append({
                    "model_key": model_id, "settings_hash": settings_id, "dataset": dataset,
                    "prompt_id": prompt.id, "prompt_hash": text_hash(prompt.text), "prompt": prompt.text,
                    "category": prompt.category, "label": prompt.label, "response": response,
                })
            store.append(new_records)
            if on_batch is not None:
                on_batch(new_records)

    records = [store.get(key) for key in keys]
    assert all(record is not None for record in records)
    return [record for record in records if record is not None]


def _drop_partial_last_line(path: Path) -> None:
    """Truncate a file that does not end with a newline back to its last complete line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as stream:
        stream.seek(-1, os.SEEK_END)
        if stream.read(1) == b"\n":
            return
        stream.seek(0)
        data = stream.read()
        cut = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a partial last line (%d bytes) left by an interrupted run", path, len(data) - cut)
        stream.truncate(cut)
