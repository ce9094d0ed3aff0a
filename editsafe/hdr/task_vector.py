"""Task vectors τ = θ_tuned − θ_base (Ilharco et al., ICLR 2023), streamed from safetensors."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from editsafe import __version__
from editsafe.errors import ConfigError, OutputExistsError
from editsafe.hdr.harm_vector import (
    HARM_MANIFEST_NAME,
    ModelDifferenceHarmVector,
    StoredHarmVector,
    load_harm_vector,
    write_harm_vector,
)
from editsafe.models.refs import ResolvedModel, resolve_model
from editsafe.models.tensors import TensorSource

logger = logging.getLogger(__name__)


def compute_task_vector(
    base: str | os.PathLike[str] | ResolvedModel | None,
    tuned: str | os.PathLike[str] | ResolvedModel,
    *,
    out: str | os.PathLike[str],
    overwrite: bool = False,
    settings: dict[str, Any] | None = None,
) -> StoredHarmVector:
    """Store τ = θ_tuned − θ_base as a harm-vector folder and return it opened.

    Float tensors are compared one at a time; only tensors that differ are
    stored (float32, computed in float32), the others have τ = 0. ``base`` None
    is the default model. Tensor names and shapes must agree
    (:class:`editsafe.errors.ProvenanceError` names the tensor and both shapes).
    """
    folder = Path(out)
    if (folder / HARM_MANIFEST_NAME).exists() and not overwrite:
        raise OutputExistsError(f"{folder} already contains a harm vector; choose another --out or pass --overwrite")
    base_model = base if isinstance(base, ResolvedModel) else resolve_model(base)
    tuned_model = tuned if isinstance(tuned, ResolvedModel) else resolve_model(tuned)

    with TensorSource(base_model) as base_source, TensorSource(tuned_model) as tuned_source:
        difference = ModelDifferenceHarmVector(base_source, tuned_source)
        changed = [
            name
            for name in tqdm(difference.names, desc="finding changed tensors", unit="tensor")
            if not torch.equal(base_source.get(name), tuned_source.get(name))
        ]
        if not changed:
            raise ConfigError(f"{tuned_model.reference} has the same weights as {base_model.reference}; τ would be zero")
        logger.info("%d of %d float tensors differ", len(changed), len(difference.names))
        manifest = {
            "base": base_model.provenance(),
            "source": {"kind": "model", "model": tuned_model.provenance()},
            "settings": dict(settings or {}),
            "created_by": f"editsafe {__version__}",
        }
        shapes = {name: difference.shape(name) for name in changed}
        write_harm_vector(folder, changed, shapes, difference.get_rows, manifest)
    return load_harm_vector(folder)
