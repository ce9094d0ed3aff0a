"""One step of an edit run: measure, compute the ROME patch, apply it, measure again, write the folder.

The model's weight is restored from a copy in ``finally`` unless the step
succeeded in sequential mode. So a failed edit, or any edit in single mode,
leaves the model bit for bit as it was, which subtracting ΔW would not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from editsafe import __version__
from editsafe.edit_folder import write_edit_folder
from editsafe.edit_metrics import edit_metrics, locality_reference
from editsafe.edit_resume import EDITS_FOLDER, edit_folder
from editsafe.errors import EditsafeError
from editsafe.models.patches import RankOnePatch, apply_patch
from editsafe.models.refs import EDIT_KIND, ResolvedModel

if TYPE_CHECKING:
    from editsafe.rome import EditRequest, RomeHyperParams

logger = logging.getLogger(__name__)

# Errors that fail one edit and let the run go on; anything else stops the run (it can be resumed).
EDIT_FAILURES: tuple[type[BaseException], ...] = (EditsafeError, RuntimeError, ValueError, ArithmeticError)


@dataclass
class EditStep:
    """The loaded model, settings and output folder that every step of one run shares."""

    model: Any
    tokenizer: Any
    hparams: RomeHyperParams
    base: ResolvedModel
    mode: str
    seed: int
    backend: str
    materialize: bool
    output: Path
    hparams_path: Path
    templates: Any | None = None
    stats_cache: Any | None = None


def run_edit_step(
    step: EditStep, request: EditRequest, carried: list[RankOnePatch], *, sequence: list[str]
) -> tuple[dict[str, Any], list[RankOnePatch], list[str]]:
    """Run one edit and return its manifest record and the patches and edit ids the next step starts from.

    ``carried`` are the patches already in the model: those inherited from an
    edited base and, in sequential mode, those of the finished edits so far.
    ``sequence`` are the ids of those finished edits. A failed edit returns a ``failed`` record
    and leaves both unchanged.
    """
    started = time.perf_counter()
    layer = step.hparams.layer
    weight_name = f"{step.hparams.rewrite_module_tmp.format(layer)}.weight"
    before: dict[str, Any] | None = None
    try:
        # The unedited model's predictions on locality prompts are the reference for agreement.
        reference = locality_reference(step.model, step.tokenizer, request)
        before = edit_metrics(step.model, step.tokenizer, request, reference_predictions=reference)
        result = compute_patch(step, request)
        patch = result.patch
        weight_name, layer = patch.weight_name, patch.layer
        patches = carried + [patch]
        new_sequence = sequence + [request.id]

        parameter = dict(step.model.named_parameters())[patch.weight_name]
        original = parameter.detach().clone()
        keep = False
        try:
            apply_patch(step.model, patch)
            after = edit_metrics(step.model, step.tokenizer, request, reference_predictions=reference)
            seconds = time.perf_counter() - started
            record = _folder_record(step, request, result, before, after, seconds, new_sequence, len(patches))
            write_edit_folder(
                edit_folder(step.output, request.id), record, patches,
                model=step.model if step.materialize else None,
                tokenizer=step.tokenizer if step.materialize else None,
            )
            keep = step.mode == "sequential"
        finally:
            if not keep:
                with torch.no_grad():
                    parameter.copy_(original)
    except EDIT_FAILURES as error:
        logger.error("edit %s failed: %s: %s", request.id, type(error).__name__, error)
        logger.debug("edit %s failed", request.id, exc_info=True)
        record = {
            "id": request.id, "status": "failed", "layer": layer, "weight_name": weight_name,
            "metrics": {"before": before, "after": None}, "seconds": time.perf_counter() - started,
            "error": f"{type(error).__name__}: {error}",
        }
        return record, carried, sequence

    logger.info(
        "edit %s done in %.1f s: p(target) %.3g -> %.3g", request.id, seconds,
        before["efficacy"]["target_probability"], after["efficacy"]["target_probability"],
    )
    record = {
        "id": request.id, "status": "done", "layer": layer, "weight_name": weight_name,
        "metrics": {"before": before, "after": after}, "seconds": seconds, "folder": f"{EDITS_FOLDER}/{request.id}",
    }
    if step.mode == "sequential":
        return record, patches, new_sequence
    return record, carried, sequence


@dataclass(frozen=True)
class ComputedPatch:
    """A backend's patch with the seconds of its steps and what it reports about them."""

    patch: RankOnePatch
    timings: dict[str, float]
    diagnostics: dict[str, Any]


def compute_patch(step: EditStep, request: EditRequest) -> ComputedPatch:
    """Compute the rank-one patch of ``request`` with the chosen backend; the model is unchanged."""
    if step.backend == "easyedit":
        from editsafe.rome.easyedit_backend import compute_patch_with_easyedit

        started = time.perf_counter()
        patch = compute_patch_with_easyedit(step.model, step.tokenizer, request, step.hparams, str(step.hparams_path))
        return ComputedPatch(patch, {"total": time.perf_counter() - started}, {})

    from editsafe.rome import compute_rome_patch

    result = compute_rome_patch(
        step.model, step.tokenizer, request, step.hparams, seed=step.seed, templates=step.templates,
        stats_cache=step.stats_cache,
    )
    return ComputedPatch(result.patch, dict(result.timings), dict(result.diagnostics))


def _folder_record(
    step: EditStep,
    request: EditRequest,
    result: ComputedPatch,
    before: dict[str, Any],
    after: dict[str, Any],
    seconds: float,
    sequence: list[str],
    patch_count: int,
) -> dict[str, Any]:
    return {
        "kind": EDIT_KIND,
        "id": request.id,
        "base": step.base.provenance(),
        "request": request.to_dict(),
        "layer": result.patch.layer,
        "weight_name": result.patch.weight_name,
        "mode": step.mode,
        "sequence": sequence,
        "patch_count": patch_count,
        "seed": step.seed,
        "backend": step.backend,
        "hparams": step.hparams.to_dict(),
        "metrics": {"before": before, "after": after},
        "seconds": seconds,
        "timings": result.timings,
        "diagnostics": result.diagnostics,
        "editsafe_version": __version__,
    }
