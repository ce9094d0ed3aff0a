"""Loading any model reference as a transformers model and tokenizer."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from editsafe.errors import ModelReferenceError
from editsafe.models.patches import apply_patch, load_patches
from editsafe.models.refs import PATCH_FILE_NAME, ResolvedModel, resolve_model

logger = logging.getLogger(__name__)


def load_model(
    reference: str | os.PathLike[str] | ResolvedModel | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    *,
    trust_remote_code: bool = False,
) -> tuple[Any, Any]:
    """Load a model reference and return ``(model, tokenizer)`` in eval mode.

    ``device`` defaults to CUDA when available, else CPU. ``dtype`` defaults to
    float32 on the CPU and to the checkpoint's own dtype on an accelerator. An
    edit folder is rebuilt from its base plus its rank-one patches; a safe-model
    folder comes back with its in-context safety vector installed (the handle
    is stored as ``model.editsafe_icv``).
    """
    resolved = reference if isinstance(reference, ResolvedModel) else resolve_model(reference)
    model = load_weights(resolved, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(resolved, trust_remote_code=trust_remote_code)

    if resolved.kind == "safe" and resolved.manifest.get("icv"):
        from editsafe.icv.install import install_from_safe_folder

        model.editsafe_icv = install_from_safe_folder(model, resolved.weights_folder, resolved.manifest)
    return model, tokenizer


def load_weights(
    resolved: ResolvedModel,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> Any:
    """Load the transformers model of a resolved reference (edits applied, no ICV)."""
    from transformers import AutoModelForCausalLM

    target_device = torch.device(device) if device is not None else _default_device()
    if dtype is None:
        dtype = torch.float32 if target_device.type == "cpu" else "auto"
    elif isinstance(dtype, str) and dtype != "auto":
        dtype = _parse_dtype(dtype)

    logger.debug("loading weights from %s (dtype %s, device %s)", resolved.weights_folder, dtype, target_device)
    model = AutoModelForCausalLM.from_pretrained(
        resolved.weights_folder, dtype=dtype, trust_remote_code=trust_remote_code
    )
    model.to(target_device)
    model.eval()

    if resolved.kind == "edit":
        assert resolved.artefact_folder is not None
        for patch in load_patches(resolved.artefact_folder / PATCH_FILE_NAME):
            apply_patch(model, patch)
    model.editsafe_reference = resolved
    return model


def load_tokenizer(resolved: ResolvedModel, *, trust_remote_code: bool = False) -> Any:
    """Load the tokenizer of a resolved reference; a missing pad token becomes the EOS token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolved.weights_folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelReferenceError(f"{resolved.reference}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def _parse_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name.lower()]
    except KeyError:
        raise ModelReferenceError(f"unknown dtype {name!r}; allowed: {', '.join(sorted(_DTYPES))} or auto") from None
