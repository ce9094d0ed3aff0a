"""ROME for one request (:func:`compute_rome_patch`) and sequential editing (:func:`apply_rome`)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from editsafe.errors import ConfigError, EditError, NumericalError
from editsafe.models.patches import RankOnePatch, apply_patch
from editsafe.paths import bundled_dir
from editsafe.rome.covariance import SecondMomentCache
from editsafe.rome.hparams import RomeHyperParams, validate_for_model
from editsafe.rome.key import compute_key
from editsafe.rome.positions import encode_prompt, pad_batch, pad_token_id, target_token_ids
from editsafe.rome.requests import EditRequest
from editsafe.rome.templates import TemplateCache
from editsafe.rome.tracing import frozen_parameters, get_module, rank_one_added
from editsafe.rome.update import compute_update
from editsafe.rome.value import compute_value

logger = logging.getLogger(__name__)


@dataclass
class RomeResult:
    """The rank-one patch of one request, with how long each step took and what it computed.

    ``timings`` has the seconds of ``templates``, ``key``, ``value`` and
    ``update``. ``diagnostics`` contains the value losses and step count, the
    target's probability and NLL on the bare prompt before and after the
    patch, k·u and the norms of h, δ, v* and the right vector.
    """

    request: EditRequest
    patch: RankOnePatch
    context_templates: list[str]
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)


def compute_rome_patch(
    model: torch.nn.Module,
    tokenizer: Any,
    request: EditRequest | dict[str, Any],
    hparams: RomeHyperParams,
    *,
    seed: int | None = None,
    templates: list[str] | tuple[str, ...] | TemplateCache | None = None,
    stats_cache: SecondMomentCache | None = None,
) -> RomeResult:
    """Compute the ROME patch ΔW = right ⊗ u for one request without changing the model.

    ``seed`` (default: ``hparams.seed``, else 0) seeds the sampling of the
    context templates. ``templates`` is a fixed template list or a
    :class:`TemplateCache` shared between calls; ``hparams.context_templates``
    wins over sampling when set. The model's weights are never written; hooks,
    ``requires_grad`` flags and the train/eval mode are restored on exit, also
    when an exception is raised.
    """
    if not isinstance(request, EditRequest):
        request = EditRequest.from_dict(request)
    validate_for_model(hparams, model)
    chosen_seed = seed
    if chosen_seed is None:
        chosen_seed = hparams.seed if hparams.seed is not None else 0
    timings: dict[str, float] = {}

    started = time.perf_counter()
    context_templates = _context_templates(model, tokenizer, hparams, chosen_seed, templates)
    timings["templates"] = time.perf_counter() - started

    with frozen_parameters(model):
        target_ids = target_token_ids(tokenizer, request.filled_prompt, request.target_new)
        before = score_target(model, tokenizer, request, hparams, target_ids)

        started = time.perf_counter()
        _, u = compute_key(model, tokenizer, request, hparams, context_templates, stats_cache)
        timings["key"] = time.perf_counter() - started

        started = time.perf_counter()
        value = compute_value(model, tokenizer, request, hparams, context_templates, target_ids)
        timings["value"] = time.perf_counter() - started

        started = time.perf_counter()
        update = compute_update(model, tokenizer, request, hparams, u, value.target_value)
        timings["update"] = time.perf_counter() - started

        _check_patch(model, update.patch, request)
        rewrite_module = get_module(model, hparams.rewrite_module_tmp.format(hparams.layer))
        device = next(model.parameters()).device
        with rank_one_added(rewrite_module, update.patch.u.to(device), update.patch.right.to(device)):
            after = score_target(model, tokenizer, request, hparams, target_ids)

    diagnostics = {
        "losses": value.losses,
        "steps": value.steps,
        "target_ids": list(target_ids),
        "p_first_target_before": before["p_first_target"],
        "p_first_target_after": after["p_first_target"],
        "mean_target_nll_before": before["mean_target_nll"],
        "mean_target_nll_after": after["mean_target_nll"],
        "k_dot_u": update.key_dot_u,
        "initial_value_norm": float(value.initial_value.norm()),
        "delta_norm": float(value.delta.norm()),
        "target_value_norm": float(value.target_value.norm()),
        "right_norm": float(update.patch.right.double().norm()),
    }
    logger.info(
        "request %s: p(target) %.4f -> %.4f after %d value steps", request.label, before["p_first_target"],
        after["p_first_target"], value.steps,
    )
    return RomeResult(request=request, patch=update.patch, context_templates=context_templates, seed=chosen_seed,
                      timings=timings, diagnostics=diagnostics)


def apply_rome(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Iterable[EditRequest | dict[str, Any]],
    hparams: RomeHyperParams,
    **kwargs: Any,
) -> list[RomeResult]:
    """Edit the model in place, one request after the other, each on the model with the earlier edits applied.

    All requests are validated first. Each patch is then computed, checked
    (finite, right shape) and added to the weight. When any request fails, every weight changed so far is
    restored and the error is raised, so the model is left as it was.
    ``kwargs`` go to :func:`compute_rome_patch`.
    """
    # Every request is checked before the first weight changes.
    prepared = [
        request if isinstance(request, EditRequest) else EditRequest.from_dict(request, source=f"request {index}")
        for index, request in enumerate(requests)
    ]
    kwargs.setdefault("templates", TemplateCache())
    parameters = dict(model.named_parameters())
    originals: dict[str, torch.Tensor] = {}
    results: list[RomeResult] = []
    try:
        for request in prepared:
            result = compute_rome_patch(model, tokenizer, request, hparams, **kwargs)
            name = result.patch.weight_name
            if name not in originals:
                originals[name] = parameters[name].detach().clone()
            apply_patch(model, result.patch)
            results.append(result)
    except BaseException:
        with torch.no_grad():
            for name, original in originals.items():
                parameters[name].copy_(original)
        raise
    return results


def default_hparams_path(model: torch.nn.Module | str) -> Path:
    """Return the bundled ROME file for a model: ``hparams/ROME/<alias or family>.yaml``.

    The alias the model was loaded by comes first. Next comes a bundled file
    whose name occurs in the model's name or path, and last the file of its
    architecture family. Llama models with a 128256-token vocabulary count as
    Llama 3.
    """
    folder = bundled_dir("hparams") / "ROME"
    available = {path.stem: path for path in sorted(folder.glob("*.yaml"))}

    names: list[str] = []
    if isinstance(model, str):
        names.append(model)
    else:
        reference = getattr(model, "editsafe_reference", None)
        while reference is not None:
            names.append(str(reference.reference))
            reference = reference.base
        names.append(str(getattr(model.config, "_name_or_path", "") or ""))
    for name in names:
        stem = Path(name).name.lower()
        if stem in available:
            return available[stem]
    for name in names:
        lowered = name.lower()
        for stem, path in available.items():
            if stem in lowered:
                return path

    if not isinstance(model, str):
        family = _family_file(model.config)
        if family in available:
            return available[family]
    raise ConfigError(
        f"no bundled ROME hyperparameters for {names[0] if names else model!r}; bundled files: "
        f"{', '.join(available) or 'none'} in {folder}. Pass a hyperparameter file explicitly"
    )


def _family_file(config: Any) -> str:
    model_type = getattr(config, "model_type", "")
    if model_type == "llama":
        return "llama-3-8b" if getattr(config, "vocab_size", 0) == 128256 else "llama-2-7b"
    return {"mistral": "mistral-7b", "gpt2": "gpt2-xl"}.get(model_type, "")


def score_target(
    model: torch.nn.Module, tokenizer: Any, request: EditRequest, hparams: RomeHyperParams,
    target_ids: tuple[int, ...],
) -> dict[str, float]:
    """Return p(first target token) and the mean target NLL per token on the bare prompt (teacher forcing)."""
    prompt = encode_prompt(tokenizer, request, hparams.fact_token, target_ids=target_ids)
    device = next(model.parameters()).device
    batch = pad_batch([prompt.input_ids], pad_token_id(tokenizer), tokenizer.padding_side, device)
    with torch.no_grad():
        logits = model(**batch.model_inputs()).logits[0]
    columns = torch.tensor([batch.at(0, position) for position in prompt.target_positions], device=device)
    log_probs = F.log_softmax(logits[columns].double(), dim=-1)
    token_log_probs = log_probs.gather(1, torch.tensor(target_ids, device=device).unsqueeze(1)).squeeze(1)
    return {
        "p_first_target": float(token_log_probs[0].exp()),
        "mean_target_nll": float(-token_log_probs.mean()),
    }


def _context_templates(
    model: torch.nn.Module, tokenizer: Any, hparams: RomeHyperParams, seed: int,
    templates: list[str] | tuple[str, ...] | TemplateCache | None,
) -> list[str]:
    if isinstance(templates, (list, tuple)):
        for template in templates:
            if not isinstance(template, str) or template.count("{}") != 1:
                raise ConfigError(f"context template {template!r} needs exactly one {{}} for the prompt")
        return list(templates)
    if hparams.context_templates is not None:
        return list(hparams.context_templates)
    cache = templates if templates is not None else TemplateCache()
    return cache.get(model, tokenizer, hparams.context_template_length_params, seed)


def _check_patch(model: torch.nn.Module, patch: RankOnePatch, request: EditRequest) -> None:
    weight = dict(model.named_parameters()).get(patch.weight_name)
    if weight is None:
        raise EditError(f"request {request.label}: the model has no weight {patch.weight_name}")
    shape = (patch.u.numel(), patch.right.numel()) if patch.transposed else (patch.right.numel(), patch.u.numel())
    if shape != tuple(weight.shape):
        raise EditError(
            f"request {request.label}: the update has shape {shape} but {patch.weight_name} "
            f"has shape {tuple(weight.shape)}"
        )
    for name, vector in (("u", patch.u), ("right", patch.right)):
        if not torch.isfinite(vector).all():
            raise NumericalError(f"request {request.label}: the {name} vector contains NaN or infinite values")
    if math.isclose(float(patch.right.norm()), 0.0):
        logger.warning("request %s: the right vector is zero, so the edit changes nothing", request.label)
