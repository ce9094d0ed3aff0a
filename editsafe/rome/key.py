"""The key: what the rewritten weight W reads at the subject, and the left vector u.

k* is the mean over the context templates of W's input at the fact token of
the templated prompt. u = k* / ||k*||, or with ``mom2_adjustment``
u = C⁻¹k* / ||C⁻¹k*||, where C is the uncentered second moment of W's inputs
(Meng et al., "Locating and Editing Factual Associations in GPT", 2022).
"""

from __future__ import annotations

from typing import Any

import torch

from editsafe.errors import ConfigError
from editsafe.rome.covariance import SecondMomentCache
from editsafe.rome.hparams import RomeHyperParams
from editsafe.rome.positions import EncodedPrompt, encode_prompt, pad_batch, pad_token_id
from editsafe.rome.requests import EditRequest
from editsafe.rome.tracing import get_module, recording


def module_io_at_fact_tokens(
    model: torch.nn.Module, tokenizer: Any, module_name: str, prompts: list[EncodedPrompt]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the module's inputs and outputs (float32, one row per prompt) at each prompt's fact token."""
    module = get_module(model, module_name)
    device = next(model.parameters()).device
    batch = pad_batch([prompt.input_ids for prompt in prompts], pad_token_id(tokenizer),
                      tokenizer.padding_side, device)
    rows = torch.arange(len(prompts), device=device)
    columns = torch.tensor([batch.at(i, prompt.fact_index) for i, prompt in enumerate(prompts)], device=device)
    with torch.no_grad(), recording(module) as record:
        model(**batch.model_inputs())
    inputs = record["input"][rows, columns].float()
    outputs = record["output"][rows, columns].float()
    return inputs, outputs


def compute_key(
    model: torch.nn.Module,
    tokenizer: Any,
    request: EditRequest,
    hparams: RomeHyperParams,
    context_templates: list[str],
    stats_cache: SecondMomentCache | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(k_star, u)``: the template-averaged key and the unit left vector (float32)."""
    prompts = [
        encode_prompt(tokenizer, request, hparams.fact_token, context_template=template)
        for template in context_templates
    ]
    module_name = hparams.rewrite_module_tmp.format(hparams.layer)
    keys, _ = module_io_at_fact_tokens(model, tokenizer, module_name, prompts)
    k_star = keys.mean(dim=0)

    left = k_star
    if hparams.mom2_adjustment:
        if hparams.mom2_corpus is None:
            raise ConfigError(
                "mom2_adjustment is true but mom2_corpus is not set; set mom2_corpus to a local text corpus "
                "(JSONL with a 'text' field, or plain text), or set mom2_adjustment to false"
            )
        cache = stats_cache if stats_cache is not None else SecondMomentCache()
        moment = cache.second_moment(model, tokenizer, module_name, hparams.mom2_corpus, hparams.mom2_n_samples,
                                     hparams.mom2_torch_dtype)
        solved = torch.linalg.solve(moment.to(torch.float64), k_star.to(torch.float64).cpu())
        left = solved.to(torch.float32).to(k_star.device)
    return k_star, left / left.norm()
