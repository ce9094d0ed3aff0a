"""The rank-one update ΔW = right ⊗ u that writes v* at the key k.

With k the input of W at the fact token of the bare prompt, o = W k its
current output there and v* the optimised value, right = (v* − o) / (k · u),
so that (W + right ⊗ u) k = v* for the bare prompt's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from editsafe.errors import NumericalError
from editsafe.models.architectures import ARCHITECTURES
from editsafe.models.patches import RankOnePatch
from editsafe.rome.hparams import RomeHyperParams
from editsafe.rome.key import module_io_at_fact_tokens
from editsafe.rome.positions import encode_prompt
from editsafe.rome.requests import EditRequest
from editsafe.rome.tracing import get_module, is_transposed_weight


@dataclass
class RankOneUpdate:
    """The patch and the quantities it was solved from."""

    patch: RankOnePatch
    key: torch.Tensor
    current_output: torch.Tensor
    key_dot_u: float


def compute_update(
    model: torch.nn.Module,
    tokenizer: Any,
    request: EditRequest,
    hparams: RomeHyperParams,
    u: torch.Tensor,
    target_value: torch.Tensor,
) -> RankOneUpdate:
    """Solve for the right vector and return the rank-one patch of W = ``rewrite_module_tmp(l)``."""
    module_name = hparams.rewrite_module_tmp.format(hparams.layer)
    prompt = encode_prompt(tokenizer, request, hparams.fact_token)
    inputs, outputs = module_io_at_fact_tokens(model, tokenizer, module_name, [prompt])
    key, current_output = inputs[0], outputs[0]

    key_dot_u = torch.dot(key, u)
    if not torch.isfinite(key_dot_u) or key_dot_u.abs() < 1e-8:
        raise NumericalError(
            f"request {request.label}: the key and u are orthogonal or non-finite (k·u = {key_dot_u.item():.3g}), "
            "so no rank-one update along u can reach the target value"
        )
    right = (target_value.to(current_output.device) - current_output) / key_dot_u

    module = get_module(model, module_name)
    patch = RankOnePatch(
        weight_name=f"{module_name}.weight", layer=hparams.layer, u=u.detach().float().cpu(),
        right=right.detach().float().cpu(), transposed=_is_transposed(model, module),
    )
    return RankOneUpdate(patch=patch, key=key, current_output=current_output, key_dot_u=float(key_dot_u.item()))


def _is_transposed(model: torch.nn.Module, module: torch.nn.Module) -> bool:
    architecture = ARCHITECTURES.get(getattr(model.config, "model_type", ""))
    return is_transposed_weight(module) or bool(architecture and architecture.rewrite_is_transposed)
