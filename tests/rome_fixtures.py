"""Hyperparameters and requests for ROME tests on the tiny random models."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from editsafe.models.architectures import architecture_for
from editsafe.rome import EditRequest, RomeHyperParams

EIFFEL = EditRequest(
    prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", target_new="Rome", id="eiffel"
)
DARRIEUX = EditRequest(
    prompt="The mother tongue of {} is", subject="Danielle Darrieux", target_new="English", id="darrieux"
)


def tiny_hparams(model_type: str, **changes: object) -> RomeHyperParams:
    """ROME settings for a 6-layer tiny model: rewrite layer 4, loss at layer 5.

    The tiny models' MLP outputs have norms near 0.02, so the weight-decay
    term ||δ||/||h||² would outweigh the target NLL; it is switched off and
    the clamp is loosened instead.
    """
    architecture = architecture_for(model_type)
    values: dict[str, object] = dict(
        alg_name="ROME", layers=(4,), fact_token="subject_last", v_num_grad_steps=12, v_lr=0.5, v_loss_layer=5,
        v_weight_decay=0.0, clamp_norm_factor=100.0, kl_factor=0.0625, mom2_adjustment=False,
        context_template_length_params=((3, 2), (5, 2)),
        rewrite_module_tmp=architecture.rewrite_module_tmp, layer_module_tmp=architecture.layer_module_tmp,
        mlp_module_tmp=architecture.mlp_module_tmp, attn_module_tmp=architecture.attn_module_tmp,
        ln_f_module=architecture.ln_f_module, lm_head_module=architecture.lm_head_module,
        mom2_dataset="wikipedia", mom2_n_samples=100, mom2_dtype="float32",
    )
    values.update(changes)
    return RomeHyperParams(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run each test on one thread: tiny models run far slower with several threads on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
