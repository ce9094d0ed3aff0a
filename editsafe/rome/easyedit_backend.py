"""The ``easyedit`` backend: run EasyEdit's own ROME and store its result as a rank-one patch.

EasyEdit (the ``easyeditor`` package) pins old versions of torch and
transformers, so it normally lives in its own environment. This backend
imports it only when called. EasyEdit applies the edit to a copy of the
model and returns the edited copy. The patch is read back as the difference
of the rewritten weight, which ROME changes by a rank-one matrix.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from editsafe.errors import EditError, MissingDependencyError
from editsafe.models.patches import RankOnePatch
from editsafe.rome.hparams import RomeHyperParams
from editsafe.rome.requests import EditRequest
from editsafe.rome.tracing import get_module, is_transposed_weight

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "the easyedit backend needs EasyEdit's 'easyeditor' package, which pins torch 2.0.1 and transformers 4.30.1; "
    "install it in a separate environment (pip install easyeditor) and run editsafe from there, "
    "or use the default native backend"
)


def import_easyedit() -> Any:
    """Import and return EasyEdit's ROME entry points, or raise MissingDependencyError."""
    try:
        from easyeditor import ROMEHyperParams, apply_rome_to_model  # type: ignore[import-not-found]
    except ImportError as error:
        raise MissingDependencyError(f"{INSTALL_HINT} (import failed: {error})") from error
    return ROMEHyperParams, apply_rome_to_model


def compute_patch_with_easyedit(
    model: torch.nn.Module, tokenizer: Any, request: EditRequest, hparams: RomeHyperParams, hparams_path: str
) -> RankOnePatch:
    """Run EasyEdit's ROME on one request and return its update as a :class:`RankOnePatch`.

    ``hparams_path`` is the YAML file EasyEdit reads (it must hold only
    EasyEdit's keys). The model is left unchanged.
    """
    easyedit_hparams_class, apply_rome_to_model = import_easyedit()
    easyedit_hparams = easyedit_hparams_class.from_hparams(hparams_path)
    module_name = hparams.rewrite_module_tmp.format(hparams.layer)
    weight_name = f"{module_name}.weight"
    weight = dict(model.named_parameters())[weight_name]
    original = weight.detach().clone()

    easyedit_request = {"prompt": request.filled_prompt, "subject": request.subject,
                        "target_new": request.target_new}
    try:
        edited, _ = apply_rome_to_model(model, tokenizer, [easyedit_request], easyedit_hparams, copy=True,
                                        return_orig_weights=False)
        difference = dict(edited.named_parameters())[weight_name].detach().float() - original.float()
    finally:
        with torch.no_grad():
            weight.copy_(original)

    transposed = is_transposed_weight(get_module(model, module_name))
    return _rank_one_factors(difference, weight_name, hparams.layer, transposed)


def _rank_one_factors(difference: torch.Tensor, weight_name: str, layer: int, transposed: bool) -> RankOnePatch:
    matrix = difference.T if transposed else difference
    left, singular_values, right_t = torch.linalg.svd(matrix.double(), full_matrices=False)
    if singular_values[0] == 0:
        raise EditError(f"EasyEdit's ROME left {weight_name} unchanged")
    residual = float(singular_values[1] / singular_values[0]) if singular_values.numel() > 1 else 0.0
    if residual > 1e-3:
        logger.warning("EasyEdit's change of %s is not rank one (second/first singular value %.2e)", weight_name,
                       residual)
    # matrix = σ₁ a bᵀ with a along the output and b along the input: right = σ₁ a, u = b.
    right = (singular_values[0] * left[:, 0]).float()
    u = right_t[0].float()
    return RankOnePatch(weight_name=weight_name, layer=layer, u=u, right=right, transposed=transposed)
