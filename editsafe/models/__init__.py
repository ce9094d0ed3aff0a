"""Model references, the embedded default model, loading and rank-one patches."""

from editsafe.models.architectures import Architecture, architecture_for, num_layers
from editsafe.models.default import DEFAULT_ALIAS, prepare_alias
from editsafe.models.loading import load_model, load_tokenizer, load_weights
from editsafe.models.patches import RankOnePatch, apply_patch, load_patches, save_patches
from editsafe.models.refs import ResolvedModel, resolve_model

__all__ = [
    "Architecture", "DEFAULT_ALIAS", "RankOnePatch", "ResolvedModel", "apply_patch", "architecture_for",
    "load_model", "load_patches", "load_tokenizer", "load_weights", "num_layers", "prepare_alias",
    "resolve_model", "save_patches",
]
