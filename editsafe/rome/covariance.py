"""The uncentered second moment C = E[k kᵀ] of a weight's inputs over a text corpus.

ROME with ``mom2_adjustment`` uses u ∝ C⁻¹ k*. C is estimated from the
inputs of the rewritten module at every non-padding token of the first
``mom2_n_samples`` texts of a local corpus (each text cut to
``MAX_TOKENS_PER_TEXT`` tokens), accumulated in float64 and stored in
``mom2_dtype``. Results are cached as safetensors files keyed by the model
hash, module name, corpus hash, sample count, token limit and dtype.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from editsafe.errors import ConfigError, DataError
from editsafe.io import atomic_path, sha256_file, sha256_json
from editsafe.paths import editsafe_home
from editsafe.rome.fingerprint import model_hash
from editsafe.rome.positions import pad_batch, pad_token_id
from editsafe.rome.tracing import frozen_parameters, get_module, recording

logger = logging.getLogger(__name__)

MAX_TOKENS_PER_TEXT = 256
BATCH_SIZE = 8


@dataclass
class SecondMomentCache:
    """Second-moment statistics on disk under ``root`` (default ``$EDITSAFE_HOME/stats``), plus a memory copy."""

    root: Path = field(default_factory=lambda: editsafe_home() / "stats")
    loaded: dict[str, torch.Tensor] = field(default_factory=dict)

    def path_for(self, key: dict[str, Any]) -> Path:
        """Return the cache file of a statistics key."""
        digest = sha256_json(key)[:24]
        return Path(self.root) / key["model"][:16] / f"{key['module']}.{digest}.safetensors"

    def second_moment(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        module_name: str,
        corpus: str | os.PathLike[str],
        n_samples: int,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Return C for the inputs of ``module_name``, computing and caching it on first use."""
        corpus_path = Path(corpus).expanduser()
        if not corpus_path.is_file():
            raise ConfigError(f"mom2_corpus: corpus file {corpus_path} not found; pass a JSONL or text file")
        key = {
            "model": model_hash(model), "module": module_name, "corpus": sha256_file(corpus_path),
            "n_samples": n_samples, "max_tokens_per_text": MAX_TOKENS_PER_TEXT, "dtype": str(dtype),
        }
        path = self.path_for(key)
        cache_id = str(path)
        if cache_id in self.loaded:
            return self.loaded[cache_id]
        if path.is_file():
            logger.info("reading second-moment statistics from %s", path)
            moment = load_file(str(path))["mom2"]
        else:
            texts = read_corpus(corpus_path, n_samples)
            moment = compute_second_moment(model, tokenizer, module_name, texts).to(dtype)
            with atomic_path(path) as temporary:
                save_file({"mom2": moment.contiguous().cpu()}, str(temporary),
                          metadata={"key": json.dumps(key), "texts": str(len(texts))})
            logger.info("wrote second-moment statistics to %s", path)
        self.loaded[cache_id] = moment
        return moment


def read_corpus(path: Path, n_samples: int) -> list[str]:
    """Return up to ``n_samples`` non-empty texts: the ``text`` field of JSONL rows, else one per paragraph."""
    from editsafe.io import read_jsonl

    if path.suffix in (".jsonl", ".json"):
        texts = []
        for number, record in enumerate(read_jsonl(path), start=1):
            value = record.get("text")
            if not isinstance(value, str):
                raise DataError(f"{path}:{number}: expected a string field 'text' in every corpus row")
            if value.strip():
                texts.append(value)
    else:
        content = path.read_text(encoding="utf-8")
        texts = [block.strip() for block in content.split("\n\n") if block.strip()]
    if not texts:
        raise DataError(f"{path}: the corpus has no texts")
    return texts[:n_samples]


def compute_second_moment(model: torch.nn.Module, tokenizer: Any, module_name: str, texts: list[str]) -> torch.Tensor:
    """Return E[k kᵀ] (float64) over every token's input to ``module_name`` in ``texts``."""
    module = get_module(model, module_name)
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    total: torch.Tensor | None = None
    count = 0
    with frozen_parameters(model), torch.no_grad(), recording(module) as record:
        for start in tqdm(range(0, len(texts), BATCH_SIZE), desc=f"second moment {module_name}", unit="batch"):
            sequences = [
                tuple(tokenizer(text, truncation=True, max_length=MAX_TOKENS_PER_TEXT)["input_ids"])
                for text in texts[start:start + BATCH_SIZE]
            ]
            batch = pad_batch(sequences, pad_id, "right", device)
            model(**batch.model_inputs())
            keys = record["input"][batch.attention_mask.bool()].to(torch.float64)
            product = keys.T @ keys
            total = product if total is None else total + product
            count += keys.shape[0]
    assert total is not None
    return (total / count).cpu()
