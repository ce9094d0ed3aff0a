"""ROME hyperparameters and edit files for runner tests on the tiny random models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from editsafe.models.architectures import ARCHITECTURES

TINY_REQUESTS = [
    {"id": "eiffel", "category": "geo", "prompt": "The Eiffel Tower is located in the city of",
     "subject": "Eiffel Tower", "target_new": "Rome", "target_true": "Paris",
     "paraphrase_prompts": ["The Eiffel Tower stands in"],
     "locality_prompts": [{"prompt": "The capital of Italy is", "answer": "Rome"}]},
    {"id": "mother", "category": "language", "prompt": "The mother tongue of Danielle Darrieux is",
     "subject": "Danielle Darrieux", "target_new": "English", "target_true": "French",
     "locality_prompts": [{"prompt": "The quick brown fox jumps over the", "answer": "lazy dog"}]},
    {"id": "water", "category": "science", "prompt": "Water boils at one hundred",
     "subject": "Water", "target_new": "kelvin"},
]


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> object:
    """Run torch on one thread: tiny matrices are slower with more threads on a shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def write_tiny_hparams(path: Path, architecture: str = "llama", *, steps: int = 25) -> Path:
    """Write a fast ROME file for a 6-layer tiny model: layer 2, fixed templates, no covariance."""
    spec = ARCHITECTURES[architecture]
    record = {
        "alg_name": "ROME", "layers": [2], "fact_token": "subject_last", "v_num_grad_steps": steps,
        "v_lr": 0.5, "v_loss_layer": 5, "v_weight_decay": 0.001, "clamp_norm_factor": 4.0, "kl_factor": 0.0625,
        "mom2_adjustment": False, "context_template_length_params": [[5, 2]],
        "rewrite_module_tmp": spec.rewrite_module_tmp, "layer_module_tmp": spec.layer_module_tmp,
        "mlp_module_tmp": spec.mlp_module_tmp, "attn_module_tmp": spec.attn_module_tmp,
        "ln_f_module": spec.ln_f_module, "lm_head_module": spec.lm_head_module,
        "mom2_dataset": "wikipedia", "mom2_n_samples": 10, "mom2_dtype": "float32",
        "context_templates": ["{}", "The answer is simple. {}"],
    }
    path.write_text(yaml.safe_dump(record, sort_keys=False), encoding="utf-8")
    return path


def write_requests(path: Path, rows: list[dict] | None = None) -> Path:
    """Write edit requests as JSON Lines (the tiny requests by default)."""
    rows = TINY_REQUESTS if rows is None else rows
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
