"""Second-moment statistics of the rewritten weight's inputs and their disk cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from editsafe import load_model
from editsafe.errors import ConfigError
from editsafe.rome import SecondMomentCache
from editsafe.rome import covariance as covariance_module
from editsafe.rome.covariance import compute_second_moment, read_corpus
from editsafe.rome.key import compute_key
from editsafe.rome.tracing import get_module, recording
from tests.rome_fixtures import EIFFEL, one_thread, tiny_hparams  # noqa: F401


@pytest.fixture
def tiny(tiny_model_dir: Path) -> tuple[Any, Any, str]:
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu")
    return model, tokenizer, model.config.model_type


@pytest.fixture
def corpus(shared_data: Path) -> Path:
    return shared_data / "gutenberg_pride_and_prejudice.jsonl"


def _module_name(model_type: str) -> str:
    return tiny_hparams(model_type).rewrite_module_tmp.format(4)


def test_moment_matches_unpadded_sum(tiny: tuple[Any, Any, str], corpus: Path) -> None:
    model, tokenizer, model_type = tiny
    texts = read_corpus(corpus, 5)
    moment = compute_second_moment(model, tokenizer, _module_name(model_type), texts)

    module = get_module(model, _module_name(model_type))
    keys = []
    with torch.no_grad(), recording(module) as record:
        for text in texts:
            encoded = tokenizer(text, truncation=True, max_length=covariance_module.MAX_TOKENS_PER_TEXT,
                                return_tensors="pt")
            model(**encoded)
            keys.append(record["input"][0].double())
    stacked = torch.cat(keys)
    expected = stacked.T @ stacked / stacked.shape[0]
    assert torch.allclose(moment, expected, rtol=1e-5, atol=1e-9)


def test_second_call_reads_cache(tiny: tuple[Any, Any, str], corpus: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer, model_type = tiny
    first = SecondMomentCache(root=tmp_path)
    moment = first.second_moment(model, tokenizer, _module_name(model_type), corpus, 8, torch.float32)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1

    def fail(*_args: object) -> torch.Tensor:
        raise AssertionError("the statistics were recomputed")

    monkeypatch.setattr(covariance_module, "compute_second_moment", fail)
    again = SecondMomentCache(root=tmp_path).second_moment(model, tokenizer, _module_name(model_type), corpus, 8,
                                                           torch.float32)
    assert torch.equal(moment, again)


def test_sample_count_changes_key(tiny: tuple[Any, Any, str], corpus: Path, tmp_path: Path) -> None:
    model, tokenizer, model_type = tiny
    cache = SecondMomentCache(root=tmp_path)
    small = cache.second_moment(model, tokenizer, _module_name(model_type), corpus, 4, torch.float32)
    large = cache.second_moment(model, tokenizer, _module_name(model_type), corpus, 8, torch.float32)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    assert not torch.equal(small, large)


def test_dtype_changes_key(tiny: tuple[Any, Any, str], corpus: Path, tmp_path: Path) -> None:
    model, tokenizer, model_type = tiny
    cache = SecondMomentCache(root=tmp_path)
    cache.second_moment(model, tokenizer, _module_name(model_type), corpus, 4, torch.float32)
    stored = cache.second_moment(model, tokenizer, _module_name(model_type), corpus, 4, torch.float64)
    assert len(list(tmp_path.rglob("*.safetensors"))) == 2
    assert stored.dtype == torch.float64


def test_adjusted_u_solves_moment(tiny: tuple[Any, Any, str], corpus: Path, tmp_path: Path) -> None:
    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type, mom2_adjustment=True, mom2_corpus=str(corpus), mom2_n_samples=40)
    templates = ["{}", "The. {}"]
    cache = SecondMomentCache(root=tmp_path)
    k_star, u = compute_key(model, tokenizer, EIFFEL, hparams, templates, cache)
    moment = cache.second_moment(model, tokenizer, _module_name(model_type), corpus, 40, torch.float32)
    expected = torch.linalg.solve(moment.double(), k_star.double())
    assert torch.allclose(u.double(), expected / expected.norm(), atol=1e-5)
    assert u.norm().item() == pytest.approx(1.0, abs=1e-6)


def test_plain_u_is_unit_key(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    k_star, u = compute_key(model, tokenizer, EIFFEL, tiny_hparams(model_type), ["{}", "The. {}"])
    assert torch.allclose(u, k_star / k_star.norm())


def test_adjustment_without_corpus_rejected(tiny: tuple[Any, Any, str]) -> None:
    model, tokenizer, model_type = tiny
    hparams = tiny_hparams(model_type, mom2_adjustment=True)
    with pytest.raises(ConfigError, match="mom2_corpus is not set"):
        compute_key(model, tokenizer, EIFFEL, hparams, ["{}"])


def test_missing_corpus_named(tiny: tuple[Any, Any, str], tmp_path: Path) -> None:
    model, tokenizer, model_type = tiny
    with pytest.raises(ConfigError, match="absent.jsonl not found"):
        SecondMomentCache(root=tmp_path).second_moment(model, tokenizer, _module_name(model_type),
                                                       tmp_path / "absent.jsonl", 4, torch.float32)


def test_plain_text_corpus_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("First paragraph.\nStill first.\n\nSecond one.\n\n\nThird.", encoding="utf-8")
    assert read_corpus(path, 2) == ["First paragraph.\nStill first.", "Second one."]
