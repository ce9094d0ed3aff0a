"""Run lm-evaluation-harness tasks on any editsafe model reference (optional extra ``lm_eval``).

The model is loaded with :func:`editsafe.load_model`, so edit folders and
safe-model folders (with their ICV hooks) are evaluated as editsafe runs them,
and handed to the harness's Hugging Face wrapper as a ready model object.

NOTE: written against lm-evaluation-harness 0.4 (``lm_eval.simple_evaluate``
and ``lm_eval.models.huggingface.HFLM``) but never run here, because the
harness is not installed in the development environment; only the missing
dependency error is tested.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from editsafe.errors import ConfigError, MissingDependencyError

logger = logging.getLogger(__name__)


def run_lm_eval(
    reference: str | None,
    tasks: Sequence[str],
    *,
    limit: int | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    seed: int = 0,
    device: str | None = None,
) -> dict[str, Any]:
    """Return the harness's per-task results for ``tasks`` on the model ``reference``."""
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as error:
        raise MissingDependencyError(
            "lm-evaluation-harness is not installed; install it with: pip install 'editsafe[lm_eval]'"
        ) from error
    if not tasks:
        raise ConfigError("give at least one lm-evaluation-harness task name, for example arc_easy")

    from editsafe.models.loading import load_model

    model, tokenizer = load_model(reference, device=device)
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    logger.info("running lm-evaluation-harness tasks %s on %s", ", ".join(tasks), reference)
    output = lm_eval.simple_evaluate(
        model=wrapped, tasks=list(tasks), limit=limit, num_fewshot=num_fewshot,
        random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
    )
    return {"tasks": list(tasks), "limit": limit, "seed": seed, "results": output.get("results", {})}
