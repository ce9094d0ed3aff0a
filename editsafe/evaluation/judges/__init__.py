"""Judges that classify responses as safe, unsafe or unjudged.

``keyword`` (offline refusal markers), ``openai`` (an OpenAI-compatible chat
endpoint) and ``hf:PATH`` (a local text-classification model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from editsafe.errors import ConfigError
from editsafe.evaluation.judges.base import (
    SAFE,
    UNJUDGED,
    UNSAFE,
    VERDICTS_FILE,
    Judge,
    Judgement,
    VerdictStore,
    judge_cached,
)
from editsafe.evaluation.judges.keyword import KeywordJudge, is_refusal

__all__ = [
    "SAFE", "UNJUDGED", "UNSAFE", "VERDICTS_FILE", "Judge", "Judgement", "KeywordJudge", "VerdictStore",
    "is_refusal", "judge_cached", "make_judge",
]


def make_judge(
    spec: str,
    *,
    url: str | None = None,
    model: str | None = None,
    key_env: str = "OPENAI_API_KEY",
    label_map: Mapping[str, str] | None = None,
    **options: Any,
) -> Judge:
    """Build the judge named by ``spec``: ``keyword``, ``openai`` or ``hf:PATH``."""
    if spec == "keyword":
        return KeywordJudge()
    if spec == "openai":
        from editsafe.evaluation.judges.openai import OpenAIJudge

        if not url or not model:
            raise ConfigError("the openai judge needs --judge-url (base URL ending in /v1) and --judge-model")
        return OpenAIJudge(url, model, key_env=key_env, **options)
    if spec.startswith("hf:"):
        from editsafe.evaluation.judges.hf import HFClassifierJudge

        return HFClassifierJudge(spec[3:], label_map=label_map)
    raise ConfigError(f"judge {spec!r} is invalid; use keyword, openai or hf:PATH")
