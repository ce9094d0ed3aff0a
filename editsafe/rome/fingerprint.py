"""The identity of a model's weights, used to key caches."""

from __future__ import annotations

import hashlib
import logging

import torch

logger = logging.getLogger(__name__)


def model_hash(model: torch.nn.Module) -> str:
    """Return a SHA-256 that identifies the model's weights.

    A model loaded through editsafe carries its reference, whose content hash
    is used. Any other model is hashed from its parameters' names, shapes and
    bytes, which reads every weight once.

    NOTE: patches applied in memory after loading do not change the
    reference's hash, so caches keyed by it still describe the loaded weights.
    """
    reference = getattr(model, "editsafe_reference", None)
    if reference is not None:
        return str(reference.content_hash)
    logger.debug("hashing the parameters of a %s that has no editsafe reference", type(model).__name__)
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        data = parameter.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(parameter.shape)}:{data.dtype}\n".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
