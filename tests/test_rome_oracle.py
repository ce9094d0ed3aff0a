"""editsafe's ROME against the vectors EasyEdit's ROME computed on the default model.

The figures in tests/data/reference come from EasyEdit's ROME code with the
settings stored beside them (see the README there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from editsafe.rome import EditRequest, RomeHyperParams, RomeResult, compute_rome_patch

REFERENCE = Path(__file__).parent / "data" / "reference"
SETTINGS = json.loads((REFERENCE / "rome_smollm2.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def default_model(default_model_dir: Path) -> tuple[Any, Any]:
    from editsafe import load_model
    from editsafe.io import sha256_file

    if sha256_file(default_model_dir / "model.safetensors") != SETTINGS["model"]["model.safetensors_sha256"]:
        pytest.skip("the prepared default model differs from the one the reference was computed on")
    model, tokenizer = load_model(default_model_dir, device="cpu")
    tokenizer.padding_side = "right"
    return model, tokenizer


@pytest.fixture(scope="module", params=sorted(SETTINGS["requests"]))
def edit(request: pytest.FixtureRequest, default_model: tuple[Any, Any]) -> tuple[RomeResult, dict[str, Any]]:
    model, tokenizer = default_model
    reference = SETTINGS["requests"][request.param]
    hparams = RomeHyperParams.from_dict(dict(SETTINGS["hparams"]), source="rome_smollm2.json")
    result = compute_rome_patch(
        model, tokenizer, EditRequest(**reference["request"]), hparams.replace(kl_prompt=SETTINGS["kl_prompt"]),
        seed=SETTINGS["seed"], templates=list(SETTINGS["context_templates"]),
    )
    return result, reference


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


@pytest.mark.slow
def test_oracle_u_direction(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    vectors = load_file(str(REFERENCE / reference["vectors"]))
    assert _cosine(result.patch.u, vectors["u"]) >= 0.9999


@pytest.mark.slow
def test_oracle_right_direction(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    vectors = load_file(str(REFERENCE / reference["vectors"]))
    assert _cosine(result.patch.right, vectors["v"]) >= 0.9999


@pytest.mark.slow
def test_oracle_right_norm(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    expected = load_file(str(REFERENCE / reference["vectors"]))["v"].double().norm().item()
    assert result.patch.right.double().norm().item() == pytest.approx(expected, rel=1e-3)


@pytest.mark.slow
def test_oracle_weight_name(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    assert result.patch.weight_name == reference["weight_name"]
    assert not result.patch.transposed


@pytest.mark.slow
def test_oracle_step_count(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    assert result.diagnostics["steps"] == reference["v_optimisation_steps"]
    assert result.diagnostics["losses"] == pytest.approx(reference["v_optimisation_losses"], abs=2e-3)


@pytest.mark.slow
def test_oracle_key_and_values(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    diagnostics = result.diagnostics
    assert diagnostics["k_dot_u"] == pytest.approx(reference["k_dot_u"], rel=1e-4)
    assert diagnostics["initial_value_norm"] == pytest.approx(reference["target_init_norm"], rel=1e-4)
    assert diagnostics["target_value_norm"] == pytest.approx(reference["target_norm"], rel=1e-3)


@pytest.mark.slow
def test_oracle_target_probability(edit: tuple[RomeResult, dict[str, Any]]) -> None:
    result, reference = edit
    diagnostics = result.diagnostics
    assert diagnostics["p_first_target_before"] == pytest.approx(reference["p_first_target_before"], rel=1e-3)
    assert diagnostics["p_first_target_after"] == pytest.approx(reference["p_first_target_after"], abs=1e-3)
