"""ROME knowledge edits (Meng et al., "Locating and Editing Factual Associations in GPT", 2022).

:func:`compute_rome_patch` computes the rank-one patch of one request without
changing the model; :func:`apply_rome` applies a sequence of requests.
Hyperparameters use EasyEdit's ROME YAML keys (:func:`load_hparams`).
"""

from editsafe.rome.covariance import SecondMomentCache
from editsafe.rome.editor import RomeResult, apply_rome, compute_rome_patch, default_hparams_path, score_target
from editsafe.rome.hparams import RomeHyperParams, load_hparams, save_hparams, validate_for_model
from editsafe.rome.requests import EditRequest
from editsafe.rome.templates import TemplateCache, sample_context_templates

__all__ = [
    "EditRequest", "RomeHyperParams", "RomeResult", "SecondMomentCache", "TemplateCache", "apply_rome",
    "compute_rome_patch", "default_hparams_path", "load_hparams", "sample_context_templates", "save_hparams",
    "score_target", "validate_for_model",
]
