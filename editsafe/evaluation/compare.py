"""``compare``: the five ablation variants of Safety Arithmetic evaluated on the same prompts.

=====================  ========================================================
original               the target itself (the edited model, or the base or SFT
                       model), unrepaired
hdr-ties               Harm Direction Removal with TIES trimming, no ICV
hdr-task-vector        Harm Direction Removal with the plain task vector, no ICV
icv-only               the in-context safety vector alone, no HDR
safety-arithmetic      HDR with TIES trimming followed by the ICV
=====================  ========================================================

Each repaired variant is built by :func:`editsafe.repair.repair` into
``out/models/<variant>`` and reused when that folder already contains a safe
model. Each variant is evaluated into ``out/runs/<variant>`` (stored
generations and verdicts reused), and the runs are combined into
``out/report.json``, ``report.md`` and ``report.png``. With an edited target,
every variant is also scored on the edit's request, and its ``retention``
compares the edit's target probability with the original's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from editsafe.errors import ConfigError
from editsafe.evaluation.edit_retention import add_retention
from editsafe.evaluation.pipeline import evaluate
from editsafe.evaluation.report import write_comparison

logger = logging.getLogger(__name__)

# Variant name -> repair switches (None: the unrepaired target).
VARIANTS: dict[str, dict[str, Any] | None] = {
    "original": None,
    "hdr-ties": {"hdr": True, "icv": False, "hdr_method": "ties"},
    "hdr-task-vector": {"hdr": True, "icv": False, "hdr_method": "task-vector"},
    "icv-only": {"hdr": False, "icv": True, "hdr_method": "ties"},
    "safety-arithmetic": {"hdr": True, "icv": True, "hdr_method": "ties"},
}
SCENARIOS = ("edited", "base", "sft")


def compare(
    datasets: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str],
    edited: str | None = None,
    target: str | None = None,
    scenario: str = "edited",
    base: str | None = None,
    harm: str | None = None,
    demos: str | None = None,
    config: dict[str, Any] | str | None = None,
    variants: Sequence[str] = tuple(VARIANTS),
    seed: int = 0,
    **evaluate_options: Any,
) -> dict[str, Any]:
    """Build and evaluate the ablation variants, and write one combined report into ``out``.

    ``edited`` (scenario ``edited``) or ``target`` (scenarios ``base`` and
    ``sft``) is the model being repaired; ``base``, ``harm``, ``demos`` and
    ``config`` are passed to the repair unchanged. ``evaluate_options`` go to
    :func:`editsafe.evaluation.evaluate` for every variant.
    """
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario {scenario!r} is invalid; use one of {', '.join(SCENARIOS)}")
    if scenario == "edited" and not edited:
        raise ConfigError("the edited scenario needs --edited (an edit folder or an edited model)")
    if scenario != "edited" and not target:
        raise ConfigError(f"the {scenario} scenario needs --target (the model to repair)")
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    out_dir = Path(out)
    original = edited if scenario == "edited" else target
    edit_folder = _edit_folder(edited) if scenario == "edited" else None
    runs = []
    for name in variants:
        switches = VARIANTS[name]
        if switches is None:
            reference = str(original)
        else:
            reference = str(_build_variant(
                out_dir / "models" / name, switches, edited=edited, target=target, scenario=scenario,
                base=base, harm=harm, demos=demos, config=config, seed=seed,
                progress=evaluate_options.get("progress", True),
            ))
        logger.info("evaluating variant %s (%s)", name, reference)
        runs.append(evaluate(
            reference, datasets, out=out_dir / "runs" / name, label=name, seed=seed, edit=edit_folder,
            **evaluate_options,
        ))

    before = next((run.get("edit") for run in runs if run["label"] == "original"), None)
    if before:
        for run in runs:
            run["edit"] = add_retention(run["edit"], before)
    return write_comparison(
        runs, out_dir, title=f"Safety Arithmetic ablation ({scenario} scenario)",
        scenario=scenario, original=str(original), variants=list(variants), seed=seed,
    )


def _build_variant(
    folder: Path, switches: dict[str, Any], *, config: dict[str, Any] | str | None, **repair_arguments: Any
) -> Path:
    """Return the safe-model folder of one variant, running the repair only when it is not there yet.

    A ``config`` dict is passed as the repair's overrides, a string as its settings file.
    """
    if (folder / "editsafe.json").is_file():
        logger.info("reusing the repaired model in %s", folder)
        return folder
    from editsafe.repair import repair

    settings = {"overrides": config} if isinstance(config, dict) else {"config": config}
    return Path(repair(out=str(folder), overwrite=False, **switches, **settings, **repair_arguments))


def _edit_folder(edited: str | None) -> str | None:
    """Return ``edited`` when it is an edit folder (its request is then scored), else None."""
    if edited is None:
        return None
    from editsafe.models.refs import resolve_model

    return edited if resolve_model(edited).kind == "edit" else None
