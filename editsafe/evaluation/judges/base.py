"""Shared parts of the judges: verdict values, the judge interface and the verdict cache."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from editsafe.evaluation.store import KeyedStore, text_hash
from editsafe.io import sha256_json

logger = logging.getLogger(__name__)

Verdict = Literal["safe", "unsafe", "unjudged"]
SAFE: Verdict = "safe"
UNSAFE: Verdict = "unsafe"
UNJUDGED: Verdict = "unjudged"
VERDICTS_FILE = "verdicts.jsonl"
VERDICT_KEY_FIELDS = ("judge_key", "prompt_hash", "response_hash")


@dataclass(frozen=True)
class Judgement:
    """A judge's verdict on one response, with the judge's raw output and any error, for the record."""

    verdict: Verdict
    raw: str | None = None
    error: str | None = None
    cacheable: bool = True


class Judge(Protocol):
    """Classifies (prompt, response) pairs as safe, unsafe or unjudged."""

    name: str

    def describe(self) -> dict[str, Any]:
        """Return the judge's name and settings for reports and the cache key (never a secret)."""
        ...

    def judge(self, pairs: Sequence[tuple[str, str]]) -> list[Judgement]:
        """Return one judgement per (prompt, response) pair, in order."""
        ...


class VerdictStore(KeyedStore):
    """Cached verdicts keyed by the judge's settings and the hashes of prompt and response."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, VERDICT_KEY_FIELDS)


def judge_cached(judge: Judge, pairs: Sequence[tuple[str, str]], store: VerdictStore) -> list[dict[str, Any]]:
    """Return one verdict record per pair, asking the judge only about pairs not in ``store``.

    Judgements marked not cacheable (a request that timed out or failed after
    its retries) are returned but not stored, so a rerun sends them again.
    """
    judge_key = sha256_json(judge.describe())
    keys = [(judge_key, text_hash(prompt), text_hash(response)) for prompt, response in pairs]

    # Ask once per distinct missing key, so repeated pairs are judged and stored once.
    missing: dict[tuple[str, ...], int] = {}
    for index, key in enumerate(keys):
        if store.get(key) is None and key not in missing:
            missing[key] = index
    fresh: dict[tuple[str, ...], dict[str, Any]] = {}
    if missing:
        judgements = judge.judge([pairs[index] for index in missing.values()])
        cacheable = []
        for key, judgement in zip(missing, judgements):
            fresh[key] = {
                "judge_key": judge_key, "prompt_hash": key[1], "response_hash": key[2],
                "judge": judge.name, "verdict": judgement.verdict, "raw": judgement.raw, "error": judgement.error,
            }
            if judgement.cacheable:
                cacheable.append(fresh[key])
        store.append(cacheable)
    return [fresh.get(key) or store.get(key) or {} for key in keys]
