"""The value: the MLP output at the subject that makes the model predict the new target.

A vector δ is added to the output of ``mlp_module_tmp(l)`` at the fact token
of every prompt, and Adam (learning rate ``v_lr``) minimises

    L(δ) = mean over templates of NLL(target_new | templated prompt) / T
           + kl_factor · KL(p_δ ‖ p_0) on the KL prompt
           + v_weight_decay · ||δ|| / ||h||²

T is the number of target tokens. The NLL is read at the output of layer
``v_loss_layer`` through the final norm and the LM head. The KL compares the
next-token distributions at the KL prompt's fact token with δ and without it.
h is the unedited MLP output at the fact token of the first templated prompt.

The weight-decay term uses ||δ|| (not its square) over ||h||², as EasyEdit's
ROME computes it, so that EasyEdit's hyperparameters carry over. After each
step ||δ|| is clamped to ``clamp_norm_factor`` · ||h||. The loop stops early
once L < ``EARLY_STOP_LOSS`` and never steps after its last forward pass, so
at most ``v_num_grad_steps - 1`` updates are made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from editsafe.errors import ConfigError, NumericalError
from editsafe.rome.hparams import RomeHyperParams
from editsafe.rome.positions import EncodedPrompt, PaddedBatch, encode_prompt, pad_batch, pad_token_id
from editsafe.rome.requests import EditRequest
from editsafe.rome.tracing import editing_output, frozen_parameters, get_module, output_tensor, recording

logger = logging.getLogger(__name__)

EARLY_STOP_LOSS = 5e-2


@dataclass
class ValueResult:
    """The optimised δ, the unedited MLP output h, and the loss of every forward pass."""

    delta: torch.Tensor
    initial_value: torch.Tensor
    losses: list[float]

    @property
    def target_value(self) -> torch.Tensor:
        """v* = h + δ."""
        return self.initial_value + self.delta

    @property
    def steps(self) -> int:
        """The number of forward passes (the last one may have stopped the loop)."""
        return len(self.losses)


def compute_value(
    model: torch.nn.Module,
    tokenizer: Any,
    request: EditRequest,
    hparams: RomeHyperParams,
    context_templates: list[str],
    target_ids: tuple[int, ...],
) -> ValueResult:
    """Optimise δ for one request (see the module docstring for the objective)."""
    rewriting = [
        encode_prompt(tokenizer, request, hparams.fact_token, context_template=template, target_ids=target_ids)
        for template in context_templates
    ]
    kl_prompt = encode_prompt(tokenizer, request, hparams.fact_token, subject_template=hparams.kl_template)
    prompts = rewriting + [kl_prompt]
    device = next(model.parameters()).device
    batch = pad_batch([prompt.input_ids for prompt in prompts], pad_token_id(tokenizer), tokenizer.padding_side,
                      device)
    selection = _Selection.build(batch, prompts, len(rewriting), device)

    layer = hparams.layer
    mlp = get_module(model, hparams.mlp_module_tmp.format(layer))
    loss_layer = get_module(model, hparams.layer_module_tmp.format(max(hparams.v_loss_layer, layer)))
    final_norm = get_module(model, hparams.ln_f_module)
    lm_head = get_module(model, hparams.lm_head_module)

    delta = torch.zeros(_hidden_size(model), dtype=torch.float32, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([delta], lr=hparams.v_lr)
    initial: dict[str, torch.Tensor] = {}

    def add_delta(hidden: torch.Tensor) -> torch.Tensor:
        # h is read on the first pass, before δ is added (δ is zero then anyway).
        if "h" not in initial:
            initial["h"] = hidden[selection.fact_rows[0], selection.fact_columns[0]].detach().float().clone()
        rows, columns = selection.fact_rows, selection.fact_columns
        return hidden.index_put((rows, columns), hidden[rows, columns] + delta.to(hidden.dtype))

    losses: list[float] = []
    kl_reference: torch.Tensor | None = None
    with frozen_parameters(model), editing_output(mlp, add_delta), recording(loss_layer) as record:
        for step in range(hparams.v_num_grad_steps):
            optimizer.zero_grad()
            kl_logits = _logits_at(model, lm_head, batch, selection.kl_rows, selection.kl_columns)

            # KL term at the KL prompt's fact token; the reference is the pass with δ = 0.
            kl_log_probs = F.log_softmax(kl_logits.float(), dim=-1)
            if kl_reference is None:
                kl_reference = kl_log_probs.detach().clone()
            kl_loss = F.kl_div(kl_reference, kl_log_probs, log_target=True, reduction="batchmean")

            # Target NLL at the loss layer, through the final norm and the LM head.
            hidden = output_tensor(record["output"])[selection.target_rows, selection.target_columns]
            log_probs = F.log_softmax(lm_head(final_norm(hidden)).float(), dim=-1)
            token_log_probs = log_probs.gather(1, selection.target_ids.unsqueeze(1)).squeeze(1)
            nll_per_prompt = -token_log_probs.view(len(rewriting), len(target_ids)).sum(dim=1) / len(target_ids)
            nll = nll_per_prompt.mean()

            h_norm = initial["h"].norm()
            weight_decay = hparams.v_weight_decay * (delta.norm() / h_norm**2)
            loss = nll + hparams.kl_factor * kl_loss + weight_decay
            losses.append(float(loss.item()))
            logger.debug("step %d: loss %.4f (nll %.4f, kl %.4f, decay %.5f)", step, losses[-1], nll.item(),
                         kl_loss.item(), weight_decay.item())
            if not torch.isfinite(loss):
                raise NumericalError(
                    f"request {request.label}: the value optimisation reached a non-finite loss at step {step}; "
                    "lower v_lr or check the model's weights"
                )
            if loss.item() < EARLY_STOP_LOSS or step == hparams.v_num_grad_steps - 1:
                break

            loss.backward()
            optimizer.step()
            max_norm = hparams.clamp_norm_factor * h_norm
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())

    return ValueResult(delta=delta.detach().clone(), initial_value=initial["h"], losses=losses)


@dataclass
class _Selection:
    """Padded-batch coordinates of the fact tokens, the target predictions and the KL prompt."""

    fact_rows: torch.Tensor
    fact_columns: torch.Tensor
    target_rows: torch.Tensor
    target_columns: torch.Tensor
    target_ids: torch.Tensor
    kl_rows: torch.Tensor
    kl_columns: torch.Tensor

    @classmethod
    def build(cls, batch: PaddedBatch, prompts: list[EncodedPrompt], n_rewriting: int,
              device: torch.device) -> _Selection:
        def tensor(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.long, device=device)

        fact_columns = [batch.at(row, prompt.fact_index) for row, prompt in enumerate(prompts)]
        target_rows, target_columns, target_ids = [], [], []
        for row, prompt in enumerate(prompts[:n_rewriting]):
            for position, token in zip(prompt.target_positions, prompt.target_ids):
                target_rows.append(row)
                target_columns.append(batch.at(row, position))
                target_ids.append(token)
        kl_rows = list(range(n_rewriting, len(prompts)))
        return cls(
            fact_rows=tensor(list(range(len(prompts)))), fact_columns=tensor(fact_columns),
            target_rows=tensor(target_rows), target_columns=tensor(target_columns), target_ids=tensor(target_ids),
            kl_rows=tensor(kl_rows), kl_columns=tensor(fact_columns[n_rewriting:]),
        )


def _logits_at(model: torch.nn.Module, lm_head: torch.nn.Module, batch: PaddedBatch, rows: torch.Tensor,
               columns: torch.Tensor) -> torch.Tensor:
    """Return the next-token logits at the given batch positions.

    The decoder runs without its LM head and the head is applied to the
    selected positions only, which skips most of the vocabulary projection.
    NOTE: models whose head does more than a linear map of the decoder's
    output (such as logit soft-capping) would need the full forward here.
    """
    decoder = model.base_model
    if decoder is model:
        return model(**batch.model_inputs()).logits[rows, columns]
    hidden = decoder(**batch.model_inputs()).last_hidden_state
    return lm_head(hidden[rows, columns])


def _hidden_size(model: torch.nn.Module) -> int:
    config = model.config
    for attribute in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, attribute, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"cannot read the hidden size from config {type(config).__name__}")
